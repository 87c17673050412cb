"""The core contract: one multi-camera instant in (``Frame``), boxes out (``Detections``).

The nuScenes dataset, the synthetic generator, the ROS node and the rosbag replay all build
``Frame``s; the streaming detector consumes them and returns ``Detections``. Nothing
downstream knows where a frame came from (docs/design.md section 3).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from .errors import InputError
from .geometry import CAMERA_NAMES, CLASS_NAMES


class InvalidFrameError(InputError):
    """A ``Frame`` whose poses, intrinsics, stamps or images cannot be used (raised by
    ``StreamingDetector.step``; the ROS pipeline skips such a frame by this type)."""


@dataclass
class CameraView:
    """One camera image with everything needed to project into it.

    A camera of the rig that delivered nothing usable for this frame is a ``missing`` view:
    ``image`` is None and ``missing`` says why (a stable key, e.g. ``late``, ``decode_error``);
    its K / T_ego_cam / T_world_ego may be None or the nominal values. The detector marks it
    invalid (``valid_views``): no sampling point reads it, it is never replaced by a black or
    a stale image.

    Attributes:
        image: uint8 RGB array (H, W, 3), or the encoded bytes of a JPEG/PNG file; None when
            the camera is missing.
        K: intrinsics (3, 3) for the image as given (original resolution).
        T_ego_cam: camera -> ego extrinsics (4, 4).
        stamp: capture time in seconds (float64).
        T_world_ego: ego pose (ego -> world) at ``stamp`` (4, 4).
        name: camera name (``CAM_FRONT`` ...).
        missing: why the camera is missing ('' when it is present).
    """
    image: np.ndarray | bytes | None
    K: np.ndarray | None
    T_ego_cam: np.ndarray | None
    stamp: float
    T_world_ego: np.ndarray | None
    name: str = ''
    missing: str = ''

    @property
    def valid(self) -> bool:
        """True when the camera delivered an image for this frame."""
        return not self.missing and self.image is not None

    @classmethod
    def absent(cls, name: str, reason: str, stamp: float, K: np.ndarray | None = None,
               T_ego_cam: np.ndarray | None = None) -> 'CameraView':
        """A missing camera: no image, ``reason`` why; nominal K / extrinsics if known."""
        return cls(image=None, K=K, T_ego_cam=T_ego_cam, stamp=float(stamp), T_world_ego=None,
                   name=name, missing=reason or 'missing')


@dataclass
class Frame:
    """N >= 1 synchronised cameras of one rig at one instant.

    The camera list is data: the nuScenes six (``CAMERA_NAMES``, official order) by default,
    any named cameras of a rig (``sparsebev_core.rig``) otherwise, each with its own image size.
    A camera may be missing (``CameraView.missing``); at least one must be present.

    Attributes:
        cameras: N ``CameraView``; without names, six views are the nuScenes six in
            FRONT, FRONT_RIGHT, FRONT_LEFT, BACK, BACK_LEFT, BACK_RIGHT order.
        stamp: reference time in seconds: the output boxes are expressed in the model frame at
            this instant (nuScenes: the LIDAR_TOP keyframe stamp; ROS: the anchor camera stamp).
        T_world_ego: ego pose at ``stamp`` (4, 4).
        T_ego_model: model frame (nuScenes LIDAR_TOP axes) -> ego (4, 4).
        key: unique id of the frame (feature cache key); defaults to the stamp.
    """
    cameras: Sequence[CameraView]
    stamp: float
    T_world_ego: np.ndarray
    T_ego_model: np.ndarray
    key: str = ''

    def __post_init__(self) -> None:
        if len(self.cameras) < 1:
            raise InvalidFrameError('a Frame needs at least one camera, got none')
        names = self.camera_names
        if len(set(names)) != len(names):
            raise InvalidFrameError(f'camera names must be unique, got {", ".join(names)}')
        if not self.key:
            self.key = f'{self.stamp:.6f}'

    @property
    def camera_names(self) -> tuple[str, ...]:
        """Each view's name; unnamed views are ``default_camera_names(N)``."""
        defaults = default_camera_names(len(self.cameras))
        return tuple(c.name or d for c, d in zip(self.cameras, defaults))

    @property
    def valid_views(self) -> np.ndarray:
        """(N,) bool: True for a camera that delivered an image."""
        return np.array([c.valid for c in self.cameras], dtype=bool)

    @property
    def missing_cameras(self) -> dict[str, str]:
        """Missing camera name -> reason (empty for a complete frame)."""
        return {n: c.missing or 'missing' for n, c in zip(self.camera_names, self.cameras)
                if not c.valid}


def default_camera_names(num_cameras: int) -> tuple[str, ...]:
    """The nuScenes six for six views, else ``camera0 .. camera{N-1}``."""
    if num_cameras == len(CAMERA_NAMES):
        return tuple(CAMERA_NAMES)
    return tuple(f'camera{i}' for i in range(num_cameras))


@dataclass
class Detections:
    """Boxes in the model frame at the frame's reference stamp.

    Attributes:
        boxes: (N, 9) ``[x, y, z_bottom, dx, dy, dz, yaw, vx, vy]`` (mmdet3d >= 1.0 LiDAR
            convention: yaw counter-clockwise from +x, velocities in m/s).
        scores: (N,) in [0, 1].
        labels: (N,) int indices into ``class_names``.
        stamp: the frame's reference stamp (s).
        class_names: label names.
        timings: optional per-stage latency in milliseconds.
        reset_reason: why the detector's memory was cleared before this frame: a key of
            ``sparsebev_core.resets`` ('' when it was not).
        reset_detail: the human-readable detail of that reset.
        missing_cameras: a degraded frame's missing cameras, name -> reason (empty when
            every camera of the rig was there).
        track_ids: (N,) int64 identities that follow one object from frame to frame (>= 1,
            never reused in a stream), from a model that tracks (SparseBEV++:
            ``streaming.track_ids``); None for a model that does not (v1).
    """
    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray
    stamp: float = 0.0
    class_names: Sequence[str] = CLASS_NAMES
    timings: dict[str, float] = field(default_factory=dict)
    reset_reason: str = ''
    reset_detail: str = ''
    missing_cameras: dict[str, str] = field(default_factory=dict)
    track_ids: np.ndarray | None = None

    @property
    def degraded(self) -> bool:
        """True when the frame ran without some of the rig's cameras."""
        return bool(self.missing_cameras)

    def __len__(self) -> int:
        return int(len(self.scores))

    @classmethod
    def from_decoded(cls, decoded: Mapping[str, Any], stamp: float = 0.0,
                     class_names: Sequence[str] = CLASS_NAMES,
                     timings: dict[str, float] | None = None, reset_reason: str = '',
                     reset_detail: str = '') -> 'Detections':
        """One element of the decoder's output (``model.coder.decode_predictions``: torch
        tensors or numpy arrays ``boxes [K, 9]``, ``scores [K]``, ``labels [K]``) as numpy
        ``Detections``: boxes float64, scores float32, labels int64."""
        return cls(boxes=_as_array(decoded['boxes'], np.float64).reshape(-1, 9),
                   scores=_as_array(decoded['scores'], np.float32).reshape(-1),
                   labels=_as_array(decoded['labels'], np.int64).reshape(-1),
                   stamp=float(stamp), class_names=tuple(class_names),
                   timings={} if timings is None else timings,
                   reset_reason=reset_reason, reset_detail=reset_detail)

    @classmethod
    def empty(cls, stamp: float = 0.0) -> 'Detections':
        """No boxes."""
        return cls(np.zeros((0, 9)), np.zeros((0,)), np.zeros((0,), dtype=np.int64), stamp)


def _as_array(value: Any, dtype: type) -> np.ndarray:
    """A numpy array of ``dtype`` from a numpy array or a (device, reduced-precision) tensor."""
    if hasattr(value, 'detach'):                       # torch.Tensor, without importing torch
        value = value.detach().cpu()
        if value.is_floating_point() and value.element_size() < 4:
            value = value.float()                      # numpy has no bfloat16
        value = value.numpy()
    return np.asarray(value).astype(dtype, copy=False)
