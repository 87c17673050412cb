"""The processing shared by the node and the replay tool.

``messages -> FrameAssembler -> Frame -> detector.step -> Detections -> output messages``

:class:`Pipeline` owns the assembler, the ROS-side temporal-memory rules (camera stamps
spread over ``max_camera_time_diff``, an image size change, a duplicate anchor stamp, an
explicit :meth:`Pipeline.reset`; the time rules are the detector's, ``sparsebev_core.resets``,
and are counted here from ``Detections.reset_reason``), the output transform into
``output_frame``, per-reason skip counters and throttled warnings; the bounded counters and
latency windows are :class:`sparsebev_ros.statistics.PipelineStats`. The
detector is anything with ``step(frame) -> Detections`` and ``reset(reason)``
(``sparsebev_core.streaming.detector.StreamingDetector``; :func:`build_detector` makes one from
the parameters).
"""
from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Protocol, Sequence

import numpy as np

from sparsebev_core import resets
from sparsebev_core.frame import Detections, Frame, InvalidFrameError
from sparsebev_core.geometry import (CLASS_NAMES, bottom_to_gravity_center,
                                     gravity_to_bottom_center, transform_boxes)
from sparsebev_core.image import image_size
from sparsebev_core.recipe.presets import model_config
from sparsebev_core.streaming.options import StreamingOptions

from . import codecs, reasons
from .backpressure import ThrottledLogger
from .frames import FrameAssembler, Skip, TransformLookup
from .messages import MessageFactory, detection_array, marker_array
from .params import DetectorParams, ParameterError
from .statistics import PipelineStats

STALE_MEMORY = 64                        # anchor stamps remembered for the stale-set rule


class Detector(Protocol):
    """``step`` applies the time rules itself (``sparsebev_core.resets.ResetPolicy``) and
    reports a reset in ``Detections.reset_reason``; ``reset(reason)`` clears the memory."""

    def step(self, frame: Frame) -> Detections: ...

    def reset(self, reason: str = ...) -> None: ...


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
    track_ids: np.ndarray | None = None   # (N,) after filtering; None: the model does not track


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
        defer_decoding: hand CompressedImages to the detector encoded (checked, not decoded:
            ``FrameAssembler(decode_images=False)``) so that it decodes them once, in its
            preprocessing pool or on the GPU; None: when the detector runs on CUDA.
    """

    def __init__(self, params: DetectorParams, detector: Detector, lookup: TransformLookup,
                 factory: MessageFactory, log: Callable[[str], None] | None = None,
                 class_names: Sequence[str] = CLASS_NAMES,
                 clock: Callable[[], float] = time.monotonic,
                 defer_decoding: bool | None = None):
        self.params = params
        self.detector = detector
        self.lookup = lookup
        self.factory = factory
        self.class_names = tuple(class_names)
        self.warn = ThrottledLogger(log or (lambda text: None), params.warn_throttle, clock)
        if defer_decoding is None:      # the detector decodes in its pool / on the GPU: on CUDA
            defer_decoding = str(getattr(detector, 'device', 'cpu')).startswith('cuda')
        self.assembler = FrameAssembler(params, lookup, self.warn, decode_images=not defer_decoding)
        self.stats = PipelineStats()
        self.on_reset: list[Callable[[str], None]] = []
        self._last_stamp_ns: int | None = None
        self._last_shapes: list[tuple[int, int] | None] | None = None   # None: camera never seen
        self._processed_stamps: deque = deque(maxlen=STALE_MEMORY)   # since the last reset
        self._last_stale_ns: int | None = None                       # the last stale set dropped
        self.last_missing: dict[str, str] = {}      # the last published frame's missing cameras
        self._keep_labels = self._class_filter(params)
        self._label_thresholds = self._thresholds(params)

    def _class_filter(self, params: DetectorParams) -> np.ndarray:
        """Label indices ``params.classes`` keeps; ParameterError for a class the detector lacks."""
        wanted = list(self.class_names) if params.classes == ['all'] else list(params.classes)
        unknown = [c for c in wanted if c not in self.class_names]
        if unknown:
            raise ParameterError(f"parameter 'classes' has {unknown}, not among the detector's "
                                 f'classes {", ".join(self.class_names)}')
        return np.array([i for i, c in enumerate(self.class_names) if c in wanted], dtype=np.int64)

    def check_output_params(self, params: DetectorParams) -> None:
        """Raise ParameterError, changing nothing, when :meth:`set_output_params` would refuse
        ``params`` (a class the detector lacks, in ``classes`` or ``score_thresholds``);
        lock-free."""
        self._class_filter(params)
        self._thresholds(params)

    def _thresholds(self, params: DetectorParams) -> np.ndarray:
        """Score threshold per label index: ``score_thresholds`` where given, else
        ``score_threshold``; ParameterError for a class the detector lacks."""
        unknown = [c for c in params.score_thresholds if c not in self.class_names]
        if unknown:
            raise ParameterError(f"parameter 'score_thresholds' has {unknown}, not among the "
                                 f'detector\'s classes {", ".join(self.class_names)}')
        return np.array([params.score_thresholds.get(c, params.score_threshold)
                         for c in self.class_names], dtype=np.float64)

    def set_output_params(self, params: DetectorParams) -> None:
        """Adopt new output parameters while running (score_threshold, score_thresholds,
        classes, publish_markers, marker_style); raises ParameterError and changes nothing when
        ``classes`` or ``score_thresholds`` name a class the detector lacks. The detector's
        own score threshold follows the lowest threshold (:func:`lowest_score_threshold`)."""
        keep, thresholds = self._class_filter(params), self._thresholds(params)
        self.params, self.assembler.params, self._keep_labels = params, params, keep
        self._label_thresholds = thresholds
        if hasattr(self.detector, 'score_threshold'):
            self.detector.score_threshold = lowest_score_threshold(params)

    # ------------------------------------------------------------------ inputs
    def on_camera_info(self, camera_index: int, msg: Any) -> None:
        """Latest CameraInfo of one camera (``params.camera_names`` index)."""
        self.assembler.set_camera_info(camera_index, msg)

    def reset(self, reason: str = reasons.EXPLICIT) -> None:
        """Clear the temporal memory (detector cache, last stamp) and tell ``on_reset`` hooks."""
        self.detector.reset(reason)
        self._last_stamp_ns = None
        self._last_shapes = None
        self._processed_stamps.clear()
        self._last_stale_ns = None
        self._count_reset(reason)

    def _count_reset(self, reason: str) -> None:
        self.stats.resets[reason] += 1
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
    def process(self, images: Sequence[Any], missing: dict[int, str] | None = None
                ) -> PipelineResult | Skip:
        """Run one camera set (one image message per camera of ``params.camera_names``, None
        for a missing one, ``missing[i]`` its reason) through everything; a frame with missing
        cameras goes ahead degraded (``Detections.missing_cameras``, ``stats.degraded``) while
        ``min_cameras`` are present."""
        p = self.params
        self.stats.synced += 1
        t0 = time.perf_counter()
        frame = self.assembler.assemble(images, missing)
        t1 = time.perf_counter()
        if isinstance(frame, Skip):
            if frame.reason == reasons.CAMERA_TIME_SPREAD:
                self.reset(reasons.CAMERA_TIME_SPREAD)
            return self._skip(frame)
        stamp_ns = int(frame.key)                          # the anchor image's stamp
        # ROS-side rules; going backwards and max_time_gap are the detector's (Detections.reset_reason)
        if stamp_ns == self._last_stamp_ns:
            return self._skip(Skip(reasons.DUPLICATE_FRAME,
                                   'same anchor stamp as the previous frame'))
        if self._last_stamp_ns is not None and stamp_ns < self._last_stamp_ns:
            restarted = self._last_stale_ns is not None and stamp_ns > self._last_stale_ns
            if stamp_ns in self._processed_stamps and not restarted:
                # the very set was processed already (a late re-delivery) and the clock did not
                # go back: dropped, not taken as time going backwards. A second one later than
                # this (old sets arriving in order) means the source restarted: the detector
                # then sees time going backwards and resets.
                self._last_stale_ns = stamp_ns
                return self._skip(Skip(reasons.STALE_FRAME,
                                       f'image set stamped {stamp_ns / 1e9:.6f} was already '
                                       'processed; it arrived again after newer ones'))
        shapes: list[tuple[int, int] | None] = [image_size(c.image) if c.valid else None
                                                 for c in frame.cameras]   # arrays or encoded bytes
        last = self._last_shapes or [None] * len(shapes)
        changed = [self.assembler.names[i] for i, (a, b) in enumerate(zip(shapes, last))
                   if a is not None and b is not None and a != b]
        shapes = [b if a is None else a for a, b in zip(shapes, last)]   # missing: last known
        if changed:
            self.warn(f'reset/{reasons.IMAGE_SIZE_CHANGED}', f'image size changed on {", ".join(changed)}: resetting '
                      'temporal memory')
            self.reset(reasons.IMAGE_SIZE_CHANGED)
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
        except (InvalidFrameError, *codecs.CODEC_ERRORS) as exc:   # by type: a bug must surface
            self.reset(reasons.INVALID_FRAME)
            return self._skip(Skip(reasons.INVALID_FRAME, f'the detector refused the frame: {exc}'))
        t3 = time.perf_counter()
        if detections.reset_reason in resets.DETECTOR_RESETS:     # the detector's own time rules
            self.warn(f'reset/{detections.reset_reason}',
                      f'{detections.reset_detail}: temporal memory reset')
            self._count_reset(detections.reset_reason)
        boxes, scores, labels, track_ids = self._select(detections)
        boxes = gravity_to_bottom_center(transform_boxes(bottom_to_gravity_center(boxes), T_out_model)) \
            if len(boxes) else np.zeros((0, 9))
        det_msg = detection_array(self.factory, boxes, scores, labels, self.class_names, stamp_ns,
                                  p.output_frame, track_ids)
        markers = marker_array(self.factory, boxes, scores, labels, self.class_names, stamp_ns,
                               p.output_frame, p.marker_style, p.marker_lifetime,
                               track_ids=track_ids) if p.publish_markers else None
        t4 = time.perf_counter()
        timings = {'assemble': (t1 - t0) * 1e3, 'detector': (t3 - t2) * 1e3,
                   'messages': (t4 - t3) * 1e3, 'total': (t4 - t0) * 1e3}
        self.stats.add_latencies(timings)
        self.stats.published += 1
        self.stats.add_degraded(frame.missing_cameras)
        self.last_missing = frame.missing_cameras
        if frame.missing_cameras:
            self.warn('degraded', 'frame without ' + ', '.join(
                f'{n} ({why})' for n, why in frame.missing_cameras.items()) +
                ': detections continue from the other cameras')
        return PipelineResult(stamp_ns, frame, detections, boxes, scores, labels, det_msg, markers,
                              timings, track_ids)

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

    def _select(self, det: Detections
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
        """Score threshold (per class: ``score_thresholds``), class filter and max_detections
        (highest scores first); the track IDs follow their boxes (None when the model does not
        track)."""
        boxes = np.asarray(det.boxes, np.float64).reshape(-1, 9)
        scores = np.asarray(det.scores, np.float64).reshape(-1)
        labels = np.asarray(det.labels, np.int64).reshape(-1)
        threshold = np.full(len(labels), self.params.score_threshold)
        known = (labels >= 0) & (labels < len(self._label_thresholds))
        threshold[known] = self._label_thresholds[labels[known]]
        keep = (scores >= threshold) & np.isin(labels, self._keep_labels)
        order = np.argsort(-scores[keep], kind='stable')[:self.params.max_detections]
        idx = np.flatnonzero(keep)[order]
        track_ids = None if det.track_ids is None else np.asarray(det.track_ids, np.int64)[idx]
        return boxes[idx], scores[idx], labels[idx], track_ids


# --------------------------------------------------------------------------------------------
# the real detector from parameters
# --------------------------------------------------------------------------------------------
def lowest_score_threshold(params: DetectorParams) -> float:
    """The detector's own threshold: the lowest of ``score_threshold`` and the per-class ones
    (the pipeline then applies each class's own)."""
    return min([params.score_threshold, *params.score_thresholds.values()])


def streaming_options(params: DetectorParams) -> StreamingOptions:
    """The detector's streaming options from the node / replay parameters (same names)."""
    return StreamingOptions(history_spacing=params.history_spacing,
                            max_time_gap=params.max_time_gap,
                            score_threshold=lowest_score_threshold(params),
                            max_detections=params.max_detections, precision=params.precision)


def build_detector(params: DetectorParams, log: Callable[[str], None] = print) -> Any:
    """``StreamingDetector`` for the preset (or ``config_file``) / checkpoint / device /
    runtime parameters and :func:`streaming_options` (``sparsebev_core.loading.load_detector``)."""
    from sparsebev_core.loading import load_detector
    cfg = model_config(None if params.config_file else params.preset, params.config_file or None)
    return load_detector(cfg, params.checkpoint or None, params.device, streaming_options(params),
                         log=log, runtime=params.runtime, onnx_dir=params.onnx_dir or None,
                         onnx_providers=params.onnx_providers)
