"""Streaming SparseBEV: one ``Frame`` in, ``Detections`` out, with a cache of past features.

The official single-GPU evaluation (docs/official_model.md 2.1, "online mode") runs the backbone
only on the current six images and takes the FPN features of the previous keyframes from a
cache. ``StreamingDetector`` does the same for a live stream:

* the frame is checked first (``checks.check_frame``: poses, intrinsics, stamps, names);
* the current frame's N images (any N >= 1 cameras, named by the rig, each with its own
  size) are decoded (if encoded), resized and cropped with the official test-time transform
  for their own size (``camera_inputs.CameraInputs``: ``image.resize_crop``, one ``ida`` per
  camera), and go through backbone + FPN (``runtime.encode``);
* a missing camera (``CameraView.missing``) is never replaced by a black or a stale image:
  its feature slot holds zeros, its ``lidar2img`` the nominal (or any finite) matrix, and it is
  marked invalid in ``valid_views`` so that no sampling point reads it; each cached frame keeps
  its own set of valid cameras; ``Detections.missing_cameras`` reports a degraded frame;
* the features of every stepped frame are written once into a slot of the preallocated
  cache buffers (``feature_cache.FeatureSlots``, keyed by ``Frame.key``), with the geometry
  of its cameras (intrinsics, extrinsics, ego pose at each camera's stamp, ``ida``);
* the T-1 history slots are filled by ``history.select_history`` (about ``history_spacing``
  seconds apart, the spacing the model was trained and tested with);
* every ``lidar2img`` is recomputed each step from the stored poses, with the *current*
  frame's ego pose as the reference (``geometry.compose_lidar2img``): features are reusable
  across steps, projection matrices are not;
* missing history is filled by duplicating the oldest available frame, as the official loader
  does (at a scene start the current frame fills every slot, Δt = 0);
* the head reads the T chosen frames from the cache by slot (``runtime.run_head``), with the
  time differences computed here in float64; the top-k decoding is ``coder.decode_predictions``;
* the memory is cleared by the time rules of ``sparsebev_core.resets`` (time going backwards,
  a gap over ``max_time_gap``) and on ``reset(reason)``; ``last_step`` and the returned
  ``Detections`` carry the reason key.

A recurrent SparseBEV++ model (``cfg.head.memory``, the ``*_memory`` presets) keeps no feature
cache: each step encodes the current frame and runs ``runtime.run_recurrent_head`` on it with the
stream's recurrent state (``recurrent_memory.RecurrentMemory``: the state, the previous stamp
and pose, the ego motion and time gate, what a reset does: ``options.recurrent_reset``); checks,
camera inputs, missing cameras, decoding and the reset rules are the ones above. Its detections
carry track IDs (``Detections.track_ids``): a propagated query keeps its identity
(``track_ids.TrackIdBank``, reset with the state by the same rule).

The network runs behind the runtime seam (``streaming.runtime``): a ``SparseBEV`` is wrapped in
``EagerRuntime``; any other object with the same two calls plugs in unchanged. The head always
runs in float32 by default (as in the official code); ``precision='fp16'|'bf16'`` runs the whole
network in that dtype with the geometry, time differences, box refinement and decoding in
float32 (``runtime.EagerRuntime``), which changes the numbers slightly (docs/streaming.md).
"""
from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch
from torch import nn

from ..frame import Detections, Frame
from ..geometry import compose_lidar2img
from ..model.coder import decode_predictions
from ..model.decoder import compute_time_diff
from ..recipe.config import ModelConfig
from ..recipe.frame_layout import check_streamable
from ..resets import EXPLICIT, RIG_CHANGED, Reset, ResetPolicy
from .camera_inputs import CameraGeometry, CameraInputs
from .checks import check_frame
from .feature_cache import FeatureSlots
from .history import select_history
from .options import Precision, StreamingOptions, StreamingOptionsError
from .recurrent_memory import RecurrentMemory
from .runtime import EagerRuntime, RecurrentRuntime, Runtime
from .track_ids import TrackIdBank


@dataclass
class CachedFrame:
    """One past frame: the cache slot of its FPN features and the geometry of its cameras."""
    key: str
    stamp: float
    slot: int                             # index into the FeatureSlots buffers
    cameras: tuple[CameraGeometry, ...]   # N, the frame's camera order

    @property
    def valid(self) -> tuple[bool, ...]:
        """This frame's own set of valid cameras."""
        return tuple(c.valid for c in self.cameras)


@dataclass
class StepRecord:
    """What the last ``step`` fed to the head (for tests, visualisation and debugging).

    Attributes:
        keys: the T frame keys used, frame 0 = current, then the history slots.
        lidar2img: (T*N, 4, 4) float32, frame-major.
        timestamps: (T*N,) float64 seconds, frame-major.
        outputs: the head's output dict (``all_cls_scores`` [L, 1, Q, C], ...).
        reset_reason: why the memory was cleared before this step: a key of
            ``sparsebev_core.resets`` ('' if it was not).
        reset_detail: the human-readable detail of that reset.
        slots: the cache slot of each of the T frames (what ``run_head`` was given).
        valid_views: (T*N,) bool, frame-major: False for a camera missing in that frame (what
            ``run_head`` was given; None there when all are True).
    """
    keys: list[str]
    lidar2img: np.ndarray
    timestamps: np.ndarray
    outputs: dict
    reset_reason: str = ''
    reset_detail: str = ''
    slots: list[int] = field(default_factory=list)
    valid_views: np.ndarray | None = None


class StreamingDetector:
    """SparseBEV over a stream of ``Frame``s with a feature cache (SparseBEV++: a recurrent state).

    Args:
        model_or_runtime: a ``SparseBEV`` (``model.detector.build_model``; wrapped in
            ``runtime.EagerRuntime(model, device, options.precision)``), or any
            ``runtime.Runtime`` (``encode``, ``run_head``, ``device``, ``legacy_yaw_convention``;
            for a recurrent model a ``runtime.RecurrentRuntime``: ``run_recurrent_head``).
        cfg: its ``ModelConfig`` (input size, number of past frames, class names, decoding);
            a config that needs future frames is refused (``frame_layout.check_streamable``).
        device: where the model runs ('cpu', 'cuda', 'cuda:1', ...; None: 'cpu' for a model,
            the runtime's own device for a runtime).
        options: how to stream (``options.StreamingOptions``; default: the official way).

    Raises:
        FrameLayoutError: ``cfg`` needs future frames (an ``InputError``).
        StreamingOptionsError: the options do not fit the model or the runtime (an
            ``InputError``).
    """

    def __init__(self, model_or_runtime: nn.Module | Runtime, cfg: ModelConfig,
                 device: str | torch.device | None = None,
                 options: StreamingOptions | None = None) -> None:
        options = StreamingOptions() if options is None else options
        check_streamable(cfg)
        self.recurrent = cfg.head.memory is not None     # SparseBEV++: a state, no feature cache
        if self.recurrent and options.compile_head:
            raise StreamingOptionsError(f'compile_head compiles the feature-cache head; preset '
                                        f'{cfg.name!r} is recurrent (SparseBEV++): leave it off')
        if options.max_cached_frames < cfg.num_past_frames:
            raise StreamingOptionsError(
                f'max_cached_frames={options.max_cached_frames} cannot hold the '
                f'{cfg.num_past_frames} past frames of preset {cfg.name!r}')
        self.options = options
        self.runtime = _as_runtime(model_or_runtime, device, options.precision,
                                   options.compile_head, self.recurrent)
        self.cfg = cfg
        self.device = torch.device(self.runtime.device)
        self.history_spacing = float(options.history_spacing)
        self.reset_policy = ResetPolicy(options.max_time_gap)   # the time rules (sparsebev_core.resets)
        self.score_threshold = options.score_threshold     # the ROS layer may change it running
        self.max_detections = options.max_detections
        self.resize_method = options.resize_method
        self.max_cached_frames = int(options.max_cached_frames)
        self.num_frames = cfg.num_frames                         # T
        self.input_hw = tuple(cfg.input_size)
        self._cache: OrderedDict[str, CachedFrame] = OrderedDict()
        device_preprocess = options.device_preprocess
        if device_preprocess is None:
            device_preprocess = self.device.type == 'cuda' and options.resize_method == 'torch'
        self.device_preprocess = bool(device_preprocess)
        self.camera_inputs = CameraInputs(self.device, self.input_hw, options.resize_method,
                                          self.device_preprocess, int(options.preprocess_workers))
        cache_channels_last = options.cache_channels_last
        if cache_channels_last is None:
            cache_channels_last = self.device.type == 'cuda'
        # v1 reads past frames from a feature cache; SparseBEV++ carries a recurrent state instead
        self.feature_slots = None if self.recurrent else FeatureSlots(
            self.max_cached_frames + 1, initial_slots=self.num_frames + 1,
            channels_last=cache_channels_last)
        self.recurrent_memory = RecurrentMemory(cfg.head, self.device, options.recurrent_reset) \
            if self.recurrent else None
        # SparseBEV++: a propagated query keeps its identity (reset with the memory, same rule)
        self.track_id_bank = TrackIdBank(options.recurrent_reset) if self.recurrent else None
        self.last_step: StepRecord | None = None
        self._camera_names: tuple[str, ...] | None = None    # the rig of the cached frames

    # ------------------------------------------------------------------ public API
    def reset(self, reason: str = EXPLICIT, detail: str = '') -> None:
        """Forget all past frames; the next step starts like the first frame of a scene and
        reports ``reason`` (a key of ``sparsebev_core.resets``) as its ``reset_reason``."""
        self._forget()
        self.reset_policy.request(reason, detail)

    @property
    def max_time_gap(self) -> float:
        """A longer gap (s) between two steps clears the memory."""
        return self.reset_policy.max_time_gap

    @property
    def cached_keys(self) -> list[str]:
        """Keys of the cached frames, oldest insertion first (none for a recurrent model)."""
        return list(self._cache)

    @property
    def recurrent_state(self):
        """The ``RecurrentState`` after the last step (fixed form; None for a v1 model)."""
        return None if self.recurrent_memory is None else self.recurrent_memory.state

    def held_bytes(self) -> int:
        """Bytes of temporal memory this stream holds between steps: the feature cache's
        buffers (v1: every allocated slot) or the recurrent state (SparseBEV++)."""
        if self.recurrent_memory is not None:
            return self.recurrent_memory.nbytes
        return self.feature_slots.nbytes

    @torch.inference_mode()
    def step(self, frame: Frame) -> Detections:
        """Detect objects in ``frame`` using the cached history; returns model-frame boxes."""
        t_start = time.perf_counter()
        reference = check_frame(frame)
        reset = self.reset_policy.due(frame.stamp) or self._rig_reset(frame)
        if self.recurrent:
            return self._step_recurrent(frame, reference, reset, t_start)
        entry = None if reset else self._cache.get(frame.key)
        timings: dict[str, float] = {}
        if entry is not None and entry.stamp == frame.stamp:   # seen before: reuse features
            timings['preprocess'] = timings['backbone'] = 0.0
            images = None
        else:
            images, cameras = self.camera_inputs.prepare(frame)    # [n_valid, 3, H, W] uint8
        # the frame is usable: only now touch the memory
        if reset:
            self._forget()
        self.reset_policy.advance(frame.stamp)
        if images is not None:
            t_pre = self._now()
            timings['preprocess'] = (t_pre - t_start) * 1e3
            features = self._encode(images, cameras)               # per level [N, C, h, w]
            entry = CachedFrame(frame.key, float(frame.stamp), self.feature_slots.store(features),
                                cameras)                           # written once, here
            timings['backbone'] = (self._now() - t_pre) * 1e3
        try:
            detections, used, record = self._head_and_decode(frame, entry, reference, timings)
        except BaseException:
            if self._cache.get(entry.key) is not entry:            # not cached: free its slot
                self.feature_slots.release(entry.slot)
            raise
        self._remember(entry, used)
        return self._finish(frame, detections, record, reset, timings, t_start)

    def _step_recurrent(self, frame: Frame, reference: tuple[np.ndarray, np.ndarray],
                        reset: Reset | None, t_start: float) -> Detections:
        """One step of a recurrent model: the current frame's features and the recurrent state
        through ``runtime.run_recurrent_head``; no feature cache."""
        timings: dict[str, float] = {}
        images, cameras = self.camera_inputs.prepare(frame)        # [n_valid, 3, H, W] uint8
        # the frame is usable: only now touch the memory
        if reset:
            self._forget()
        self.reset_policy.advance(frame.stamp)
        t_pre = self._now()
        timings['preprocess'] = (t_pre - t_start) * 1e3
        features = self._encode(images, cameras)                   # per level [N, C, h, w]
        t_head = self._now()
        timings['backbone'] = (t_head - t_pre) * 1e3

        lidar2img, timestamps = self._projections([cameras], *reference)   # [N, 4, 4], [N]
        valid = np.array([c.valid for c in cameras], dtype=bool)           # [N]
        pose = reference[0] @ reference[1]                         # model frame -> world, float64
        memory = self.recurrent_memory
        motion, propagate = memory.motion_to(frame.stamp, pose)
        outputs, state = self.runtime.run_recurrent_head(
            features, torch.from_numpy(lidar2img).to(self.device)[None],   # [1, N, 4, 4] float32
            memory.state, motion, propagate,
            None if valid.all() else torch.from_numpy(valid).to(self.device)[None])   # [1, N] bool
        memory.advance(state, frame.stamp, pose)
        timings['head'] = (self._now() - t_head) * 1e3
        detections, query_index = self._decode(outputs, frame, timings)
        detections.track_ids = self.track_id_bank.assign(
            query_index.cpu().numpy(), self.cfg.head.num_queries,
            outputs['propagated_index'][0].cpu().numpy(),           # [K]
            bool(outputs['propagation_used'][0]))
        record = StepRecord([frame.key], lidar2img, timestamps, outputs, valid_views=valid)
        return self._finish(frame, detections, record, reset, timings, t_start)

    def _finish(self, frame: Frame, detections: Detections, record: 'StepRecord',
                reset: Reset | None, timings: dict[str, float], t_start: float) -> Detections:
        """Remember the rig and the step record, report the reset, time the step."""
        self._camera_names = frame.camera_names
        self.last_step = record
        if reset:
            record.reset_reason, record.reset_detail = reset.key, reset.detail
            detections.reset_reason, detections.reset_detail = reset.key, reset.detail
        timings['total'] = (time.perf_counter() - t_start) * 1e3
        return detections

    # ------------------------------------------------------------------ stages
    def _head_and_decode(self, frame: Frame, entry: CachedFrame,
                         reference: tuple[np.ndarray, np.ndarray], timings: dict[str, float]
                         ) -> tuple[Detections, list[CachedFrame], StepRecord]:
        """History choice, geometry, ``run_head`` on the chosen slots, top-k decoding."""
        t_head = self._now()
        past = [e for e in self._cache.values() if e.key != frame.key and e.stamp < frame.stamp]
        chosen = select_history([e.stamp for e in past], frame.stamp, self.num_frames - 1,
                                self.history_spacing)
        used = [entry] + [entry if i is None else past[i] for i in chosen]
        lidar2img, timestamps = self._projections([e.cameras for e in used], *reference)
        slots = [e.slot for e in used]
        valid = np.array([v for e in used for v in e.valid], dtype=bool)   # [T*N]
        extra = {} if valid.all() else {                              # None: the official path
            'valid_views': torch.from_numpy(valid).to(self.device)[None]}  # [1, T*N] bool
        outputs = self.runtime.run_head(
            self.feature_slots.levels,                                    # per level [S, N, C, h, w]
            torch.tensor(slots, dtype=torch.int64, device=self.device),   # [T]
            torch.from_numpy(lidar2img).to(self.device)[None],            # [1, T*N, 4, 4] float32
            compute_time_diff(timestamps[None], len(entry.cameras)).to(self.device),  # [1, T]
            **extra)
        timings['head'] = (self._now() - t_head) * 1e3
        detections, _ = self._decode(outputs, frame, timings)
        record = StepRecord([e.key for e in used], lidar2img, timestamps, outputs, slots=slots,
                            valid_views=valid)
        return detections, used, record

    def _decode(self, outputs: dict, frame: Frame, timings: dict[str, float]
                ) -> tuple[Detections, torch.Tensor]:
        """Top-k decoding of the last layer (``coder.decode_predictions``) -> ``Detections`` and
        the query row of each detection ``[D]``."""
        t_post = time.perf_counter()
        decoded = decode_predictions(outputs['all_cls_scores'], outputs['all_bbox_preds'],
                                     self.cfg.head, self.runtime.legacy_yaw_convention,
                                     self.score_threshold, self.max_detections)[0]
        detections = Detections.from_decoded(decoded, frame.stamp, self.cfg.class_names, timings)
        detections.missing_cameras = frame.missing_cameras
        timings['postprocess'] = (time.perf_counter() - t_post) * 1e3
        return detections, decoded['query_index']

    def _has_history(self) -> bool:
        """Something of past frames is held (cached features or a recurrent state)."""
        return self.recurrent_memory.has_history if self.recurrent else bool(self._cache)

    def _rig_reset(self, frame: Frame) -> Reset | None:
        """A reset when the frame's cameras are not the previous frames' (another rig)."""
        names = frame.camera_names
        if self._camera_names is None or not self._has_history() or names == self._camera_names:
            return None
        return Reset(RIG_CHANGED, f'the cameras changed from {", ".join(self._camera_names)} '
                                  f'to {", ".join(names)}')

    def _encode(self, images: torch.Tensor, cameras: Sequence[CameraGeometry]) -> list[torch.Tensor]:
        """Features of the present cameras, per level ``[N, C, h, w]`` with zeros in the slots
        of missing cameras (never read: ``valid_views``)."""
        features = self.runtime.encode(images)                   # per level [n_valid, C, h, w]
        valid = [c.valid for c in cameras]
        if all(valid):
            return features
        index = torch.tensor([i for i, v in enumerate(valid) if v], device=features[0].device)
        out = []
        for level in features:
            full = level.new_zeros((len(valid), *level.shape[1:]))
            out.append(full.index_copy_(0, index, level))
        return out

    def _projections(self, frames: Sequence[Sequence[CameraGeometry]], T_world_ego_ref: np.ndarray,
                     T_ego_model: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """lidar2img [T*N, 4, 4] float32 and stamps [T*N] float64 of the cameras of T frames
        w.r.t. the current pose."""
        lidar2img = np.stack([
            compose_lidar2img(cam.K, cam.T_ego_cam, cam.T_world_ego, T_world_ego_ref,
                              T_ego_model, cam.ida)
            for cameras in frames for cam in cameras]).astype(np.float32)
        timestamps = np.array([cam.stamp for cameras in frames for cam in cameras],
                              dtype=np.float64)
        return lidar2img, timestamps

    def _remember(self, entry: CachedFrame, used: Sequence[CachedFrame]) -> None:
        """Cache the current frame; evict frames older than the oldest one just used."""
        replaced = self._cache.get(entry.key)
        if replaced is not None and replaced.slot != entry.slot:   # same key, new stamp
            self.feature_slots.release(replaced.slot)
        self._cache[entry.key] = entry
        self._cache.move_to_end(entry.key)
        oldest_used = min(e.stamp for e in used)
        for key in [k for k, e in self._cache.items() if e.stamp < oldest_used]:
            self.feature_slots.release(self._cache.pop(key).slot)
        while len(self._cache) > self.max_cached_frames:
            self.feature_slots.release(self._cache.popitem(last=False)[1].slot)

    def _forget(self) -> None:
        """Drop every cached frame (the slot buffers stay allocated for the next frames); a
        recurrent model's state follows ``options.recurrent_reset``."""
        if self.recurrent:
            self.recurrent_memory.reset()
            self.track_id_bank.reset()
            return
        self._cache.clear()
        self.feature_slots.clear()

    # ------------------------------------------------------------------ helpers
    def _now(self) -> float:
        """Wall clock after the device has finished the queued work (honest stage timings)."""
        if self.device.type == 'cuda':
            torch.cuda.synchronize(self.device)
        return time.perf_counter()


def _as_runtime(model_or_runtime: nn.Module | Runtime, device: str | torch.device | None,
                precision: Precision, compile_head: bool = False, recurrent: bool = False
                ) -> Runtime | RecurrentRuntime:
    """A model wrapped in ``EagerRuntime``; a runtime as it is (its device and precision)."""
    if isinstance(model_or_runtime, nn.Module):
        return EagerRuntime(model_or_runtime, 'cpu' if device is None else device, precision,
                            compile_head=compile_head)
    if recurrent and not isinstance(model_or_runtime, RecurrentRuntime):
        raise StreamingOptionsError(
            f'{type(model_or_runtime).__name__} has no recurrent head call (run_recurrent_head): '
            'it cannot run a SparseBEV++ (*_memory) model')
    if not recurrent and not isinstance(model_or_runtime, Runtime):
        raise TypeError(f'{type(model_or_runtime).__name__} is neither a SparseBEV model nor a '
                        'runtime (encode, run_head, device, legacy_yaw_convention)')
    if precision != 'fp32' or compile_head:
        raise StreamingOptionsError(f'precision={precision!r} / compile_head={compile_head} apply '
                                    'to a model; a runtime runs at its own precision and compilation')
    if device is not None and torch.device(device) != torch.device(model_or_runtime.device):
        raise StreamingOptionsError(f'device={device!r} but the runtime runs on '
                                    f'{model_or_runtime.device}')
    return model_or_runtime
