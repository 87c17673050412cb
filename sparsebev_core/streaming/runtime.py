"""The runtime seam: the two calls a streaming detector needs from a network implementation.

``StreamingDetector`` owns everything around the network (history choice, geometry, time
differences, resets, the feature cache, decoding); a runtime only runs the network:

* ``encode(images)``: uint8 RGB ``[N, 3, H, W]`` at the network input size (on
  ``runtime.device``) -> per level ``[N, C, h_l, w_l]`` float32, or the runtime's reduced
  precision dtype (fp16 / bf16: the cache then holds that dtype; normalisation inside);
* ``run_head(cache_levels, slots, lidar2img, time_diff)``: the cache buffers per level
  ``[S, N, C, h_l, w_l]``, int64 ``slots [T]`` (the cache slot of each of the T frames,
  frame 0 = current), ``lidar2img [1, T*N, 4, 4]`` float32 and ``time_diff [1, T]`` float32
  (``decoder.compute_time_diff`` of the float64 stamps, computed by the caller), and
  optionally ``valid_views [1, T*N]`` bool (False: a missing camera that no sampling point may
  read; None: every view valid, the official path) ->
  ``all_cls_scores [L, 1, Q, K]`` logits and ``all_bbox_preds [L, 1, Q, 10]`` (head layout),
  torch tensors.

A recurrent model (SparseBEV++, the ``*_memory`` presets) reads no cache: its head call takes
the current frame's features and the recurrent state, and returns the next state, every
shape fixed (``RecurrentState`` in its fixed form):

* ``run_recurrent_head(features, lidar2img, state, motion, propagate, valid_views=None)``:
  per level ``[N, C, h_l, w_l]`` (``encode``'s output), ``lidar2img [1, N, 4, 4]``, the state
  (``propagated_feat [1, K, C]``, ``propagated_bbox [1, K, 10]``, ``memory_feat [1, R, C]``,
  ``memory_bbox [1, R, 10]``, ``memory_rows [1]`` int64 with R = ``memory_len``), the ego motion
  since its frame (``elapsed [1]`` float64 s, ``prev_to_current [1, 4, 4]`` float32), the time
  gate ``propagate [1]`` bool (``recurrent_state.propagation_gate``, computed by the caller) ->
  (outputs: ``all_cls_scores [L, 1, Q+K, classes]``, ``all_bbox_preds [L, 1, Q+K, 10]``,
  ``propagated_index [1, K]`` int64, ``propagation_used [1]`` bool; the next state, same
  shapes, float32).

:class:`EagerRuntime` is the torch eager implementation (the reference); compiled torch,
ONNX Runtime or TensorRT implement the same calls plus the ``device`` and
``legacy_yaw_convention`` attributes. docs/architecture.md ("Runtime seam", "The recurrent
head call") has the contract.
"""
from __future__ import annotations

from contextlib import nullcontext
from typing import Protocol, Sequence, runtime_checkable

import torch

from ..model.detector import SparseBEV
from ..model.recurrent_state import EgoMotion, RecurrentState
from .options import PRECISIONS, Precision

Tensor = torch.Tensor
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


class RecurrentHead(Protocol):
    """The head of a recurrent (SparseBEV++) model over one frame, its state in and out."""

    def run_recurrent_head(self, features: Sequence[Tensor], lidar2img: Tensor,
                           state: RecurrentState, motion: EgoMotion, propagate: Tensor,
                           valid_views: Tensor | None = None
                           ) -> tuple[dict[str, Tensor], RecurrentState]:
        """Per level ``[N, C, h_l, w_l]``, lidar2img ``[1, N, 4, 4]``, the fixed-form state,
        the motion since its frame, propagate ``[1]`` bool, valid_views ``[1, N]`` bool or None
        -> (``all_cls_scores [L, 1, Q+K, classes]``, ``all_bbox_preds [L, 1, Q+K, 10]``,
        ``propagated_index [1, K]``, ``propagation_used [1]``; the next fixed-form state)."""
        ...


@runtime_checkable
class RecurrentRuntime(ImageEncoder, RecurrentHead, Protocol):
    """What ``StreamingDetector`` runs for a recurrent model: ``encode``, ``run_recurrent_head``,
    where they run, and the box convention of the weights."""
    device: torch.device
    legacy_yaw_convention: bool


def gather_slots(cache_levels: Sequence[Tensor], slots: Tensor) -> list[Tensor]:
    """The T frames of ``slots`` from each buffer ``[S, N, C, h, w]`` -> ``[1, T*N, C, h, w]``
    frame-major (index = frame*N + camera), as the head reads them."""
    return [level.index_select(0, slots).flatten(0, 1)[None] for level in cache_levels]


def precision_dtype(precision: Precision) -> torch.dtype:
    """The compute dtype of a precision name ('fp32' -> float32, 'fp16', 'bf16')."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be 'fp32', 'fp16' or 'bf16', got {precision!r}")
    return _AUTOCAST_DTYPES.get(precision, torch.float32)


def autocast_for(precision: Precision, device: torch.device):
    """The autocast context of ``precision`` on ``device`` (no context for 'fp32').

    Under autocast the matrix products (convolutions, linear layers, ``matmul``) run in the
    low dtype; elementwise arithmetic follows its inputs, so everything computed from float32
    tensors (box centres, projection, time differences) stays float32, and ``grid_sample``
    is on autocast's float32 list (the torch sampling backend samples in float32).
    """
    dtype = precision_dtype(precision)
    if dtype == torch.float32:
        return nullcontext()
    return torch.autocast(torch.device(device).type, dtype=dtype)


class EagerRuntime:
    """``SparseBEV`` in torch eager mode behind the runtime seam.

    Args:
        model: the detector (``model.detector.build_model``); moved to ``device``, eval mode.
        device: where it runs.
        precision: 'fp32' (official, bit-exact), or 'fp16' / 'bf16' for the whole network:
            backbone, FPN and head run under autocast, the cache holds the features in that
            dtype (half the memory), while the query boxes, point projection, time
            differences, box refinement and decoding stay float32 (``autocast_for``); the
            outputs are float32. Deviation from fp32 on the parity fixture:
            ``test/test_precision.py``.
        compile_head: run the head (slot gather + decoder) through ``torch.compile`` at its
            fixed shapes: on CUDA with ``mode='reduce-overhead'`` (CUDA graphs), elsewhere
            plain inductor. The first steps compile (seconds to a minute); outputs agree
            with eager within 1e-5 (``test/test_fast_path.py``).
        compile_backend: the ``torch.compile`` backend ('inductor'; 'aot_eager' where no C++
            compiler is available).
        channels_last_backbone: backbone and FPN weights in channels-last memory with cuDNN's
            autotuner on (None: on CUDA devices only; the values do not change on the CPU).
    """

    def __init__(self, model: SparseBEV, device: str | torch.device = 'cpu',
                 precision: Precision = 'fp32', *, compile_head: bool = False,
                 compile_backend: str = 'inductor',
                 channels_last_backbone: bool | None = None) -> None:
        self.feature_dtype = precision_dtype(precision)        # refuses unknown names
        if model.pts_bbox_head is None:
            raise ValueError('the model was built without a head (build_model(..., with_head=False))')
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.precision = precision
        if channels_last_backbone is None:
            channels_last_backbone = self.device.type == 'cuda'
        if channels_last_backbone:
            self.model.img_backbone.to(memory_format=torch.channels_last)
            if self.model.img_neck is not None:
                self.model.img_neck.to(memory_format=torch.channels_last)
            if self.device.type == 'cuda':
                torch.backends.cudnn.benchmark = True          # fixed input size: autotune once
        self.compile_head = bool(compile_head)
        self._head = self._gather_and_decode
        if self.compile_head:
            mode = 'reduce-overhead' if self.device.type == 'cuda' else None
            self._head = torch.compile(self._gather_and_decode, backend=compile_backend,
                                       mode=mode, dynamic=False, fullgraph=False)

    @property
    def legacy_yaw_convention(self) -> bool:
        return self.model.pts_bbox_head.legacy_yaw_convention

    @torch.inference_mode()
    def encode(self, images: Tensor) -> list[Tensor]:
        """uint8 RGB ``[N, 3, H, W]`` -> per level ``[N, C, h_l, w_l]`` in ``feature_dtype``."""
        with autocast_for(self.precision, self.device):
            features = self.model.extract_features(images[None])      # per level [1, N, C, h, w]
        return [f[0].to(self.feature_dtype) for f in features]         # per level [N, C, h, w]

    @torch.inference_mode()
    def run_head(self, cache_levels: Sequence[Tensor], slots: Tensor, lidar2img: Tensor,
                 time_diff: Tensor, valid_views: Tensor | None = None) -> dict[str, Tensor]:
        """Gather the T slots (``gather_slots``) and run ``SparseBEVHead.forward_time_diff``
        (``valid_views [1, T*N]`` bool: no sampling point reads a False view; None: all valid)."""
        if self.compile_head and self.device.type == 'cuda':
            for level in cache_levels:           # CUDA graphs read the cache where it lies
                torch._dynamo.mark_static_address(level)       # (instead of copying it in)
        outputs = self._head(list(cache_levels), slots, lidar2img, time_diff, valid_views)
        if self.compile_head:                                  # CUDA graphs reuse output memory
            outputs = {k: v.clone() for k, v in outputs.items()}
        return outputs

    def _gather_and_decode(self, cache_levels: list[Tensor], slots: Tensor, lidar2img: Tensor,
                           time_diff: Tensor, valid_views: Tensor | None = None
                           ) -> dict[str, Tensor]:
        """The head's work of one step (what ``compile_head`` compiles)."""
        features = gather_slots(cache_levels, slots)                   # per level [1, T*N, C, h, w]
        with autocast_for(self.precision, self.device):
            outputs = self.model.pts_bbox_head.forward_time_diff(
                features, lidar2img, time_diff, image_hw=SparseBEV.input_hw(features),
                valid_views=valid_views)
        return {k: v.float() for k, v in outputs.items()}              # decoding in float32

    @torch.inference_mode()
    def run_recurrent_head(self, features: Sequence[Tensor], lidar2img: Tensor,
                           state: RecurrentState, motion: EgoMotion, propagate: Tensor,
                           valid_views: Tensor | None = None
                           ) -> tuple[dict[str, Tensor], RecurrentState]:
        """``SparseBEV.forward_recurrent`` on the current frame (the seam's fixed-form state in
        and out; the outputs and the next state in float32 whatever the precision)."""
        if not self.model.is_recurrent:
            raise TypeError(f'run_recurrent_head needs a recurrent model; {self.model.cfg.name!r} '
                            'reads a feature cache: run_head')
        with autocast_for(self.precision, self.device):
            outputs, state = self.model.forward_recurrent(
                [level[None] for level in features], lidar2img, state, motion,
                valid_views=valid_views, propagate=propagate)
        outputs = {k: (v.float() if v.is_floating_point() else v) for k, v in outputs.items()
                   if v is not None}
        state = RecurrentState(*(t.float() for t in state.tensors()), memory_rows=state.memory_rows)
        return outputs, state
