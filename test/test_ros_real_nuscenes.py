"""One real nuScenes keyframe (test/data/real_nuscenes_sample, CC BY-NC-SA 4.0, see its README)
written as a rosbag2 exactly as a car would record it, replayed through the real pipeline.

The bag holds six ``CompressedImage`` (the recorded 1600x900 JPEGs), six ``CameraInfo``,
``/tf_static`` (``base_link`` -> each camera and ``LIDAR_TOP``) and ``/tf`` (``map`` ->
``base_link`` at every camera stamp). The r50_nuimg_704x256 preset (random weights) runs on
it once: JPEG decoding, the official resize to 704x256 and the full-size geometry.

Checks: the ``lidar2img`` the detector fed its head equals the sample's ``cam2img @ lidar2cam``
with the network-input transform (re-anchored from the lidar keyframe stamp to the CAM_FRONT
stamp, the node's reference instant), and the ground-truth boxes sent through that geometry
land on the sample's ``center_2d`` to under one pixel.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from sparsebev_core import geometry
from sparsebev_core.geometry import CAMERA_NAMES
from sparsebev_ros.bags.from_nuscenes import CameraBagWriter
from sparsebev_ros.bags.replay import replay
from sparsebev_ros.params import validate
from sparsebev_ros.pipeline import PipelineResult

pytestmark = pytest.mark.slow        # one R50 inference at 704x256 on the CPU (~10 s unloaded)

SAMPLE_DIR = Path(__file__).resolve().parent / 'data' / 'real_nuscenes_sample'
PRESET = 'r50_nuimg_704x256'
IMAGE_HW = (900, 1600)


def load_sample() -> dict:
    return json.loads((SAMPLE_DIR / 'sample.json').read_text())['sample']


def matrix(value) -> np.ndarray:
    return np.asarray(value, np.float64)


def stamp_ns(seconds: float) -> int:
    return int(round(seconds * 1e6)) * 1000              # nuScenes stamps are microseconds


def camera_pose(info: dict, camera: str) -> np.ndarray:
    """Ego pose (ego -> map) at the camera's own stamp, from the sample's calibration."""
    image = info['images'][camera]
    return (matrix(info['ego2global']) @ matrix(info['lidar_points']['lidar2ego'])
            @ np.linalg.inv(matrix(image['lidar2cam'])) @ np.linalg.inv(matrix(image['cam2ego'])))


def write_car_bag(info: dict, path: Path) -> None:
    """The keyframe as a car's recorder writes it."""
    stamps = {c: stamp_ns(info['images'][c]['timestamp']) for c in CAMERA_NAMES}
    first = min(stamps.values())
    with CameraBagWriter(path, transport='compressed') as bag:
        static = [('base_link', c, matrix(info['images'][c]['cam2ego']), 0) for c in CAMERA_NAMES]
        static.append(('base_link', 'LIDAR_TOP', matrix(info['lidar_points']['lidar2ego']), 0))
        bag.write_tf(static, static=True, log_ns=first - 3_000_000)
        for c in CAMERA_NAMES:
            bag.write_tf([('odom', 'base_link', camera_pose(info, c), stamps[c])],
                         log_ns=first - 2_000_000)
        for i, c in enumerate(CAMERA_NAMES):
            bag.write_camera_info(i, matrix(info['images'][c]['cam2img'])[:3, :3], IMAGE_HW[1],
                                  IMAGE_HW[0], stamps[c], c, log_ns=first - 1_000_000)
        for i, c in enumerate(CAMERA_NAMES):
            jpeg = (SAMPLE_DIR / Path(info['images'][c]['img_path']).name).read_bytes()
            bag.write_image(i, jpeg, stamps[c], c)


def lidar_key_from_anchor(info: dict) -> np.ndarray:
    """LIDAR_TOP at the CAM_FRONT stamp -> LIDAR_TOP at the keyframe (lidar) stamp."""
    lidar2ego = matrix(info['lidar_points']['lidar2ego'])
    return (np.linalg.inv(lidar2ego) @ np.linalg.inv(matrix(info['ego2global']))
            @ camera_pose(info, 'CAM_FRONT') @ lidar2ego)


@pytest.fixture(scope='module')
def replayed(tmp_path_factory):
    from sparsebev_core.model.detector import build_model
    from sparsebev_core.recipe.presets import get_preset
    from sparsebev_core.streaming.detector import StreamingDetector
    from sparsebev_core.streaming.options import StreamingOptions

    info = load_sample()
    folder = tmp_path_factory.mktemp('real_nuscenes')
    write_car_bag(info, folder / 'car')
    torch.manual_seed(0)
    cfg = get_preset(PRESET)
    detector = StreamingDetector(build_model(cfg).eval(), cfg, device='cpu',
                                 options=StreamingOptions(score_threshold=0.0))
    params = validate({'preset': PRESET, 'device': 'cpu', 'model_frame': 'LIDAR_TOP',
                       'output_frame': 'base_link', 'score_threshold': 0.0})
    results: list[PipelineResult] = []
    report = replay(folder / 'car', folder / 'out', params, detector, progress=False,
                    log=lambda text: None, on_result=results.append)
    return info, detector, results, report


def test_the_real_keyframe_goes_through_decode_resize_and_the_full_size_path(replayed):
    info, detector, results, report = replayed
    assert len(results) == 1, report.summary()
    result = results[0]
    assert result.stamp_ns == stamp_ns(info['images']['CAM_FRONT']['timestamp'])
    assert [np.shape(c.image) for c in result.frame.cameras] == [IMAGE_HW + (3,)] * 6
    assert np.allclose(result.frame.T_ego_model, matrix(info['lidar_points']['lidar2ego']),
                       atol=1e-9)                       # the model frame came from /tf_static
    assert detector.input_hw == (256, 704)
    assert len(result.boxes) > 0 and np.isfinite(result.boxes).all()


def test_head_lidar2img_equals_the_samples_cam2img_lidar2cam(replayed):
    info, detector, _, _ = replayed
    ida, _ = geometry.test_time_image_transform(IMAGE_HW, (256, 704))
    re_anchor = lidar_key_from_anchor(info)
    head = detector.last_step.lidar2img[:6].astype(np.float64)        # the current frame
    for i, camera in enumerate(CAMERA_NAMES):
        image = info['images'][camera]
        K4 = np.eye(4)
        K4[:3, :3] = matrix(image['cam2img'])[:3, :3]
        expected = ida @ K4 @ matrix(image['lidar2cam']) @ re_anchor
        error = np.abs(head[i] - expected).max() / np.abs(expected).max()
        assert error < 1e-5, f'{camera}: relative error {error:.2e}'


def test_ground_truth_boxes_land_on_the_samples_center_2d(replayed):
    info, detector, _, _ = replayed
    ida, _ = geometry.test_time_image_transform(IMAGE_HW, (256, 704))
    to_anchor = np.linalg.inv(lidar_key_from_anchor(info))
    bottoms = np.array([[*box['bbox_3d'][:3], 1.0] for box in info['instances']])   # (N, 4)
    head = detector.last_step.lidar2img[:6].astype(np.float64)
    checked = 0
    for i, camera in enumerate(CAMERA_NAMES):
        projected = (np.linalg.inv(ida) @ head[i] @ to_anchor @ bottoms.T).T          # (N, 4)
        in_front = projected[:, 2] > 0.1
        pixels = projected[in_front, :2] / projected[in_front, 2:3]
        for box in info['cam_instances'][camera]:
            distance = np.linalg.norm(pixels - np.asarray(box['center_2d']), axis=1).min()
            assert distance < 1.0, f'{camera}: a box lands {distance:.2f} px from center_2d'
            checked += 1
    assert checked >= 60, f'only {checked} boxes visible in the six cameras'
