"""Six-camera streams without any dataset, each camera posed at its own stamp.

* :func:`rig_frames` (``sparsebev timing --data rig``, ``bench/``): the nuScenes rig
  (``rig.nuscenes_rig``: the six cameras' calibration at 1600x900) on a car driving a gentle
  curve, with camera-like JPEGs of random blocks;
* :func:`world_frames`: a synthetic world rendered into the rig, in memory (the images the
  demo model was trained on: checks that need in-distribution inputs).
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


def world_frames(count: int, seed: int = 0, image_wh: tuple[int, int] = (400, 225)
                 ) -> list[Frame]:
    """``count`` keyframes (2 Hz) of the world of the first scene of ``make-synthetic --seed
    SEED --keyframes COUNT`` (``scenes.scene_world``), from scene time 0 on, rendered in memory
    into the nuScenes six at ``image_wh`` and JPEG-encoded (OpenCV, quality 90); the cameras
    fire ``CAMERA_STEP`` apart; the model frame is nuScenes' LIDAR_TOP."""
    import cv2
    from .render import make_camera, render_camera
    from .scene_writer import KEYFRAME_PERIOD_US
    from .scenes import scene_world
    rig = nuscenes_rig(image_wh)
    world, _ = scene_world(seed, 0, count)
    models = [make_camera(camera.K, camera.T_base_cam, camera.image_wh) for camera in rig.cameras]
    frames = []
    for k in range(count):
        stamp = k * KEYFRAME_PERIOD_US * 1e-6
        cameras = []
        for i, (camera, model) in enumerate(zip(rig.cameras, models)):
            t = stamp + CAMERA_STEP * i
            T_world_ego = world.T_world_ego(t)
            image, _ = render_camera(model, world, T_world_ego, world.boxes_world(t))
            jpeg = cv2.imencode('.jpg', image[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 90])[1]
            cameras.append(CameraView(jpeg.tobytes(), camera.K, camera.T_base_cam,
                                      RIG_T0 + t, T_world_ego, camera.name))
        frames.append(Frame(cameras, RIG_T0 + stamp, world.T_world_ego(stamp),
                            nuscenes_lidar_to_ego(), key=f'world{seed}_{k}'))
    return frames
