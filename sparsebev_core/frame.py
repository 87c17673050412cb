"""The core contract: one multi-camera instant in (``Frame``), boxes out (``Detections``).

The nuScenes dataset, the synthetic generator, the ROS node and the rosbag replay all build
``Frame``s; the streaming detector consumes them and returns ``Detections``. Nothing
downstream knows where a frame came from (DESIGN.md section 3).
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

    Attributes:
        image: uint8 RGB array (H, W, 3), or the encoded bytes of a JPEG/PNG file.
        K: intrinsics (3, 3) for the image as given (original resolution).
        T_ego_cam: camera -> ego extrinsics (4, 4).
        stamp: capture time in seconds (float64).
        T_world_ego: ego pose (ego -> world) at ``stamp`` (4, 4).
        name: camera name (``CAM_FRONT`` ...).
    """
    image: np.ndarray | bytes
    K: np.ndarray
    T_ego_cam: np.ndarray
    stamp: float
    T_world_ego: np.ndarray
    name: str = ''


@dataclass
class Frame:
    """Six synchronised cameras at one instant, in ``CAMERA_NAMES`` order.

    Attributes:
        cameras: six ``CameraView`` in FRONT, FRONT_RIGHT, FRONT_LEFT, BACK, BACK_LEFT,
            BACK_RIGHT order.
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
        if len(self.cameras) != len(CAMERA_NAMES):
            raise ValueError(f'a Frame needs {len(CAMERA_NAMES)} cameras in the order '
                             f'{", ".join(CAMERA_NAMES)}; got {len(self.cameras)}')
        if not self.key:
            self.key = f'{self.stamp:.6f}'


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
    """
    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray
    stamp: float = 0.0
    class_names: Sequence[str] = CLASS_NAMES
    timings: dict[str, float] = field(default_factory=dict)
    reset_reason: str = ''
    reset_detail: str = ''

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
