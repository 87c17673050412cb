"""Frame conventions: quaternions, transforms, lidar2img composition, boxes."""
import math
import sys
from pathlib import Path

import numpy as np

from sparsebev_core import geometry as g

sys.path.insert(0, str(Path(__file__).parent / 'parity'))
import inputs as parity_inputs  # noqa: E402  (the fixture's own, independent geometry)


def test_quaternion_round_trip_and_ros_order():
    rng = np.random.default_rng(0)
    for _ in range(20):
        q = rng.normal(size=4)
        q /= np.linalg.norm(q)
        q = q if q[0] >= 0 else -q
        R = g.quat_to_rot(q)
        np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-12)
        np.testing.assert_allclose(g.rot_to_quat(R), q, atol=1e-10)
        np.testing.assert_allclose(g.quat_xyzw_to_wxyz(g.quat_wxyz_to_xyzw(q)), q)


def test_yaw_quaternion_rotates_x_to_y():
    R = g.quat_to_rot(g.yaw_to_quat(math.pi / 2))
    np.testing.assert_allclose(R @ [1, 0, 0], [0, 1, 0], atol=1e-12)


def test_test_time_image_transform_matches_official_704x256():
    ida, info = g.test_time_image_transform((900, 1600), (256, 704))
    ref, ref_info = parity_inputs.ida_matrix(704, 256)
    np.testing.assert_allclose(ida, ref)
    assert info['crop'] == ref_info['crop'] == (0, 140, 704, 396)


def test_compose_lidar2img_matches_parity_fixture_geometry():
    inp = parity_inputs.build_inputs(0, num_frames=3)
    rig = inp['rig']
    ida, _ = g.test_time_image_transform((900, 1600), (256, 704))
    for i in range(3 * 6):
        cam = i % 6
        ours = g.compose_lidar2img(rig['intrinsics'][cam], rig['cam2ego'][cam],
                                   rig['ego2global_per_image'][i], rig['ego2global_keyframe'],
                                   rig['lidar2ego'], ida)
        np.testing.assert_allclose(ours.astype(np.float32), inp['lidar2img'][i], rtol=2e-6, atol=1e-3)


def test_nuscenes_lidar_axes_point_right_and_forward():
    T = g.nuscenes_lidar_to_ego()
    # LIDAR_TOP x axis is the vehicle's right (-y of ego), y axis the vehicle's forward (+x)
    np.testing.assert_allclose(T[:3, :3] @ [1, 0, 0], [0, -1, 0], atol=0.03)
    np.testing.assert_allclose(T[:3, :3] @ [0, 1, 0], [1, 0, 0], atol=0.03)
    assert abs(T[2, 3] - 1.84023) < 1e-9


def test_lidar_calibration_is_the_parity_fixture_rig():
    assert list(g.NUSCENES_LIDAR_TOP_TRANSLATION) == parity_inputs.LIDAR_TOP['translation']
    assert list(g.NUSCENES_LIDAR_TOP_ROTATION_WXYZ) == parity_inputs.LIDAR_TOP['rotation']


def test_invert_transform_is_inverse():
    T = g.transform_from_quat([0.9, 0.1, -0.2, 0.3], [1.0, -2.0, 0.5])
    np.testing.assert_allclose(g.invert_transform(T) @ T, np.eye(4), atol=1e-12)


def test_box_corners_and_transform_keep_geometry():
    box = np.array([[10.0, 5.0, -1.0, 4.0, 2.0, 1.5, math.pi / 2, 1.0, 0.0]])
    c = g.box_corners(box)[0]
    # heading along +y: the box extends +-2 m in y and +-1 m in x, bottom at z = -1
    assert np.isclose(c[:, 1].max(), 7.0) and np.isclose(c[:, 0].max(), 11.0)
    assert np.isclose(c[:, 2].min(), -1.0) and np.isclose(c[:, 2].max(), 0.5)
    T = g.make_transform(g.rot_z(math.pi / 2), [1.0, 2.0, 3.0])
    moved = g.transform_boxes(box, T)
    np.testing.assert_allclose(g.box_corners(moved)[0], c @ T[:3, :3].T + T[:3, 3], atol=1e-9)
    np.testing.assert_allclose(moved[0, 7:9], [0.0, 1.0], atol=1e-12)
    np.testing.assert_allclose(g.gravity_to_bottom_center(g.bottom_to_gravity_center(box)), box)
