"""``FrameAssembler``: one camera set (N image messages) + CameraInfos + TF -> a core ``Frame``.

The assembler never invents a pose and never fills a camera with a black or a stale image.
A problem of one camera (no image in the set, an unset stamp, no or a zero CameraInfo, a size
mismatch, no frame id, no TF for its extrinsics or its stamp, an undecodable or too large
image) makes that camera *missing* with the same machine-readable key as reason
(``CameraView.missing``): the frame goes ahead *degraded* while at least
``params.min_cameras`` cameras are present. Otherwise, and for problems of the frame as a
whole (the ego pose at the anchor stamp, the model frame, the present cameras' stamps spread
over ``max_camera_time_diff``), it returns a :class:`Skip` with the ``reason`` (the same keys
in the node's warnings, the replay summary and the tests; ``sparsebev_ros.reasons``) and a
sentence for humans.

Transforms come from a ``lookup(target, source, stamp_ns) -> 4x4 T_target_source`` callable
that raises :class:`TransformUnavailable`; the node wraps ``tf2_ros.Buffer`` with it
(:func:`tf2_exception_reason` maps the tf2 exception types) and replay wraps our
:class:`~sparsebev_ros.tf_buffer.TfBuffer` (:func:`tf_buffer_lookup`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence, cast

import numpy as np

from sparsebev_core.frame import CameraView, Frame
from sparsebev_core.image import image_size

from . import codecs
from .optical_frames import OpticalFrameCheck
from .params import DetectorParams
from .reasons import (CAMERA_INFO_SIZE, CAMERA_TIME_SPREAD, DECODE_ERROR, IMAGE_TOO_LARGE,
                      MISSING_CAMERA, MISSING_CAMERA_INFO, MISSING_FRAME_ID, TF_EXTRAPOLATION,
                      TF_UNAVAILABLE, UNSUPPORTED_ENCODING, ZERO_CAMERA_INFO, ZERO_STAMP)
from .undistort import DistortionRefused, Undistorter


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
    """Builds ``Frame``s from camera sets (``params.camera_names`` order) and the latest CameraInfos.

    Args:
        params: validated node parameters (cameras, frames, anchor camera, limits, K source).
        lookup: transform lookup (see module docstring).
        warn: ``warn(key, text)`` for one-off notices (a distorted camera being undistorted,
            a camera frame that does not look optical: ``optical_frames``).
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
        self.names = tuple(params.camera_names)
        self.camera_infos: list[Any] = [None] * len(self.names)
        self.anchor_index = params.anchor_index
        self._distortion_reported: set[int] = set()
        self.undistort = Undistorter(params.distorted_images)
        self.check_optical = OpticalFrameCheck(self.warn, params.base_frame)

    def set_camera_info(self, camera_index: int, msg: Any) -> None:
        """Keep the latest CameraInfo of one camera."""
        self.camera_infos[camera_index] = msg

    def lookup_checked(self, target: str, source: str, stamp_ns: int, camera: str) -> np.ndarray | Skip:
        try:
            T = np.asarray(self.lookup(target, source, stamp_ns), dtype=np.float64)
        except TransformUnavailable as exc:
            return Skip(exc.reason, f'{target} <- {source} at {stamp_ns / 1e9:.6f}: {exc.detail}', camera)
        except codecs.TransformError as exc:
            return Skip(TF_UNAVAILABLE, f'{target} <- {source}: {exc}', camera)
        if T.shape != (4, 4) or not np.all(np.isfinite(T)):
            return Skip(TF_UNAVAILABLE, f'{target} <- {source}: lookup returned no valid 4x4', camera)
        return T

    def assemble(self, images: Sequence[Any], missing: Mapping[int, str] | None = None
                 ) -> Frame | Skip:
        """A ``Frame`` from one Image/CompressedImage message per camera (None: missing, with
        ``missing[i]`` the synchroniser's reason), or the reason it cannot be built."""
        p, names = self.params, self.names
        images = list(images) + [None] * (len(names) - len(images))
        if len(images) != len(names):
            return Skip(MISSING_CAMERA, f'{len(images)} images for the {len(names)} cameras '
                        f'{", ".join(names)}')
        problems: dict[int, Skip] = {}
        for i, m in enumerate(images):
            if m is None:
                why = (missing or {}).get(i, MISSING_CAMERA)
                problems[i] = Skip(why, f'no image from {names[i]} in the set ({why})', names[i])
        anchor = images[self.anchor_index]
        anchor_ns = codecs.header_stamp_ns(anchor) if anchor is not None else 0
        if anchor_ns <= 0:   # a lookup at time 0 would mean "the latest pose": never invent one
            return Skip(ZERO_STAMP if anchor is not None else MISSING_CAMERA,
                        f'the anchor camera {p.anchor_camera} has no stamped image in the set; '
                        'the camera driver must stamp its images', p.anchor_camera)
        stamps = [codecs.header_stamp_ns(m) if m is not None else 0 for m in images]
        for i, s in enumerate(stamps):
            if images[i] is not None and s <= 0:
                problems[i] = Skip(ZERO_STAMP, f'header.stamp is {s} (unset); the camera driver '
                                   'must stamp its images', names[i])
        present = [i for i in range(len(names)) if i not in problems]
        spread = max(stamps[i] for i in present) - min(stamps[i] for i in present)
        if spread > p.max_camera_time_diff * 1e9:
            first = names[min(present, key=lambda i: stamps[i])]
            last = names[max(present, key=lambda i: stamps[i])]
            return Skip(CAMERA_TIME_SPREAD, f'camera stamps spread {spread / 1e9:.3f} s '
                        f'({first} .. {last}) > max_camera_time_diff {p.max_camera_time_diff} s')
        # the frame as a whole: ego pose at the anchor stamp, model frame
        T_world_ego_ref = self.lookup_checked(p.world_frame, p.base_frame, anchor_ns, p.anchor_camera)
        if isinstance(T_world_ego_ref, Skip):
            return T_world_ego_ref
        if p.model_frame:
            T_ego_model = self.lookup_checked(p.base_frame, p.model_frame, anchor_ns, '')
            if isinstance(T_ego_model, Skip):
                return T_ego_model
        else:
            T_ego_model = p.T_base_model
        # per camera: intrinsics, frame id, poses, pixels last (decoding is the expensive part)
        views: list[CameraView | None] = [None] * len(names)
        nominal: dict[int, tuple[Any, Any]] = {}
        for i in range(len(names)):
            if i in problems:
                continue
            view = self._camera(i, images[i], stamps[i], anchor_ns, T_world_ego_ref, nominal)
            if isinstance(view, Skip):
                problems[i] = view
            else:
                views[i] = view
        present = [i for i in range(len(names)) if i not in problems]
        if len(present) < p.min_cameras:        # skipped under the first missing camera's reason
            head = problems[min(problems)]
            others = [str(problems[i]) for i in sorted(problems)[1:]]
            return Skip(head.reason, head.detail + (
                f' ({len(present)} of {len(names)} cameras present, min_cameras '
                f'{p.min_cameras}' + (f'; also {"; ".join(others)}' if others else '') + ')'),
                head.camera)
        for i, skip in problems.items():
            K, T_ego_cam = nominal.get(i, (None, None))
            views[i] = CameraView.absent(names[i], skip.reason, codecs.ns_to_seconds(anchor_ns),
                                         K, T_ego_cam)
        return Frame(cameras=views, stamp=codecs.ns_to_seconds(anchor_ns),
                     T_world_ego=T_world_ego_ref, T_ego_model=T_ego_model, key=str(anchor_ns))

    def _camera(self, i: int, msg: Any, stamp_ns: int, anchor_ns: int, T_world_ego_ref: np.ndarray,
                nominal: dict[int, tuple[Any, Any]]) -> CameraView | Skip:
        """One present camera's view, or why it must be treated as missing. ``nominal[i]``
        gets its (K, T_ego_cam) as far as they were found (for a missing camera's geometry)."""
        p, name = self.params, self.names[i]
        info = self.camera_infos[i]
        if info is None:
            return Skip(MISSING_CAMERA_INFO, f'no CameraInfo received yet on '
                        f'{p.camera_info_topics[i]}', name)
        try:
            K = codecs.camera_info_K(info, p.use_projection_matrix)
        except codecs.CameraInfoError as exc:
            return Skip(ZERO_CAMERA_INFO, str(exc), name)
        nominal[i] = (K, None)
        # a raw stream's distortion is removed here (undistort.py); rectified ones have none
        distorted = not p.use_projection_matrix and codecs.has_distortion(info)
        frame_id = (str(msg.header.frame_id) or str(info.header.frame_id)).lstrip('/')
        if not frame_id:
            return Skip(MISSING_FRAME_ID, 'image and CameraInfo have an empty header.frame_id', name)
        T_ego_cam = self.lookup_checked(p.base_frame, frame_id, stamp_ns, name)
        if isinstance(T_ego_cam, Skip):
            return T_ego_cam
        self.check_optical(name, frame_id, T_ego_cam)
        nominal[i] = (K, T_ego_cam)
        T_world_ego = T_world_ego_ref if stamp_ns == anchor_ns else \
            self.lookup_checked(p.world_frame, p.base_frame, stamp_ns, name)
        if isinstance(T_world_ego, Skip):
            return T_world_ego
        try:                               # pixels last: decoding is the expensive part
            pixels = codecs.to_camera_image(msg, self.decode_images or distorted,
                                            p.max_image_pixels)
            height, width = image_size(pixels)     # or left to the detector (encoded bytes)
        except codecs.UnsupportedEncodingError as exc:
            return Skip(UNSUPPORTED_ENCODING, str(exc), name)
        except codecs.ImageTooLargeError as exc:
            return Skip(IMAGE_TOO_LARGE, str(exc), name)
        except codecs.CODEC_ERRORS as exc:
            return Skip(DECODE_ERROR, str(exc), name)
        info_hw = codecs.camera_info_size(info)
        if info_hw != (0, 0) and info_hw != (height, width):
            return Skip(CAMERA_INFO_SIZE, f'image is {width}x{height} but its '
                        f'CameraInfo is for {info_hw[1]}x{info_hw[0]}', name)
        if distorted:
            try:
                pixels = self.undistort(i, cast(np.ndarray, pixels), info, K)   # decoded
            except DistortionRefused as exc:
                return Skip(exc.reason, str(exc), name)
            if i not in self._distortion_reported:
                self._distortion_reported.add(i)
                self.warn(f'distortion/{name}', f'{name}: CameraInfo has non-zero distortion '
                          f'({info.distortion_model}) on a raw stream: undistorting its images')
        return CameraView(image=pixels, K=K, T_ego_cam=T_ego_cam,
                          stamp=codecs.ns_to_seconds(stamp_ns), T_world_ego=T_world_ego, name=name)
