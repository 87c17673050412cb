"""Tier 2: the node's services answer while a frame runs, and a parameter set is applied only
once the whole set is accepted (the review of 2026-12, defect 9), with the real Jazzy rclpy.

A frame holds the pipeline lock for its whole length (inference plus the TF waits). The
parameter and lifecycle services share the node's default callback group: a parameter callback
that waited for that lock held the group, so ``ros2 param set`` and ``ros2 lifecycle get``
hung until the frame ended.
"""
from __future__ import annotations

import threading
import time

import numpy as np
import rclpy
from lifecycle_msgs.srv import GetState
from rcl_interfaces.msg import SetParametersResult
from rcl_interfaces.srv import SetParameters
from rclpy.parameter import Parameter
from std_srvs.srv import Trigger

from ros2_rig import (PERIOD, RIG_IMAGE_TOPICS, RIG_INFO_TOPICS, T0, WORLD_FRAME, IdleDetector,
                      Rig, Spinning, wait_for)
from sparsebev_core.frame import Detections
from sparsebev_ros.params import defaults

ANSWER_S = 15.0          # a service must answer within this while the frame is held


class HeldDetector:
    """A detector whose ``step`` waits until released: a slow frame (a large model, a long
    TF wait) that lasts as long as the test wants."""
    cfg = None

    def __init__(self) -> None:
        self.inside, self.release = threading.Event(), threading.Event()
        self.score_threshold = 0.0
        self.resets: list[str] = []

    def step(self, frame):
        self.inside.set()
        if not self.release.wait(120.0):
            raise RuntimeError('the test never released the frame')
        return Detections(np.zeros((0, 9)), np.zeros(0), np.zeros(0, np.int64), stamp=frame.stamp)

    def reset(self, reason=''):
        self.resets.append(reason)


def rig_parameters() -> list[Parameter]:
    return [Parameter('image_topics', value=RIG_IMAGE_TOPICS),
            Parameter('camera_info_topics', value=RIG_INFO_TOPICS),
            Parameter('world_frame', value=WORLD_FRAME), Parameter('base_frame', value='base_link'),
            Parameter('output_frame', value='base_link'), Parameter('tf_timeout', value=1.0),
            Parameter('qos_reliability', value='reliable'),
            Parameter('skip_when_no_subscribers', value=False)]


def call(probe, srv_type, name: str, request):
    """An asynchronous service call from the probe (the executor spins it)."""
    client = probe.create_client(srv_type, name)
    if not client.wait_for_service(timeout_sec=30.0):
        raise RuntimeError(f'no service {name}')
    return client.call_async(request)


def test_parameter_lifecycle_and_reset_services_answer_while_a_frame_runs(context):
    from sparsebev_ros.node import DetectorNode
    name = 'sparsebev_busy'
    held = HeldDetector()
    managed = DetectorNode(node_name=name, lifecycle=True, detector=held, context=context,
                           parameter_overrides=rig_parameters())
    rig = Rig(context)
    probe = rclpy.create_node('sparsebev_busy_probe', context=context)
    before = defaults().score_threshold
    try:
        with Spinning(context, managed.node, rig.node, probe):
            managed.node.trigger_configure()
            managed.node.trigger_activate()
            assert managed.active
            rig.publish_static()
            wait_for(lambda: all(m is not None for m in managed.pipeline.assembler.camera_infos)
                     or (rig.publish_camera_infos(), time.sleep(0.2), False)[-1], 30.0,
                     'CameraInfo at the node')
            t = T0 + 300.0
            rig.publish_pose(t - PERIOD)
            rig.publish_frame(t)
            assert held.inside.wait(60.0), f'no frame reached the detector: {managed.pipeline.stats}'

            # the frame is running: ros2 param set, ros2 lifecycle get and ~/reset answer
            set_future = call(probe, SetParameters, f'/{name}/set_parameters',
                              SetParameters.Request(parameters=[
                                  Parameter('score_threshold', value=0.7).to_parameter_msg()]))
            state_future = call(probe, GetState, f'/{name}/get_state', GetState.Request())
            reset_future = call(probe, Trigger, f'/{name}/reset', Trigger.Request())
            wait_for(lambda: set_future.done() and state_future.done() and reset_future.done(),
                     ANSWER_S, 'the services to answer during the frame')
            assert not held.release.is_set()
            assert set_future.result().results[0].successful
            assert state_future.result().current_state.label == 'active'
            assert reset_future.result().success
            assert managed.node.get_parameter('score_threshold').value == 0.7
            # the frame in flight keeps the parameters and memory it started with
            assert managed.pipeline.params.score_threshold == before
            assert held.resets == []

            held.release.set()                   # the frame ends: the changes apply after it
            wait_for(lambda: managed.pipeline.params.score_threshold == 0.7
                     and held.resets == ['explicit'], 30.0, 'the changes after the frame')
            assert held.score_threshold == 0.7
    finally:
        held.release.set()
        managed.destroy()
        rig.node.destroy_node()
        probe.destroy_node()


def test_a_parameter_set_that_a_later_callback_refuses_changes_nothing(context):
    """rclpy runs every on-set callback before it sets anything; ours runs first (it is added
    last, and rclpy inserts at the front), rclpy's own (the TimeSource's, for ``use_sim_time``)
    after it. A refusal there must leave the pipeline as it was: ours only validates, the
    post-set callback applies."""
    from sparsebev_ros.node import DetectorNode
    detector = DetectorNode(node_name='sparsebev_atomic', detector=IdleDetector(),
                            context=context, parameter_overrides=rig_parameters())
    node = detector.node

    def refuses(parameters):               # where rclpy's TimeSource callback sits
        return SetParametersResult(successful=False, reason='refused by a later callback')
    node._on_set_parameters_callbacks.append(refuses)
    try:
        result = node.set_parameters_atomically([Parameter('score_threshold', value=0.9),
                                                 Parameter('publish_markers', value=False)])
        assert not result.successful and result.reason == 'refused by a later callback'
        assert node.get_parameter('score_threshold').value == defaults().score_threshold
        assert detector.params.score_threshold == defaults().score_threshold
        assert detector.pipeline.params.score_threshold == defaults().score_threshold
        assert detector.pipeline.params.publish_markers is True

        node._on_set_parameters_callbacks.remove(refuses)
        result = node.set_parameters_atomically([Parameter('score_threshold', value=0.9),
                                                 Parameter('publish_markers', value=False)])
        assert result.successful, result.reason
        assert detector.pipeline.params.score_threshold == 0.9
        assert detector.pipeline.params.publish_markers is False
        # our own refusal (a class the detector lacks) still names the parameter
        result = node.set_parameters([Parameter('classes', value=['car', 'unicorn'])])[0]
        assert not result.successful and 'unicorn' in result.reason
        assert detector.pipeline.params.classes == ['all']
    finally:
        detector.destroy()


def test_without_a_post_set_callback_as_on_humble_the_on_set_callback_applies(context,
                                                                               monkeypatch):
    """Humble's rclpy has no ``add_post_set_parameters_callback``: the validating callback
    applies the set itself, still between frames."""
    from rclpy.node import Node

    from sparsebev_ros.node import DetectorNode
    monkeypatch.delattr(Node, 'add_post_set_parameters_callback')
    detector = DetectorNode(node_name='sparsebev_humble_params', detector=IdleDetector(),
                            context=context, parameter_overrides=rig_parameters())
    try:
        assert detector._apply_on_set
        result = detector.node.set_parameters([Parameter('score_threshold', value=0.8)])[0]
        assert result.successful and detector.pipeline.params.score_threshold == 0.8
        result = detector.node.set_parameters([Parameter('score_threshold', value=2.0)])[0]
        assert not result.successful and detector.pipeline.params.score_threshold == 0.8
    finally:
        detector.destroy()
