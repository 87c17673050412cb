"""How a ``StreamingDetector`` streams: one frozen, typed set of options, checked when built.

``StreamingOptions()`` is the official behaviour (history every 0.5 s, fp32, PIL resize, the
preset's decoding threshold and top-k). The ROS node and replay build one from their
parameters (``sparsebev_ros.pipeline.streaming_options``); ``loading.load_detector`` and
``StreamingDetector`` take it as it is. A new streaming option is a field here (+ its use in
``detector.py``), and, to expose it to ROS, a parameter of the same name in
``sparsebev_ros/params.py``. Nothing here imports torch.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ..errors import InputError
from ..image import RESIZE_METHODS, ResizeMethod

Precision = Literal['fp32', 'fp16', 'bf16']
PRECISIONS: tuple[str, ...] = ('fp32', 'fp16', 'bf16')
RecurrentReset = Literal['clear', 'official']
RECURRENT_RESETS: tuple[str, ...] = ('clear', 'official')


class StreamingOptionsError(InputError, ValueError):
    """A streaming option (or its combination with the model or runtime) that cannot work."""


@dataclass(frozen=True)
class StreamingOptions:
    """Options of ``StreamingDetector`` (every field is checked in ``__post_init__``).

    Attributes:
        history_spacing: target time between history frames (s); the official models were
            tested with keyframes 0.5 s apart (trained with 0.33 - 0.67 s).
        max_time_gap: a gap longer than this (s) between two steps clears the memory.
        score_threshold: keep boxes scoring above this (None: the preset's, 0.05 officially).
        max_detections: top-k of the NMS-free decoder (None: the preset's, 300 officially).
        precision: 'fp32' (official), or 'fp16' / 'bf16' for backbone, FPN and head (geometry,
            time differences, box refinement and decoding stay float32); for a model only, a
            runtime brings its own precision.
        compile_head: ``torch.compile`` the head (for a model; ``runtime.EagerRuntime``).
        resize_method: 'pil' (official pixels), 'cv2' (faster) or 'torch' (``image.py``).
        max_cached_frames: hard cap on cached frames (FIFO), a guard against memory growth on
            high-rate streams; the selection rule alone keeps about
            (T-1) * history_spacing * frame rate + 1 frames. The cache buffers grow by
            doubling up to this many slots plus one (the frame being stepped).
        preprocess_workers: threads that decode and resize the N images in parallel
            (0: in the calling thread). Same pixels either way.
        cache_channels_last: the feature cache with channels innermost in memory (the CUDA
            kernel's layout; ``feature_cache.FeatureSlots``); None: on CUDA devices only.
            Same outputs either way.
        device_preprocess: upload the decoded uint8 images and resize/crop them on the
            model's device (``image.resize_crop_tensor``, the 'torch' resize: within 1 grey
            level of PIL), decoding JPEGs on the GPU when a GPU decoder is installed
            (``image.device_jpeg_decoder``); None: on CUDA devices with
            ``resize_method='torch'``.
        recurrent_reset: what a reset does to the recurrent state of a SparseBEV++ model (the
            ``*_memory`` presets): 'clear' (ours, the default) forgets the propagated queries,
            the memory queue and the previous stamp and pose, as v1 forgets its cached
            features; 'official' keeps them all, as the official code, which clears its memory
            only on the first frame of a process (the 2 s time gate alone drops the
            propagated queries; docs/streaming.md, "The recurrent state"). Resets are
            reported either way. No effect on v1 models.
    """
    history_spacing: float = 0.5
    max_time_gap: float = 2.0
    score_threshold: float | None = None
    max_detections: int | None = None
    precision: Precision = 'fp32'
    compile_head: bool = False
    resize_method: ResizeMethod = 'pil'
    max_cached_frames: int = 64
    preprocess_workers: int = 0
    cache_channels_last: bool | None = None
    device_preprocess: bool | None = None
    recurrent_reset: RecurrentReset = 'clear'

    def __post_init__(self) -> None:
        if self.history_spacing < 0:
            raise StreamingOptionsError(f'history_spacing must be >= 0, got {self.history_spacing}')
        if self.max_time_gap <= 0:
            raise StreamingOptionsError(f'max_time_gap must be > 0, got {self.max_time_gap}')
        if self.precision not in PRECISIONS:
            raise StreamingOptionsError(f"precision must be 'fp32', 'fp16' or 'bf16', got "
                                        f'{self.precision!r}')
        if self.resize_method not in RESIZE_METHODS:
            raise StreamingOptionsError(f'resize_method must be one of {RESIZE_METHODS}, got '
                                        f'{self.resize_method!r}')
        if self.recurrent_reset not in RECURRENT_RESETS:
            raise StreamingOptionsError(f'recurrent_reset must be one of {RECURRENT_RESETS}, got '
                                        f'{self.recurrent_reset!r}')
        if self.device_preprocess and self.resize_method != 'torch':
            raise StreamingOptionsError("device_preprocess resizes with the 'torch' method; "
                                        f'resize_method={self.resize_method!r} runs on the CPU only')
