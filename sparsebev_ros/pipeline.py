"""The processing shared by the node and the replay tool.

``messages -> FrameAssembler -> Frame -> detector.step -> Detections -> output messages``

:class:`Pipeline` owns the assembler, the temporal-memory reset rules (time going backwards
= a bag loop, a gap over ``max_time_gap``, camera stamps spread over ``max_camera_time_diff``,
an image size change, an explicit :meth:`Pipeline.reset`), the output transform into
``output_frame``, per-reason skip counters, latency statistics and throttled warnings. The
detector is anything with ``step(frame) -> Detections`` and ``reset(reason)``
(``sparsebev_core.model.streaming.StreamingDetector``; :func:`build_detector` makes one from
the parameters).
"""
from __future__ import annotations

import time
from collections import Counter, defaultdict, deque
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol, Sequence

import numpy as np

from sparsebev_core.frame import Detections, Frame
from sparsebev_core.geometry import (CAMERA_NAMES, CLASS_NAMES, bottom_to_gravity_center,
                                     gravity_to_bottom_center, transform_boxes)

from . import codecs
from .frames import (CAMERA_TIME_SPREAD, FrameAssembler, Skip, TransformLookup)
from .messages import MessageFactory, detection_array, marker_array
from .params import DetectorParams, ParameterError

# reset reasons (stable keys)
RESET_TIME_BACKWARDS = 'time_backwards'
RESET_TIME_GAP = 'time_gap'
RESET_CAMERA_SPREAD = 'camera_time_spread'
RESET_IMAGE_SIZE = 'image_size_changed'
RESET_EXPLICIT = 'explicit'
DUPLICATE_FRAME = 'duplicate_frame'
STALE_FRAME = 'stale_frame'              # an image set re-delivered after newer ones were processed
STALE_MEMORY = 64                        # anchor stamps remembered for the stale-set rule
INVALID_FRAME = 'invalid_frame'          # the detector refused the frame (e.g. a non-rigid pose)


class Detector(Protocol):
    def step(self, frame: Frame) -> Detections: ...

    def reset(self, reason: str = ...) -> None: ...


class ThrottledLogger:
    """``warn(key, text)`` logs each key at most once per ``period`` seconds (with a count of
    what was suppressed in between)."""

    def __init__(self, log: Callable[[str], None], period: float = 5.0,
                 clock: Callable[[], float] = time.monotonic):
        self.log, self.period, self.clock = log, period, clock
        self._last: dict[str, float] = {}
        self._suppressed: Counter = Counter()

    def __call__(self, key: str, text: str) -> None:
        now = self.clock()
        last = self._last.get(key)
        if last is not None and now - last < self.period:
            self._suppressed[key] += 1
            return
        self._last[key] = now
        n = self._suppressed.pop(key, 0)
        self.log(text + (f' (and {n} more like it)' if n else ''))


@dataclass
class PipelineResult:
    """One published frame."""
    stamp_ns: int                 # anchor camera stamp = header stamp of the outputs
    frame: Frame
    detections: Detections        # model frame, as returned by the detector
    boxes: np.ndarray             # (N, 9) in output_frame, bottom centre, after filtering
    scores: np.ndarray
    labels: np.ndarray
    detections_msg: Any
    markers_msg: Any | None
    timings: dict[str, float]     # ms per stage


@dataclass
class PipelineStats:
    """Counters and latencies (ms) for summaries and diagnostics."""
    synced: int = 0
    published: int = 0
    skipped: Counter = field(default_factory=Counter)
    resets: Counter = field(default_factory=Counter)
    latency_ms: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))

    def percentiles(self, stage: str, qs: Sequence[float] = (50, 90, 99)) -> dict[int, float]:
        values = self.latency_ms.get(stage) or []
        return {int(q): float(np.percentile(values, q)) for q in qs} if values else {}

    def summary(self) -> str:
        """Multi-line human summary."""
        lines = [f'synced frames: {self.synced}', f'published: {self.published}',
                 f'skipped: {sum(self.skipped.values())}'
                 + ''.join(f'\n  {k}: {v}' for k, v in sorted(self.skipped.items())),
                 f'memory resets: {sum(self.resets.values())}'
                 + ''.join(f'\n  {k}: {v}' for k, v in sorted(self.resets.items()))]
        for stage in self.latency_ms:
            p = self.percentiles(stage)
            if p:
                lines.append(f'latency {stage}: p50 {p[50]:.1f} ms, p90 {p[90]:.1f} ms, '
                             f'p99 {p[99]:.1f} ms')
        return '\n'.join(lines)


class Pipeline:
    """Synced image messages in, Detection3DArray + MarkerArray out.

    Args:
        params: validated parameters.
        detector: ``step(frame) -> Detections``, ``reset(reason)``.
        lookup: transform lookup ``(target, source, stamp_ns) -> 4x4`` raising
            ``TransformUnavailable``.
        factory: message factory (rclpy classes or rosbags typestore).
        log: receives warning lines (throttled per reason by ``params.warn_throttle``).
        class_names: label names of the detector.
    """

    def __init__(self, params: DetectorParams, detector: Detector, lookup: TransformLookup,
                 factory: MessageFactory, log: Callable[[str], None] | None = None,
                 class_names: Sequence[str] = CLASS_NAMES,
                 clock: Callable[[], float] = time.monotonic):
        self.params = params
        self.detector = detector
        self.lookup = lookup
        self.factory = factory
        self.class_names = tuple(class_names)
        self.warn = ThrottledLogger(log or (lambda text: None), params.warn_throttle, clock)
        self.assembler = FrameAssembler(params, lookup, self.warn)
        self.stats = PipelineStats()
        self.on_reset: list[Callable[[str], None]] = []
        self._last_stamp_ns: int | None = None
        self._last_shapes: list[tuple[int, ...]] | None = None
        self._processed_stamps: deque = deque(maxlen=STALE_MEMORY)   # since the last reset
        self._last_stale_ns: int | None = None                       # the last stale set dropped
        wanted = list(self.class_names) if params.classes == ['all'] else list(params.classes)
        unknown = [c for c in wanted if c not in self.class_names]
        if unknown:
            raise ParameterError(f"parameter 'classes' has {unknown}, not among the detector's "
                                 f'classes {", ".join(self.class_names)}')
        self._keep_labels = np.array([i for i, c in enumerate(self.class_names) if c in wanted],
                                     dtype=np.int64)

    # ------------------------------------------------------------------ inputs
    def on_camera_info(self, camera_index: int, msg: Any) -> None:
        """Latest CameraInfo of one camera (CAMERA_NAMES index)."""
        self.assembler.set_camera_info(camera_index, msg)

    def reset(self, reason: str = RESET_EXPLICIT) -> None:
        """Clear the temporal memory (detector cache, last stamp) and tell ``on_reset`` hooks."""
        self.stats.resets[reason] += 1
        self.detector.reset(reason)
        self._last_stamp_ns = None
        self._last_shapes = None
        self._processed_stamps.clear()
        self._last_stale_ns = None
        for hook in self.on_reset:
            hook(reason)

    def clock_jumped_back(self) -> None:
        """Tell the pipeline that the sources' clock went back (TF stamps of a frame went
        back: a bag loop). Image sets with stamps seen before are then new data, not stale
        re-deliveries."""
        self._processed_stamps.clear()

    def _skip(self, skip: Skip) -> Skip:
        self.stats.skipped[skip.reason] += 1
        self.warn(f'skip/{skip.reason}', f'skipping frame: {skip}')
        return skip

    # ------------------------------------------------------------------ processing
    def process(self, images: Sequence[Any]) -> PipelineResult | Skip:
        """Run one synced set of six image messages (CAMERA_NAMES order) through everything."""
        p = self.params
        self.stats.synced += 1
        t0 = time.perf_counter()
        frame = self.assembler.assemble(images)
        t1 = time.perf_counter()
        if isinstance(frame, Skip):
            if frame.reason == CAMERA_TIME_SPREAD:
                self.reset(RESET_CAMERA_SPREAD)
            return self._skip(frame)
        stamp_ns = codecs.header_stamp_ns(images[self.assembler.anchor_index])
        # temporal rules
        if self._last_stamp_ns is not None:
            restarted = self._last_stale_ns is not None and stamp_ns > self._last_stale_ns
            if stamp_ns < self._last_stamp_ns and stamp_ns in self._processed_stamps and not restarted:
                # the very set was processed already (a late re-delivery) and the clock did not
                # go back: dropped, not taken as time going backwards. A second one later than
                # this (old sets arriving in order) means the source restarted: a reset below.
                self._last_stale_ns = stamp_ns
                return self._skip(Skip(STALE_FRAME, f'image set stamped {stamp_ns / 1e9:.6f} was '
                                       'already processed; it arrived again after newer ones'))
            if stamp_ns < self._last_stamp_ns:
                self.warn('reset/time_backwards', f'time went backwards by '
                          f'{(self._last_stamp_ns - stamp_ns) / 1e9:.3f} s (bag loop?): '
                          'resetting temporal memory')
                self.reset(RESET_TIME_BACKWARDS)
            elif stamp_ns == self._last_stamp_ns:
                return self._skip(Skip(DUPLICATE_FRAME, 'same anchor stamp as the previous frame'))
            elif stamp_ns - self._last_stamp_ns > p.max_time_gap * 1e9:
                self.warn('reset/time_gap', f'{(stamp_ns - self._last_stamp_ns) / 1e9:.3f} s since '
                          f'the previous frame > max_time_gap {p.max_time_gap} s: resetting '
                          'temporal memory')
                self.reset(RESET_TIME_GAP)
        shapes = [tuple(np.shape(c.image)) for c in frame.cameras]
        if self._last_shapes is not None and shapes != self._last_shapes:
            changed = [CAMERA_NAMES[i] for i, (a, b) in enumerate(zip(shapes, self._last_shapes)) if a != b]
            self.warn('reset/image_size', f'image size changed on {", ".join(changed)}: resetting '
                      'temporal memory')
            self.reset(RESET_IMAGE_SIZE)
        # output frame before inference, so that a missing transform costs no inference
        T_out_model = self._output_transform(frame, stamp_ns)
        if isinstance(T_out_model, Skip):
            return self._skip(T_out_model)
        self._last_stamp_ns = stamp_ns
        self._last_shapes = shapes
        self._processed_stamps.append(stamp_ns)
        self._last_stale_ns = None
        t2 = time.perf_counter()
        try:
            detections = self.detector.step(frame)
        except ValueError as exc:                 # StreamingDetector's InvalidFrameError
            self.reset(INVALID_FRAME)
            return self._skip(Skip(INVALID_FRAME, f'the detector refused the frame: {exc}'))
        t3 = time.perf_counter()
        boxes, scores, labels = self._select(detections)
        boxes = gravity_to_bottom_center(transform_boxes(bottom_to_gravity_center(boxes), T_out_model)) \
            if len(boxes) else np.zeros((0, 9))
        det_msg = detection_array(self.factory, boxes, scores, labels, self.class_names, stamp_ns,
                                  p.output_frame)
        markers = marker_array(self.factory, boxes, scores, labels, self.class_names, stamp_ns,
                               p.output_frame, p.marker_style, p.marker_lifetime) \
            if p.publish_markers else None
        t4 = time.perf_counter()
        timings = {'assemble': (t1 - t0) * 1e3, 'detector': (t3 - t2) * 1e3,
                   'messages': (t4 - t3) * 1e3, 'total': (t4 - t0) * 1e3}
        for stage, ms in timings.items():
            self.stats.latency_ms[stage].append(ms)
        self.stats.published += 1
        return PipelineResult(stamp_ns, frame, detections, boxes, scores, labels, det_msg, markers, timings)

    def _output_transform(self, frame: Frame, stamp_ns: int) -> np.ndarray | Skip:
        """``T_output_model`` at the anchor stamp."""
        p = self.params
        if p.model_frame and p.output_frame == p.model_frame:
            return np.eye(4)
        if p.output_frame == p.base_frame:
            return frame.T_ego_model
        if p.output_frame == p.world_frame:
            return frame.T_world_ego @ frame.T_ego_model
        T_out_base = self.assembler.lookup_checked(p.output_frame, p.base_frame, stamp_ns, '')
        if isinstance(T_out_base, Skip):
            return T_out_base
        return T_out_base @ frame.T_ego_model

    def _select(self, det: Detections) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Score threshold, class filter and max_detections (highest scores first)."""
        boxes = np.asarray(det.boxes, np.float64).reshape(-1, 9)
        scores = np.asarray(det.scores, np.float64).reshape(-1)
        labels = np.asarray(det.labels, np.int64).reshape(-1)
        keep = (scores >= self.params.score_threshold) & np.isin(labels, self._keep_labels)
        order = np.argsort(-scores[keep], kind='stable')[:self.params.max_detections]
        idx = np.flatnonzero(keep)[order]
        return boxes[idx], scores[idx], labels[idx]


# --------------------------------------------------------------------------------------------
# the real detector from parameters
# --------------------------------------------------------------------------------------------
def resolve_device(device: str) -> str:
    """'auto' -> 'cuda' when available else 'cpu'; 'cuda*' without CUDA -> ParameterError."""
    import torch
    if device == 'auto':
        return 'cuda' if torch.cuda.is_available() else 'cpu'
    if device.startswith('cuda') and not torch.cuda.is_available():
        raise ParameterError(f"parameter 'device' is '{device}' but torch sees no CUDA device; "
                             "use 'cpu' or 'auto'")
    return device


def bundled_checkpoint(preset: str) -> str | None:
    """Path of the demo weights shipped in ``sparsebev_core/weights`` for ``preset``, if any."""
    from pathlib import Path
    import sparsebev_core
    folder = Path(sparsebev_core.__file__).with_name('weights')
    files = sorted(folder.glob(f'{preset}*.pth')) if folder.is_dir() else []
    return str(files[0]) if files else None


def build_detector(params: DetectorParams, log: Callable[[str], None] = print) -> Any:
    """``StreamingDetector`` for the preset / checkpoint / device / precision parameters."""
    from sparsebev_core.checkpoint import load_checkpoint
    from sparsebev_core.model.detector import build_model
    from sparsebev_core.model.streaming import StreamingDetector
    from sparsebev_core.presets import get_preset

    cfg = get_preset(params.preset)
    model = build_model(cfg)
    checkpoint = params.checkpoint or bundled_checkpoint(params.preset)
    if checkpoint:
        load_checkpoint(model, checkpoint)
    elif params.preset == 'tiny':
        log("no checkpoint and no bundled weights for preset 'tiny': using random weights "
            '(boxes will be meaningless)')
    else:
        raise ParameterError(f"parameter 'checkpoint' is required for preset '{params.preset}' "
                             '(an official SparseBEV .pth or one converted with '
                             '`sparsebev convert-checkpoint`)')
    return StreamingDetector(model, cfg, device=resolve_device(params.device),
                             history_spacing=params.history_spacing,
                             max_time_gap=params.max_time_gap,
                             score_threshold=params.score_threshold,
                             max_detections=params.max_detections, precision=params.precision)
