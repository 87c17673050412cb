"""The exported graphs as plain ``nn.Module`` wrappers of the seam calls.

* :class:`EncoderGraph`: uint8 RGB ``[N, 3, H, W]`` -> the FPN levels ``[N, C, h_l, w_l]``
  float32 (normalisation and padding inside: ``SparseBEV.extract_features``);
* :class:`HeadGraph`: the cache buffers per level ``[S, N, C, h_l, w_l]``, int64 ``slots [T]``,
  ``lidar2img [1, T*N, 4, 4]`` float32, ``time_diff [1, T]`` float32 -> the last layer's
  logits and boxes and every layer's (``runtime.gather_slots`` + ``forward_time_diff``, the
  same two calls as ``EagerRuntime``);
* :class:`RecurrentHeadGraph` (SparseBEV++): the current frame's levels, ``lidar2img``, the
  fixed-form recurrent state, the ego motion and the time gate -> the outputs and the next
  state (``RecurrentSparseBEVHead.forward``, what ``SparseBEV.forward_recurrent`` and
  ``EagerRuntime.run_recurrent_head`` call).
"""
from __future__ import annotations

import torch
from torch import nn

from ..model.detector import SparseBEV
from ..model.recurrent_state import EgoMotion, RecurrentState
from ..streaming.onnx_manifest import HEAD_OUTPUTS, RECURRENT_OUTPUTS
from ..streaming.runtime import gather_slots

Tensor = torch.Tensor

__all__ = ['EncoderGraph', 'HeadGraph', 'RecurrentHeadGraph', 'HEAD_OUTPUTS', 'RECURRENT_OUTPUTS']


class EncoderGraph(nn.Module):
    """Backbone + FPN of one frame's cameras; ``half=True`` runs them in float16 (the image
    normalisation stays float32, the levels come out float32)."""

    def __init__(self, model: SparseBEV, half: bool = False) -> None:
        super().__init__()
        self.model = model
        self.half = half
        if half:
            model.img_backbone.half()
            if model.img_neck is not None:
                model.img_neck.half()

    def forward(self, images: Tensor) -> tuple[Tensor, ...]:
        if not self.half:
            return tuple(f[0] for f in self.model.extract_features(images[None]))
        x = self.model.normalize_images(images).half()                   # [N, 3, H', W']
        feats = self.model.img_backbone(x)
        if isinstance(feats, dict):
            feats = list(feats.values())
        if self.model.img_neck is not None:
            feats = self.model.img_neck(feats)
        return tuple(f.float() for f in feats)


class HeadGraph(nn.Module):
    """The head over the T cache slots named by ``slots``; the slot gather is inside the graph,
    so a runtime hands over the cache buffers as they are (no copy per step). ``valid_views``
    bool ``[1, T*N]`` marks the cameras present in each frame (all True for a complete frame):
    no sampling point reads a False view."""

    def __init__(self, model: SparseBEV) -> None:
        super().__init__()
        self.head = model.pts_bbox_head

    def forward(self, *inputs: Tensor) -> tuple[Tensor, ...]:
        *levels, slots, lidar2img, time_diff, valid_views = inputs
        features = gather_slots(levels, slots)                            # per level [1, T*N, C, h, w]
        out = self.head.forward_time_diff(features, lidar2img, time_diff,
                                          image_hw=SparseBEV.input_hw(features),
                                          valid_views=valid_views)
        cls, bbox = out['all_cls_scores'], out['all_bbox_preds']          # [L, 1, Q, K], [L, 1, Q, 10]
        return cls[-1], bbox[-1], cls, bbox


class RecurrentHeadGraph(nn.Module):
    """One frame of the SparseBEV++ head with its state as inputs and outputs, every shape fixed.

    Inputs in the order of ``onnx_manifest.recurrent_head_feed`` (docs/architecture.md, "The
    recurrent head call"): the levels ``[N, C, h_l, w_l]``, ``lidar2img [1, N, 4, 4]``, the
    five fixed-form state tensors, ``elapsed [1]`` float32, ``prev_to_current [1, 4, 4]``, the
    gate ``propagate [1]`` bool (computed by the caller in float64) and ``valid_views [1, N]``
    bool. Outputs: ``RECURRENT_OUTPUTS``, the next state last. With ``memory_rows = 0`` both
    memory paths are computed and selected inside (``recurrent_decoder.memory_paths``), so one
    graph serves a stream's first frame.
    """

    def __init__(self, model: SparseBEV) -> None:
        super().__init__()
        self.head = model.pts_bbox_head

    def forward(self, *inputs: Tensor) -> tuple[Tensor, ...]:
        *levels, lidar2img = inputs[:-9]
        state = RecurrentState(*inputs[-9:-4])
        elapsed, prev_to_current, propagate, valid_views = inputs[-4:]
        features = [level[None] for level in levels]                       # per level [1, N, C, h, w]
        outputs, state = self.head.forward(             # .forward: no /head scope in node names
            features, lidar2img, SparseBEV.input_hw(features), state,
            EgoMotion(elapsed, prev_to_current), valid_views=valid_views, propagate=propagate)
        cls, bbox = outputs['all_cls_scores'], outputs['all_bbox_preds']    # [L, 1, Q+K, K'|10]
        return (cls[-1], bbox[-1], cls, bbox, outputs['propagated_index'],
                outputs['propagation_used'], *state.tensors(), state.memory_rows)
