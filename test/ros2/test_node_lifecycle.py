"""Tier 2: the managed (lifecycle) detector node driven through its transitions by the real
``lifecycle_msgs`` services on loopback: configure loads and warms up the model, activate
subscribes, deactivate stops inference but keeps the model, cleanup frees it."""
from __future__ import annotations

import gc
import weakref

import pytest
import rclpy
from lifecycle_msgs.msg import State, Transition
from lifecycle_msgs.srv import ChangeState, GetState
from rclpy.parameter import Parameter

from ros2_rig import Spinning, wait_for
from sparsebev_ros.node import DetectorNode

NAME = 'sparsebev_managed'
IMAGE_TOPICS = [f'/managed/cam{i}/image_raw' for i in range(6)]
INFO_TOPICS = [f'/managed/cam{i}/camera_info' for i in range(6)]


@pytest.fixture()
def graph():
    context = rclpy.Context()
    rclpy.init(context=context)
    managed = DetectorNode(node_name=NAME, lifecycle=True, context=context,
                           parameter_overrides=[Parameter('preset', value='tiny'),
                                                Parameter('device', value='cpu'),
                                                Parameter('image_topics', value=IMAGE_TOPICS),
                                                Parameter('camera_info_topics', value=INFO_TOPICS)])
    operator = rclpy.create_node('sparsebev_operator', context=context)
    try:
        with Spinning(context, managed.node, operator):
            yield managed, operator
    finally:
        managed.destroy()
        operator.destroy_node()
        rclpy.shutdown(context=context)


def call(operator, service_type, name, request):
    client = operator.create_client(service_type, f'/{NAME}/{name}')
    assert client.wait_for_service(timeout_sec=30.0), f'no /{NAME}/{name} service'
    future = client.call_async(request)
    wait_for(future.done, 120.0, f'the {name} response')
    operator.destroy_client(client)
    return future.result()


def transition(operator, transition_id) -> bool:
    return call(operator, ChangeState, 'change_state',
                ChangeState.Request(transition=Transition(id=transition_id))).success


def state(operator) -> int:
    return call(operator, GetState, 'get_state', GetState.Request()).current_state.id


def subscribed(operator) -> bool:
    return any(info.node_name == NAME for topic in (IMAGE_TOPICS[0] + '/compressed', INFO_TOPICS[0])
               for info in operator.get_subscriptions_info_by_topic(topic))


def test_transitions_load_subscribe_stop_and_free(graph):
    managed, operator = graph
    assert state(operator) == State.PRIMARY_STATE_UNCONFIGURED
    assert not managed.configured and not hasattr(managed, 'detector')

    assert transition(operator, Transition.TRANSITION_CONFIGURE)
    assert state(operator) == State.PRIMARY_STATE_INACTIVE
    assert managed.configured and managed.detector is not None    # loaded and warmed up
    assert managed.detector.cached_keys == []                    # the warm-up is forgotten
    assert not subscribed(operator)
    detector = weakref.ref(managed.detector)

    assert transition(operator, Transition.TRANSITION_ACTIVATE)
    assert state(operator) == State.PRIMARY_STATE_ACTIVE
    wait_for(lambda: subscribed(operator), 20.0, 'the camera subscriptions')
    assert managed._worker is not None and managed._worker.is_alive()

    assert transition(operator, Transition.TRANSITION_DEACTIVATE)
    assert state(operator) == State.PRIMARY_STATE_INACTIVE
    wait_for(lambda: not subscribed(operator), 20.0, 'the subscriptions to go')
    assert managed._worker is None and managed.detector is detector()   # not unloaded

    assert transition(operator, Transition.TRANSITION_ACTIVATE)        # and back again
    wait_for(lambda: subscribed(operator), 20.0, 'the camera subscriptions again')
    assert transition(operator, Transition.TRANSITION_DEACTIVATE)

    assert transition(operator, Transition.TRANSITION_CLEANUP)
    assert state(operator) == State.PRIMARY_STATE_UNCONFIGURED
    gc.collect()
    assert detector() is None, 'cleanup left the model in memory'
    assert not operator.get_publishers_info_by_topic(f'/{NAME}/detections')


def test_runtime_parameters_are_validated_before_configure_too(graph):
    managed, operator = graph
    result = managed.node.set_parameters([Parameter('marker_style', value='spheres')])[0]
    assert not result.successful and "'marker_style' must be one of" in result.reason
    assert managed.node.set_parameters([Parameter('marker_style', value='cubes')])[0].successful
    assert managed.params.marker_style == 'cubes'
