"""Tier 2: ``qos_overrides`` parameters change the QoS of the node's real entities (the
review of 2026-12, defect 6: the keys were accepted and silently did nothing), as a probe node
sees them on the graph, with the real Jazzy rclpy and Fast DDS."""
from __future__ import annotations

import pytest
import rclpy
from rclpy.parameter import Parameter
from rclpy.qos import ReliabilityPolicy

from ros2_rig import IdleDetector, wait_for

NAME = 'sparsebev_qos'
IMAGES = [f'/qos/cam{i}/image_raw' for i in range(6)]
INFOS = [f'/qos/cam{i}/camera_info' for i in range(6)]


def override(topic: str, entity: str, policy: str, value) -> Parameter:
    return Parameter(f'qos_overrides.{topic}.{entity}.{policy}', value=value)


def test_qos_overrides_reach_the_image_camera_info_and_output_entities(context):
    from sparsebev_ros.node import DetectorNode
    front = IMAGES[0] + '/compressed'
    detections = f'/{NAME}/detections'
    node = DetectorNode(node_name=NAME, detector=IdleDetector(), context=context,
                        parameter_overrides=[
                            Parameter('image_topics', value=IMAGES),
                            Parameter('camera_info_topics', value=INFOS),
                            # defaults: inputs best effort, outputs reliable (depth 5)
                            override(front, 'subscription', 'reliability', 'reliable'),
                            override(front, 'subscription', 'depth', 2),
                            override(INFOS[0], 'subscription', 'reliability', 'reliable'),
                            override(detections, 'publisher', 'reliability', 'best_effort'),
                            override(detections, 'publisher', 'depth', 1),
                            override('/nowhere', 'publisher', 'depth', 1)])  # warned, ignored
    probe = rclpy.create_node('sparsebev_qos_probe', context=context)

    def seen(topic: str, publishers: bool):
        """The node's endpoint on ``topic`` as the probe sees it on the graph."""
        infos = (probe.get_publishers_info_by_topic if publishers
                 else probe.get_subscriptions_info_by_topic)(topic)
        mine = [info for info in infos if info.node_name == NAME]
        return mine[0].qos_profile if mine else None

    try:
        for topic, publishers in ((front, False), (IMAGES[1] + '/compressed', False),
                                  (INFOS[0], False), (INFOS[1], False), (detections, True),
                                  (f'/{NAME}/markers', True)):
            wait_for(lambda: seen(topic, publishers) is not None, 30.0, f'{topic} on the graph')
        assert seen(front, False).reliability == ReliabilityPolicy.RELIABLE
        assert seen(IMAGES[1] + '/compressed', False).reliability == ReliabilityPolicy.BEST_EFFORT
        assert seen(INFOS[0], False).reliability == ReliabilityPolicy.RELIABLE
        assert seen(INFOS[1], False).reliability == ReliabilityPolicy.BEST_EFFORT
        assert seen(detections, True).reliability == ReliabilityPolicy.BEST_EFFORT
        assert seen(f'/{NAME}/markers', True).reliability == ReliabilityPolicy.RELIABLE
        # depth is not carried by discovery: the entity's own profile, and the parameter
        assert node.image_subscribers[0].qos_profile.depth == 2
        assert node.detections_pub.qos_profile.depth == 1
        assert node.markers_pub.qos_profile.depth == 5
        assert node.node.get_parameter(f'qos_overrides.{front}.subscription.depth').value == 2
        assert not node.node.has_parameter('qos_overrides./nowhere.publisher.depth')
    finally:
        probe.destroy_node()
        node.destroy()


@pytest.mark.parametrize('policy, value, expected', [
    ('reliability', 'sometimes', 'must be one of system_default, reliable, best_effort'),
    ('depth', 'two', 'must be a count >= 0'),
    ('depth', -1, 'must be a count >= 0'),
    ('history', 7, 'must be one of system_default, keep_last, keep_all'),
])
def test_an_invalid_qos_override_stops_the_node_at_start_up_naming_it(context, policy, value,
                                                                      expected):
    """rclpy would raise a bare RuntimeError (or an assert) deep in the entity's creation,
    half-way through configure or activate; the node refuses it with the others."""
    from sparsebev_ros.node import DetectorNode
    from sparsebev_ros.params import ParameterError
    key = f'qos_overrides.{IMAGES[0]}/compressed.subscription.{policy}'
    with pytest.raises(ParameterError, match=f"parameter '{key}' {expected}"):
        DetectorNode(node_name=NAME, detector=IdleDetector(), context=context, lifecycle=True,
                     parameter_overrides=[Parameter('image_topics', value=IMAGES),
                                          Parameter('camera_info_topics', value=INFOS),
                                          Parameter(key, value=value)])
