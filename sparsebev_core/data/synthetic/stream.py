"""A six-camera stream without any dataset (``sparsebev timing --data rig``, ``bench/``): the
nuScenes rig (``rig.nuscenes_rig``: the six cameras' calibration at 1600x900) on a car driving
a gentle curve, with camera-like JPEGs, each camera posed at its own stamp.
"""
from __future__ import annotations

import numpy as np

from ...frame import CameraView, Frame
from ...geometry import make_transform, nuscenes_lidar_to_ego, rot_z
from ...rig import NUSCENES_IMAGE_WH, Rig, nuscenes_rig

RIG_HW = (NUSCENES_IMAGE_WH[1], NUSCENES_IMAGE_WH[0])     # nuScenes camera size (H, W)
RIG_T0 = 1_700_000_000.0
CAMERA_STEP = 0.005                       # cameras fire 5 ms apart, in rig order


def rig_T_world_ego(t: float) -> np.ndarray:
    """Ego pose at ``t`` seconds: 10 m/s with a yaw rate of 0.05 rad/s."""
    dt = t - RIG_T0
    return make_transform(rot_z(0.05 * dt), (10.0 * dt, 0.0, 0.0))


def rig_jpegs(seed: int, hw: tuple[int, int] = RIG_HW, count: int = 6) -> list[bytes]:
    """``count`` JPEGs (blocks + gradients + noise: camera-like sizes, ~0.3 MB at 1600x900)."""
    import cv2
    h, w = hw
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    out = []
    for c in range(count):
        blocks = rng.integers(0, 256, (h // 40 + 1, w // 40 + 1, 3), dtype=np.uint8)
        blocks = blocks.repeat(40, 0).repeat(40, 1)[:h, :w].astype(np.float32)
        grad = np.stack([xx * 255.0 / w, yy * 255.0 / h, np.full_like(xx, 128.0 + c)], -1)
        image = np.clip(0.6 * blocks + 0.4 * grad + rng.normal(0, 6, (h, w, 3)), 0, 255)
        out.append(cv2.imencode('.jpg', image.astype(np.uint8)[:, :, ::-1],
                                [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes())
    return out


def rig_frames(count: int, rate_hz: float = 2.0, distinct_images: int = 4,
               rig: Rig | None = None) -> list[Frame]:
    """``count`` frames of encoded 1600x900 JPEGs on ``rig`` (default: the nuScenes six), no
    nuscenes-devkit needed; the cameras fire ``CAMERA_STEP`` apart, each posed at its own
    stamp; the model frame is nuScenes' LIDAR_TOP."""
    rig = rig or nuscenes_rig()
    images = [rig_jpegs(seed, count=len(rig.cameras)) for seed in range(min(distinct_images, count))]
    frames = []
    for k in range(count):
        stamp = RIG_T0 + k / rate_hz
        cameras = [CameraView(images[k % len(images)][i], camera.K, camera.T_base_cam,
                              stamp + CAMERA_STEP * i, rig_T_world_ego(stamp + CAMERA_STEP * i),
                              camera.name)
                   for i, camera in enumerate(rig.cameras)]
        frames.append(Frame(cameras, stamp, rig_T_world_ego(stamp), nuscenes_lidar_to_ego(),
                            key=f'rig{k}'))
    return frames
