"""A tiny, exactly known six-camera drive for the ROS-layer tests (no nuScenes needed).

The ego drives along a gentle left curve at 5 m/s; six cameras (nuScenes-like yaw layout) at
12 Hz, each camera a few milliseconds after the previous one. Everything (poses, extrinsics,
intrinsics, stamps) is known in closed form so tests can compare against the truth.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from sparsebev_core.frame import Detections, Frame
from sparsebev_core.geometry import (CAMERA_NAMES, invert_transform, make_transform, rot_z,
                                     nuscenes_lidar_to_ego, transform_boxes,
                                     bottom_to_gravity_center, gravity_to_bottom_center)
from sparsebev_core.resets import DETECTOR_RESETS, EXPLICIT, ResetPolicy

T0_NS = 1_700_000_000_000_000_000          # start of the drive (ns)
FRAME_PERIOD_NS = 83_333_333               # 12 Hz
CAMERA_OFFSET_NS = 7_000_000               # camera i fires i * 7 ms after the frame start
WIDTH, HEIGHT = 64, 36
CAMERA_YAWS_DEG = (0.0, -55.0, 55.0, 180.0, 110.0, -110.0)
# camera optical axes (x right, y down, z forward) in ego axes (x forward, y left, z up)
R_EGO_OPTICAL = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])


def K() -> np.ndarray:
    return np.array([[40.0, 0.0, WIDTH / 2], [0.0, 40.0, HEIGHT / 2], [0.0, 0.0, 1.0]])


def T_ego_cam(i: int) -> np.ndarray:
    yaw = math.radians(CAMERA_YAWS_DEG[i])
    return make_transform(rot_z(yaw) @ R_EGO_OPTICAL, (1.5 * math.cos(yaw), 0.5 * math.sin(yaw), 1.6))


def T_world_ego(t_ns: int) -> np.ndarray:
    """Ego pose at time t: speed 5 m/s, yaw rate 0.1 rad/s, 10 m above the map origin."""
    t = (t_ns - T0_NS) / 1e9
    yaw = 0.3 + 0.1 * t
    r = 5.0 / 0.1
    x = 100.0 + r * (math.sin(yaw) - math.sin(0.3))
    y = -20.0 - r * (math.cos(yaw) - math.cos(0.3))
    return make_transform(rot_z(yaw), (x, y, 10.0))


def camera_stamp(frame: int, i: int) -> int:
    return T0_NS + frame * FRAME_PERIOD_NS + i * CAMERA_OFFSET_NS


def jpeg(seed: int, width: int = WIDTH, height: int = HEIGHT) -> bytes:
    import simplejpeg
    rng = np.random.default_rng(seed)
    img = np.ascontiguousarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8))
    return simplejpeg.encode_jpeg(img, quality=80, colorspace='RGB')


# world-frame ground truth: two parked boxes [x, y, z_bottom, dx, dy, dz, yaw, vx, vy]
WORLD_BOXES = np.array([[108.0, -17.0, 8.2, 4.5, 1.9, 1.6, 0.7, 0.0, 0.0],
                        [104.0, -24.0, 8.2, 0.8, 0.7, 1.8, -1.2, 1.0, 0.5]])
WORLD_LABELS = np.array([0, 8])


def truth_in(T_target_world: np.ndarray) -> np.ndarray:
    """WORLD_BOXES expressed in another frame (bottom centre), via gravity centres."""
    return gravity_to_bottom_center(transform_boxes(bottom_to_gravity_center(WORLD_BOXES), T_target_world))


@dataclass
class WrittenBag:
    path: str
    anchor_stamps: list[int] = field(default_factory=list)   # CAM_FRONT stamp of each frame


def write_drive(path, storage: str = 'sqlite3', num_frames: int = 10, transport: str = 'compressed',
                skip_camera: dict | None = None, late_camera: dict | None = None,
                time_jump_at: int | None = None, corrupt: dict | None = None,
                size_change_at: int | None = None, with_tf: bool = True,
                distortion: bool = False, distro: str = 'humble', tf_delay_ns: int = 0,
                jitter_ns: Callable[[int, int], int] | None = None,
                drop: Callable[[int, int], bool] | None = None) -> WrittenBag:
    """Write the drive as a rosbag2.

    Args:
        skip_camera: {frame: camera index} images left out.
        late_camera: {frame: (camera index, extra ns)} images stamped later.
        time_jump_at: from this frame on, stamps restart at T0 (a bag loop).
        corrupt: {frame: camera index} JPEG truncated to garbage.
        size_change_at: from this frame on, images (and CameraInfo) are twice as large.
        tf_delay_ns: /tf messages are recorded this much after their stamp (a slow localizer).
        jitter_ns: ``jitter_ns(frame, camera)`` ns added to that image's stamp (deterministic).
        drop: ``drop(frame, camera)`` True leaves that image out (a lossy camera).
    """
    from sparsebev_ros.bags.from_nuscenes import CameraBagWriter
    skip_camera, late_camera, corrupt = skip_camera or {}, late_camera or {}, corrupt or {}
    bag = WrittenBag(str(path))
    with CameraBagWriter(path, storage, transport, distro=distro) as w:
        w.write_tf([('base_link', name, T_ego_cam(i), T0_NS) for i, name in enumerate(CAMERA_NAMES)]
                   + [('base_link', 'LIDAR_TOP', nuscenes_lidar_to_ego(), T0_NS)], static=True,
                   log_ns=T0_NS - 1)
        log_offset = 0
        for f in range(num_frames):
            frame_index = f
            if time_jump_at is not None and f >= time_jump_at:
                frame_index = f - time_jump_at
                log_offset = (time_jump_at + 5) * FRAME_PERIOD_NS
            scale = 2 if size_change_at is not None and f >= size_change_at else 1
            for i, name in enumerate(CAMERA_NAMES):
                stamp = camera_stamp(frame_index, i) + (jitter_ns(f, i) if jitter_ns else 0)
                if late_camera.get(f, (None,))[0] == i:
                    stamp += late_camera[f][1]
                log_ns = stamp + log_offset
                if with_tf:
                    w.write_tf([('odom', 'base_link', T_world_ego(stamp), stamp)], log_ns=log_ns + tf_delay_ns)
                if skip_camera.get(f) == i or (drop is not None and drop(f, i)):
                    continue
                Ks = K().copy()
                Ks[:2] *= scale
                w.write_camera_info(i, Ks, WIDTH * scale, HEIGHT * scale, stamp, name, log_ns=log_ns,
                                    distortion=(0.1, 0, 0, 0, 0) if distortion else (0.0,) * 5)
                if transport == 'compressed':
                    data = jpeg(f * 6 + i, WIDTH * scale, HEIGHT * scale)
                    if corrupt.get(f) == i:
                        data = data[:40] + b'\x00' * 30
                    w.write_image(i, data, stamp, name, log_ns=log_ns)
                else:
                    rng = np.random.default_rng(f * 6 + i)
                    w.write_image(i, rng.integers(0, 255, (HEIGHT * scale, WIDTH * scale, 3), dtype=np.uint8),
                                  stamp, name, log_ns=log_ns, encoding='bgr8')
            bag.anchor_stamps.append(camera_stamp(frame_index, 0) +
                                     (jitter_ns(f, 0) if jitter_ns else 0) +
                                     (late_camera[f][1] if late_camera.get(f, (None,))[0] == 0 else 0))
    return bag


class PerfectDriveDetector:
    """Stand-in for a perfect model on this drive (NOT SparseBEV): returns WORLD_BOXES in the
    true model frame at the frame's stamp, computed from the closed-form truth, and records
    what it was given. Its memory follows the real detector's rules (``ResetPolicy``):
    ``resets`` lists every clear, requested or by the time rules."""

    def __init__(self, T_ego_model: np.ndarray | None = None, max_time_gap: float = 2.0):
        self.T_ego_model = nuscenes_lidar_to_ego() if T_ego_model is None else T_ego_model
        self.frames: list[Frame] = []
        self.resets: list[str] = []
        self.policy = ResetPolicy(max_time_gap)

    def step(self, frame: Frame) -> Detections:
        reset = self.policy.due(frame.stamp)
        if reset is not None and reset.key in DETECTOR_RESETS:
            self.resets.append(reset.key)
        self.policy.advance(frame.stamp)
        self.frames.append(frame)
        stamp_ns = int(frame.key)
        T_model_world = invert_transform(T_world_ego(stamp_ns) @ self.T_ego_model)
        boxes = truth_in(T_model_world)
        return Detections(boxes, np.array([0.9, 0.6]), WORLD_LABELS.copy(), frame.stamp,
                          reset_reason=reset.key if reset else '',
                          reset_detail=reset.detail if reset else '')

    def reset(self, reason: str = EXPLICIT) -> None:
        self.policy.request(reason)
        self.resets.append(reason)
