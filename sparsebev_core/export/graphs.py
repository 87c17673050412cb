"""The two exported graphs as plain ``nn.Module`` wrappers of the seam calls.

* :class:`EncoderGraph`: uint8 RGB ``[N, 3, H, W]`` -> the FPN levels ``[N, C, h_l, w_l]``
  float32 (normalisation and padding inside: ``SparseBEV.extract_features``);
* :class:`HeadGraph`: the cache buffers per level ``[S, N, C, h_l, w_l]``, int64 ``slots [T]``,
  ``lidar2img [1, T*N, 4, 4]`` float32, ``time_diff [1, T]`` float32 -> the last layer's
  logits and boxes and every layer's (``runtime.gather_slots`` + ``forward_time_diff``, the
  same two calls as ``EagerRuntime``).
"""
from __future__ import annotations

import torch
from torch import nn

from ..model.detector import SparseBEV
from ..streaming.runtime import gather_slots

Tensor = torch.Tensor

HEAD_OUTPUTS = ('cls_scores', 'bbox_preds', 'all_cls_scores', 'all_bbox_preds')


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
