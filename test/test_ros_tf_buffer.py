"""TfBuffer against the documented tf2 behaviour (docs/ros2.md section 3e)."""
import math

import numpy as np
import pytest

from sparsebev_core.geometry import make_transform, rot_z, rot_to_quat, quat_wxyz_to_xyzw
from sparsebev_ros.tf_buffer import (ConnectivityException, ExtrapolationException,
                                     InvalidArgumentException, LookupException, TfBuffer)

S = 1_000_000_000
T0 = 1_700_000_000 * S


def yaw_q(yaw):
    return quat_wxyz_to_xyzw(rot_to_quat(rot_z(yaw)))


def put(buf, parent, child, t, xyz=(0, 0, 0), yaw=0.0, static=False):
    return buf.set_transform(parent, child, t, xyz, yaw_q(yaw), static)


def test_exact_stamp_returns_the_stored_transform():
    buf = TfBuffer()
    put(buf, 'map', 'base_link', T0, (1, 2, 3), 0.5)
    put(buf, 'map', 'base_link', T0 + S, (2, 2, 3), 0.7)
    expected = make_transform(rot_z(0.5), (1, 2, 3))
    np.testing.assert_allclose(buf.lookup_transform('map', 'base_link', T0), expected, atol=1e-12)


def test_between_stamps_translation_is_linear_and_rotation_is_slerp():
    buf = TfBuffer()
    put(buf, 'map', 'base_link', T0, (0, 0, 0), 0.0)
    put(buf, 'map', 'base_link', T0 + S, (4, -2, 0), math.pi / 2)
    T = buf.lookup_transform('map', 'base_link', T0 + S // 4)
    np.testing.assert_allclose(T[:3, 3], (1.0, -0.5, 0.0), atol=1e-12)
    np.testing.assert_allclose(T[:3, :3], rot_z(math.pi / 8), atol=1e-12)


def test_lookup_outside_the_data_is_extrapolation_into_future_or_past():
    buf = TfBuffer()
    put(buf, 'map', 'base_link', T0)
    put(buf, 'map', 'base_link', T0 + S)
    with pytest.raises(ExtrapolationException, match='into the future'):
        buf.lookup_transform('map', 'base_link', T0 + S + 1)
    with pytest.raises(ExtrapolationException, match='into the past'):
        buf.lookup_transform('map', 'base_link', T0 - 1)


def test_a_single_transform_answers_only_its_own_stamp():
    buf = TfBuffer()
    put(buf, 'map', 'base_link', T0, (1, 0, 0))
    assert buf.lookup_transform('map', 'base_link', T0)[0, 3] == 1.0
    with pytest.raises(ExtrapolationException, match='only time'):
        buf.lookup_transform('map', 'base_link', T0 + 1)


def test_static_transforms_are_valid_at_every_time_and_newest_replaces():
    buf = TfBuffer()
    put(buf, 'base_link', 'cam', T0, (1, 0, 0), static=True)
    for t in (1, T0 - 100 * S, T0 + 1000 * S):
        assert buf.lookup_transform('base_link', 'cam', t)[0, 3] == 1.0
    put(buf, 'base_link', 'cam', T0 - 5 * S, (2, 0, 0), static=True)
    assert buf.lookup_transform('base_link', 'cam', T0)[0, 3] == 2.0


def test_time_zero_uses_the_latest_time_common_to_all_dynamic_links():
    buf = TfBuffer()
    for k in range(4):
        put(buf, 'odom', 'base_link', T0 + k * S, (k, 0, 0))
    for k in range(3):
        put(buf, 'map', 'odom', T0 + k * S, (0, 10 * k, 0))
    put(buf, 'base_link', 'cam', 0, (0, 0, 1), static=True)
    assert buf.latest_common_time('map', 'cam') == T0 + 2 * S      # static link ignored
    np.testing.assert_allclose(buf.lookup_transform('map', 'cam', 0)[:3, 3], (2, 20, 1))
    assert buf.latest_common_time('base_link', 'cam') == 0            # static only


def test_cache_keeps_ten_seconds_and_rejects_older_data():
    buf = TfBuffer()
    assert put(buf, 'map', 'base_link', T0)
    assert put(buf, 'map', 'base_link', T0 + 5 * S)
    assert put(buf, 'map', 'base_link', T0 + 12 * S)                 # prunes T0 (older than 2 s)
    with pytest.raises(ExtrapolationException, match='into the past'):
        buf.lookup_transform('map', 'base_link', T0 + S)
    assert buf.lookup_transform('map', 'base_link', T0 + 5 * S) is not None
    assert not put(buf, 'map', 'base_link', T0 + S)                   # TF_OLD_DATA
    assert buf.rejected_old == 1
    assert put(buf, 'map', 'base_link', T0 + 2 * S)                   # exactly 10 s: accepted


def test_duplicates_are_ignored_and_a_new_value_at_the_same_stamp_is_kept():
    buf = TfBuffer()
    put(buf, 'map', 'base_link', T0, (1, 0, 0))
    put(buf, 'map', 'base_link', T0, (1, 0, 0))
    assert len(buf._caches['base_link'].entries) == 1
    put(buf, 'map', 'base_link', T0, (3, 0, 0))
    assert len(buf._caches['base_link'].entries) == 2


def test_chain_composes_through_the_common_ancestor():
    buf = TfBuffer()
    T_map_odom = make_transform(rot_z(0.3), (5, 1, 0))
    T_odom_base = make_transform(rot_z(-0.2), (2, 0, 0))
    T_base_cam = make_transform(rot_z(1.0), (1, 0.5, 1.5))
    T_map_tree = make_transform(rot_z(2.0), (-3, 4, 0))
    for parent, child, T, static in [('map', 'odom', T_map_odom, False), ('odom', 'base_link', T_odom_base, False),
                                     ('base_link', 'cam', T_base_cam, True), ('map', 'tree', T_map_tree, True)]:
        q = quat_wxyz_to_xyzw(rot_to_quat(T[:3, :3]))
        for t in (T0, T0 + S):
            buf.set_transform(parent, child, t, T[:3, 3], q, static)
    expected = np.linalg.inv(T_map_tree) @ T_map_odom @ T_odom_base @ T_base_cam
    np.testing.assert_allclose(buf.lookup_transform('tree', 'cam', T0 + S // 2), expected, atol=1e-9)
    np.testing.assert_allclose(buf.lookup_transform('cam', 'tree', T0 + S // 2),
                               np.linalg.inv(expected), atol=1e-9)
    np.testing.assert_allclose(buf.lookup_transform('cam', 'cam', T0), np.eye(4))


def test_unknown_frames_and_separate_trees_raise_lookup_and_connectivity_errors():
    buf = TfBuffer()
    put(buf, 'map', 'base_link', T0)
    put(buf, 'odom', 'robot2', T0)
    with pytest.raises(LookupException, match='does not exist'):
        buf.lookup_transform('map', 'nowhere', T0)
    with pytest.raises(ConnectivityException):
        buf.lookup_transform('map', 'robot2', T0)


def test_if_the_parent_changes_between_two_stamps_the_older_entry_is_used():
    buf = TfBuffer()
    put(buf, 'a', 'x', T0, (1, 0, 0))
    put(buf, 'b', 'x', T0 + S, (7, 0, 0))
    put(buf, 'map', 'a', 0, static=True)
    put(buf, 'map', 'b', 0, static=True)
    assert buf.lookup_transform('map', 'x', T0 + S // 2)[0, 3] == 1.0


def test_invalid_transforms_are_refused():
    buf = TfBuffer()
    with pytest.raises(InvalidArgumentException):
        buf.set_transform('a', 'a', T0, (0, 0, 0), (0, 0, 0, 1))
    with pytest.raises(InvalidArgumentException):
        buf.set_transform('a', 'b', T0, (0, float('nan'), 0), (0, 0, 0, 1))
    with pytest.raises(InvalidArgumentException):
        buf.set_transform('a', 'b', T0, (0, 0, 0), (0, 0, 0, 2))
