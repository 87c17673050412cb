"""Tier 2: the node against the real tf2_ros (Jazzy 0.36.4, and Humble's 0.25.8 Python
``Buffer``), on what the stand-in hid (the review of 2026-12, defects 3, 6, 7, 8).
"""
from __future__ import annotations

import gc
import json
import os
import weakref
import subprocess
import sys
from pathlib import Path

import pytest
import rclpy
from geometry_msgs.msg import TransformStamped
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState
from rclpy.parameter import Parameter
from rclpy.time import Time

from ros2_rig import Spinning, needs_upstream, wait_for
from sparsebev_ros.node import DetectorNode
from sparsebev_ros.params import ParameterError, defaults

pytestmark = needs_upstream
HERE = Path(__file__).resolve().parent
HUMBLE_TF2 = os.environ.get('SPARSEBEV_TIER2_HUMBLE_TF2', '')


def tiny(**values) -> list[Parameter]:
    return [Parameter('preset', value='tiny'), Parameter('device', value='cpu')] + \
        [Parameter(name, value=value) for name, value in values.items()]


def test_real_tf2_raises_on_a_leading_slash_and_the_node_refuses_such_frame_parameters(context):
    """Defect 7: tf2 raises InvalidArgumentException on '/map' (buffer_core.cpp), so a node
    with ``world_frame: /map`` skipped every frame; the stand-in stripped the slash."""
    import tf2_ros
    buffer = tf2_ros.Buffer()
    pose = TransformStamped()
    pose.header.frame_id, pose.child_frame_id = 'map', 'base_link'
    pose.transform.rotation.w = 1.0
    buffer.set_transform_static(pose, 'test')
    assert buffer.lookup_transform('map', 'base_link', Time()).child_frame_id == 'base_link'
    with pytest.raises(tf2_ros.InvalidArgumentException, match="cannot start with a '/'"):
        buffer.lookup_transform('/map', 'base_link', Time())
    with pytest.raises(ParameterError, match="'world_frame' must not start with '/'.*use 'map'"):
        DetectorNode(node_name='sparsebev_slash', context=context,
                     parameter_overrides=tiny(world_frame='/map'))


def run_clock_jump_scenario(tf2_site: str = '') -> dict:
    env = dict(os.environ)
    if tf2_site:
        env['PYTHONPATH'] = os.pathsep.join([tf2_site, env.get('PYTHONPATH', '')])
    result = subprocess.run([sys.executable, str(HERE / 'clock_jump_scenario.py')], env=env,
                            capture_output=True, text=True, timeout=400)
    if result.returncode != 0:        # not an AssertionError: an xfail must not hide a crash
        raise RuntimeError('the scenario failed:\n' + (result.stdout + result.stderr)[-4000:])
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    if (tf2_site or '.ros2_build/install/') not in outcome['tf2_ros']:
        raise RuntimeError(f"the scenario ran another tf2_ros: {outcome['tf2_ros']}")
    return outcome


def test_a_replayed_bag_is_detected_after_clock_jumps_back_with_jazzy_tf2():
    """Jazzy's Buffer clears itself on a backwards jump of /clock, and so does the node (its
    own jump callback), which also resets the temporal memory, once."""
    outcome = run_clock_jump_scenario()
    assert outcome['published_after_jump'], outcome
    assert outcome['resets'] == {'clock_jump': 1}, outcome


def test_a_replayed_bag_is_detected_after_clock_jumps_back_with_humble_tf2():
    """Defect 3: Humble's tf2_ros_py Buffer registers no jump callback (TF_OLD_DATA for every
    replayed pose, every frame skipped as tf_extrapolation until a restart); the node's own
    callback clears it."""
    assert HUMBLE_TF2, 'scripts/ros2_tier2.sh sets SPARSEBEV_TIER2_HUMBLE_TF2'
    outcome = run_clock_jump_scenario(HUMBLE_TF2)
    assert outcome['published_after_jump'], outcome
    assert outcome['resets'] == {'clock_jump': 1}, outcome


def test_lifecycle_cleanup_removes_the_tf2_frames_service(context):
    """Defect 8: the real Buffer's ``tf2_frames`` service and its clock-jump callback (which
    kept the old Buffer alive) outlived cleanup: one more service per configure/cleanup."""
    name = 'sparsebev_cycles'
    managed = DetectorNode(node_name=name, lifecycle=True, context=context,
                           parameter_overrides=tiny(image_topics=[f'/cycles/cam{i}' for i in range(6)],
                                                    camera_info_topics=[f'/cycles/info{i}'
                                                                        for i in range(6)]))
    operator = rclpy.create_node('sparsebev_cycles_operator', context=context)

    def change(transition: int) -> None:       # RuntimeError: only the defect may xfail
        client = operator.create_client(ChangeState, f'/{name}/change_state')
        if not client.wait_for_service(timeout_sec=30.0):
            raise RuntimeError(f'no /{name}/change_state')
        future = client.call_async(ChangeState.Request(transition=Transition(id=transition)))
        try:
            wait_for(future.done, 120.0, 'the transition')
        except AssertionError as exc:
            raise RuntimeError(str(exc)) from None
        if not future.result().success:
            raise RuntimeError(f'transition {transition} failed')
        operator.destroy_client(client)

    def tf2_frames_services() -> int:
        return sum(service.endswith('tf2_frames') for service, _ in
                   operator.get_service_names_and_types_by_node(name, '/'))

    buffers = []
    try:
        with Spinning(context, managed.node, operator):
            for _ in range(2):
                change(Transition.TRANSITION_CONFIGURE)
                wait_for(lambda: tf2_frames_services() == 1, 30.0, 'one tf2_frames service')
                buffers.append(weakref.ref(managed.tf_buffer))
                change(Transition.TRANSITION_CLEANUP)
                wait_for(lambda: tf2_frames_services() == 0, 10.0,
                         'cleanup to remove the tf2_frames service')
        gc.collect()
        assert [buffer() for buffer in buffers] == [None, None], 'a Buffer outlived cleanup'
    finally:
        managed.destroy()
        operator.destroy_node()


def test_a_parameter_meant_for_other_nodes_does_not_stop_the_node(context):
    """Defect 6: an override the node does not declare (a shared /** parameter file, or a
    typo) stopped it; now it is named in a WARN (``undeclared_notice``) and ignored."""
    node = DetectorNode(node_name='sparsebev_shared', context=context,
                        parameter_overrides=tiny(robot_description_package='my_robot',
                                                 score_treshold=0.2))
    try:
        assert node.active
        assert node.undeclared_parameters == ['robot_description_package', 'score_treshold']
        assert node.params.score_threshold == defaults().score_threshold \
            == node.node.get_parameter('score_threshold').value
    finally:
        node.destroy()
