"""The runtime seam: the two calls a streaming detector needs from a network implementation.

``StreamingDetector`` owns everything around the network (history choice, geometry, time
differences, resets, the feature cache, decoding); a runtime only runs the network:

* ``encode(images)``: uint8 RGB ``[N, 3, H, W]`` at the network input size (on
  ``runtime.device``) -> per level ``[N, C, h_l, w_l]`` float32 (normalisation inside);
* ``run_head(cache_levels, slots, lidar2img, time_diff)``: the cache buffers per level
  ``[S, N, C, h_l, w_l]``, int64 ``slots [T]`` (the cache slot of each of the T frames,
  frame 0 = current), ``lidar2img [1, T*N, 4, 4]`` float32 and ``time_diff [1, T]`` float32
  (``decoder.compute_time_diff`` of the float64 stamps, computed by the caller), and
  optionally ``valid_views [1, T*N]`` bool (False: a missing camera that no sampling point may
  read; None: every view valid, the official path) ->
  ``all_cls_scores [L, 1, Q, K]`` logits and ``all_bbox_preds [L, 1, Q, 10]`` (head layout),
  torch tensors.

:class:`EagerRuntime` is the torch eager implementation (the reference); compiled torch,
ONNX Runtime or TensorRT implement the same two calls plus the ``device`` and
``legacy_yaw_convention`` attributes. docs/architecture.md ("Runtime seam") has the contract.
"""
from __future__ import annotations

from contextlib import nullcontext
from typing import Literal, Protocol, Sequence, runtime_checkable

import torch

from .detector import SparseBEV

Tensor = torch.Tensor
Precision = Literal['fp32', 'fp16', 'bf16']
PRECISIONS: tuple[str, ...] = ('fp32', 'fp16', 'bf16')
_AUTOCAST_DTYPES = {'fp16': torch.float16, 'bf16': torch.bfloat16}


class ImageEncoder(Protocol):
    """Backbone + FPN of one frame's cameras."""

    def encode(self, images: Tensor) -> list[Tensor]:
        """uint8 RGB ``[N, 3, H, W]`` -> per level ``[N, C, h_l, w_l]`` float32."""
        ...


class TemporalHead(Protocol):
    """The head over T cached frames, read from the cache by slot."""

    def run_head(self, cache_levels: Sequence[Tensor], slots: Tensor, lidar2img: Tensor,
                 time_diff: Tensor, valid_views: Tensor | None = None) -> dict[str, Tensor]:
        """Per level ``[S, N, C, h_l, w_l]``, slots int64 ``[T]``, lidar2img ``[1, T*N, 4, 4]``,
        time_diff ``[1, T]``, valid_views ``[1, T*N]`` bool or None (all valid) ->
        ``all_cls_scores [L, 1, Q, K]``, ``all_bbox_preds [L, 1, Q, 10]``."""
        ...


@runtime_checkable
class Runtime(ImageEncoder, TemporalHead, Protocol):
    """What ``StreamingDetector`` runs: both calls, where they run, and the box convention
    of the weights (``SparseBEVHead.legacy_yaw_convention``) for decoding."""
    device: torch.device
    legacy_yaw_convention: bool


def gather_slots(cache_levels: Sequence[Tensor], slots: Tensor) -> list[Tensor]:
    """The T frames of ``slots`` from each buffer ``[S, N, C, h, w]`` -> ``[1, T*N, C, h, w]``
    frame-major (index = frame*N + camera), as the head reads them."""
    return [level.index_select(0, slots).flatten(0, 1)[None] for level in cache_levels]


class EagerRuntime:
    """``SparseBEV`` in torch eager mode behind the runtime seam.

    Args:
        model: the detector (``model.detector.build_model``); moved to ``device``, eval mode.
        device: where it runs.
        precision: 'fp32' (official), or 'fp16' / 'bf16' autocast of backbone + FPN only
            (features are cast back to float32; the head always runs in float32).
    """

    def __init__(self, model: SparseBEV, device: str | torch.device = 'cpu',
                 precision: Precision = 'fp32') -> None:
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be 'fp32', 'fp16' or 'bf16', got {precision!r}")
        if model.pts_bbox_head is None:
            raise ValueError('the model was built without a head (build_model(..., with_head=False))')
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.precision = precision

    @property
    def legacy_yaw_convention(self) -> bool:
        return self.model.pts_bbox_head.legacy_yaw_convention

    @torch.inference_mode()
    def encode(self, images: Tensor) -> list[Tensor]:
        """uint8 RGB ``[N, 3, H, W]`` -> per level ``[N, C, h_l, w_l]`` float32."""
        with self._autocast():
            features = self.model.extract_features(images[None])      # per level [1, N, C, h, w]
        return [f[0].float() for f in features]                        # per level [N, C, h, w]

    @torch.inference_mode()
    def run_head(self, cache_levels: Sequence[Tensor], slots: Tensor, lidar2img: Tensor,
                 time_diff: Tensor, valid_views: Tensor | None = None) -> dict[str, Tensor]:
        """Gather the T slots (``gather_slots``) and run ``SparseBEVHead.forward_time_diff``
        (``valid_views [1, T*N]`` bool: no sampling point reads a False view; None: all valid)."""
        features = gather_slots(cache_levels, slots)                   # per level [1, T*N, C, h, w]
        return self.model.pts_bbox_head.forward_time_diff(
            features, lidar2img, time_diff, image_hw=SparseBEV.input_hw(features),
            valid_views=valid_views)

    def _autocast(self):
        if self.precision == 'fp32':
            return nullcontext()
        return torch.autocast(self.device.type, dtype=_AUTOCAST_DTYPES[self.precision])
