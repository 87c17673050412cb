"""``FrameAssembler``: six synced image messages + CameraInfos + TF -> a core ``Frame``.

The assembler never invents a pose: when anything needed is missing or wrong it returns a
:class:`Skip` with a machine-readable ``reason`` (the same keys in the node's warnings, the
replay summary and the tests) and a sentence for humans.

Transforms come from a ``lookup(target, source, stamp_ns) -> 4x4 T_target_source`` callable
that raises :class:`TransformUnavailable`; the node wraps ``tf2_ros.Buffer`` with it
(:func:`tf2_exception_reason` maps the tf2 exception types) and replay wraps our
:class:`~sparsebev_ros.tf_buffer.TfBuffer` (:func:`tf_buffer_lookup`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from sparsebev_core.frame import CameraView, Frame
from sparsebev_core.geometry import CAMERA_NAMES
from sparsebev_core.image import image_size

from . import codecs
from .params import DetectorParams

# skip reasons (stable keys)
MISSING_CAMERA = 'missing_camera'
MISSING_CAMERA_INFO = 'missing_camera_info'
ZERO_CAMERA_INFO = 'zero_camera_info'
CAMERA_INFO_SIZE = 'camera_info_size_mismatch'
CAMERA_TIME_SPREAD = 'camera_time_spread'
MISSING_FRAME_ID = 'missing_frame_id'
TF_UNAVAILABLE = 'tf_unavailable'
TF_EXTRAPOLATION = 'tf_extrapolation'
DECODE_ERROR = 'decode_error'
UNSUPPORTED_ENCODING = 'unsupported_encoding'

SKIP_REASONS = (MISSING_CAMERA, MISSING_CAMERA_INFO, ZERO_CAMERA_INFO, CAMERA_INFO_SIZE,
                CAMERA_TIME_SPREAD, MISSING_FRAME_ID, TF_UNAVAILABLE, TF_EXTRAPOLATION,
                DECODE_ERROR, UNSUPPORTED_ENCODING)


class TransformUnavailable(Exception):
    """A transform lookup failed; ``reason`` is TF_UNAVAILABLE or TF_EXTRAPOLATION."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


TransformLookup = Callable[[str, str, int], np.ndarray]
"""``lookup(target_frame, source_frame, stamp_ns) -> T_target_source (4, 4)``."""


@dataclass(frozen=True)
class Skip:
    """Why a frame was not assembled (or not published)."""
    reason: str
    detail: str
    camera: str = ''

    def __str__(self) -> str:
        where = f' [{self.camera}]' if self.camera else ''
        return f'{self.reason}{where}: {self.detail}'


def tf2_exception_reason(exc: BaseException) -> str:
    """TF_EXTRAPOLATION for tf2 ``ExtrapolationException`` (by class name), else TF_UNAVAILABLE."""
    return TF_EXTRAPOLATION if 'Extrapolation' in type(exc).__name__ else TF_UNAVAILABLE


def tf_buffer_lookup(buffer: Any) -> TransformLookup:
    """A lookup over :class:`TfBuffer` raising :class:`TransformUnavailable`."""
    from .tf_buffer import TransformException

    def lookup(target: str, source: str, stamp_ns: int) -> np.ndarray:
        try:
            return buffer.lookup_transform(target, source, stamp_ns)
        except TransformException as exc:
            raise TransformUnavailable(tf2_exception_reason(exc), str(exc)) from None
    return lookup


class FrameAssembler:
    """Builds ``Frame``s from six image messages (CAMERA_NAMES order) and the latest CameraInfos.

    Args:
        params: validated node parameters (frames, anchor camera, limits, K source).
        lookup: transform lookup (see module docstring).
        warn: ``warn(key, text)`` for one-off notices (non-zero distortion).
        decode_images: decode CompressedImages here (True), or check them without decoding
            (format, signature, header size against the CameraInfo) and hand the encoded bytes
            on, so that the detector decodes the six images in its pool or on the GPU, once.
    """

    def __init__(self, params: DetectorParams, lookup: TransformLookup,
                 warn: Callable[[str, str], None] | None = None, decode_images: bool = True):
        self.params = params
        self.decode_images = bool(decode_images)
        self.lookup = lookup
        self.warn = warn or (lambda key, text: None)
        self.camera_infos: list[Any] = [None] * len(CAMERA_NAMES)
        self.anchor_index = CAMERA_NAMES.index(params.anchor_camera)
        self._distortion_reported: set[int] = set()

    def set_camera_info(self, camera_index: int, msg: Any) -> None:
        """Keep the latest CameraInfo of one camera."""
        self.camera_infos[camera_index] = msg

    def lookup_checked(self, target: str, source: str, stamp_ns: int, camera: str) -> np.ndarray | Skip:
        try:
            T = np.asarray(self.lookup(target, source, stamp_ns), dtype=np.float64)
        except TransformUnavailable as exc:
            return Skip(exc.reason, f'{target} <- {source} at {stamp_ns / 1e9:.6f}: {exc.detail}', camera)
        if T.shape != (4, 4) or not np.all(np.isfinite(T)):
            return Skip(TF_UNAVAILABLE, f'{target} <- {source}: lookup returned no valid 4x4', camera)
        return T

    def assemble(self, images: Sequence[Any]) -> Frame | Skip:
        """A ``Frame`` from six Image/CompressedImage messages, or the reason it cannot be built."""
        p = self.params
        if len(images) != len(CAMERA_NAMES) or any(m is None for m in images):
            missing = [CAMERA_NAMES[i] for i in range(len(CAMERA_NAMES))
                       if i >= len(images) or images[i] is None]
            return Skip(MISSING_CAMERA, f'no image from {", ".join(missing)}', ','.join(missing))
        stamps = [codecs.header_stamp_ns(m) for m in images]
        spread = max(stamps) - min(stamps)
        if spread > p.max_camera_time_diff * 1e9:
            first, last = CAMERA_NAMES[int(np.argmin(stamps))], CAMERA_NAMES[int(np.argmax(stamps))]
            return Skip(CAMERA_TIME_SPREAD, f'camera stamps spread {spread / 1e9:.3f} s '
                        f'({first} .. {last}) > max_camera_time_diff {p.max_camera_time_diff} s')
        # intrinsics
        Ks = []
        for i, name in enumerate(CAMERA_NAMES):
            info = self.camera_infos[i]
            if info is None:
                return Skip(MISSING_CAMERA_INFO, f'no CameraInfo received yet on '
                            f'{p.camera_info_topics[i]}', name)
            try:
                Ks.append(codecs.camera_info_K(info, p.use_projection_matrix))
            except codecs.CameraInfoError as exc:
                return Skip(ZERO_CAMERA_INFO, str(exc), name)
            if i not in self._distortion_reported and codecs.has_distortion(info):
                self._distortion_reported.add(i)
                self.warn(f'distortion/{name}', f'{name}: CameraInfo has non-zero distortion '
                          f'({info.distortion_model}); the model assumes rectified images, boxes '
                          'will be less accurate')
        # camera frames
        cam_frames = []
        for i, name in enumerate(CAMERA_NAMES):
            frame_id = str(images[i].header.frame_id) or str(self.camera_infos[i].header.frame_id)
            if not frame_id:
                return Skip(MISSING_FRAME_ID, 'image and CameraInfo have an empty header.frame_id', name)
            cam_frames.append(frame_id.lstrip('/'))
        # poses: extrinsics and ego pose at each image's own stamp, ego pose at the anchor stamp
        anchor_ns = stamps[self.anchor_index]
        T_world_ego_ref = self.lookup_checked(p.world_frame, p.base_frame, anchor_ns, p.anchor_camera)
        if isinstance(T_world_ego_ref, Skip):
            return T_world_ego_ref
        if p.model_frame:
            T_ego_model = self.lookup_checked(p.base_frame, p.model_frame, anchor_ns, '')
            if isinstance(T_ego_model, Skip):
                return T_ego_model
        else:
            T_ego_model = p.T_base_model
        extrinsics, poses = [], []
        for i, name in enumerate(CAMERA_NAMES):
            T_ego_cam = self.lookup_checked(p.base_frame, cam_frames[i], stamps[i], name)
            if isinstance(T_ego_cam, Skip):
                return T_ego_cam
            T_world_ego = T_world_ego_ref if stamps[i] == anchor_ns else \
                self.lookup_checked(p.world_frame, p.base_frame, stamps[i], name)
            if isinstance(T_world_ego, Skip):
                return T_world_ego
            extrinsics.append(T_ego_cam)
            poses.append(T_world_ego)
        # pixels last: decoding is the expensive part (or left to the detector)
        views = []
        for i, name in enumerate(CAMERA_NAMES):
            try:
                pixels = codecs.to_camera_image(images[i], self.decode_images)
                height, width = image_size(pixels)
            except codecs.UnsupportedEncodingError as exc:
                return Skip(UNSUPPORTED_ENCODING, str(exc), name)
            except codecs.CODEC_ERRORS as exc:
                return Skip(DECODE_ERROR, str(exc), name)
            info_hw = codecs.camera_info_size(self.camera_infos[i])
            if info_hw != (0, 0) and info_hw != (height, width):
                return Skip(CAMERA_INFO_SIZE, f'image is {width}x{height} but its '
                            f'CameraInfo is for {info_hw[1]}x{info_hw[0]}', name)
            views.append(CameraView(image=pixels, K=Ks[i], T_ego_cam=extrinsics[i],
                                    stamp=codecs.ns_to_seconds(stamps[i]),
                                    T_world_ego=poses[i], name=name))
        return Frame(cameras=views, stamp=codecs.ns_to_seconds(anchor_ns),
                     T_world_ego=T_world_ego_ref, T_ego_model=T_ego_model, key=str(anchor_ns))
