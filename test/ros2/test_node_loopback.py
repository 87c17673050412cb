"""Tier 2: the real rclpy detector node on loopback (run by scripts/ros2_tier2.sh only).

A rig node publishes a generated six-camera sequence (CompressedImage JPEGs, CameraInfo,
/tf_static camera extrinsics, /tf ego poses); the detector node (tiny preset, in-process,
MultiThreadedExecutor) must answer every complete frame with a Detection3DArray and a
MarkerArray stamped with the anchor camera's stamp, in ``output_frame``, and must skip --
without crashing and without publishing -- frames it cannot place in the world.

tf2_ros is the real package built from the upstream archives (scripts/ros2_tier2.sh), or
without them the STAND-IN of test/ros2/standins.
"""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import rclpy
import simplejpeg
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rclpy.executors import MultiThreadedExecutor
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile
from std_srvs.srv import Trigger
from vision_msgs.msg import Detection3DArray
from visualization_msgs.msg import Marker, MarkerArray

import tf2_ros
from ros2_rig import (CAMERA_OFFSETS, MAX_DETECTIONS, NO_UPSTREAM, PERIOD, RIG_IMAGE_TOPICS,
                      RIG_INFO_TOPICS, T0, Listener, Rig, Spinning, stamp, wait_for)
from sparsebev_core.geometry import CAMERA_NAMES, CLASS_NAMES
from sparsebev_ros import codecs
from sparsebev_ros.node import DetectorNode


def test_tf2_ros_is_the_real_package_built_from_the_archives_or_else_the_marked_standin():
    if NO_UPSTREAM:
        assert getattr(tf2_ros, 'IS_STANDIN', False), 'tf2_ros is not the stand-in'
    else:
        assert not hasattr(tf2_ros, 'IS_STANDIN'), 'the stand-in shadows the real tf2_ros'
        assert '.ros2_build/install/' in tf2_ros.__file__ and hasattr(tf2_ros, 'BufferInterface')


@pytest.fixture(scope='module')
def ros():
    """A live graph: detector node + rig + listener spun by one MultiThreadedExecutor."""
    context = rclpy.Context()
    rclpy.init(context=context)
    overrides = [Parameter('preset', value='tiny'), Parameter('device', value='cpu'),
                 Parameter('score_threshold', value=0.0),
                 Parameter('max_detections', value=MAX_DETECTIONS),
                 Parameter('tf_timeout', value=1.0),         # world_frame: the default
                 Parameter('output_frame', value='base_link'),
                 Parameter('image_transport', value='compressed'),
                 Parameter('image_topics', value=RIG_IMAGE_TOPICS),
                 Parameter('camera_info_topics', value=RIG_INFO_TOPICS),
                 # reliable: a lost best-effort fragment on 2 busy cores would stall the test
                 Parameter('qos_reliability', value='reliable')]
    detector = DetectorNode(context=context, parameter_overrides=overrides)
    rig, listener = Rig(context), Listener(context)
    executor = MultiThreadedExecutor(num_threads=4, context=context)
    for node in (detector.node, rig.node, listener.node):
        executor.add_node(node)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    wait_for(detector.has_subscribers, what='the listener to be discovered')
    wait_for(lambda: all(p.get_subscription_count() for p in rig.image_pubs),
             what='the detector to subscribe the cameras')
    rig.publish_static()
    wait_for(lambda: (rig.publish_camera_infos(), time.sleep(0.1),
                      all(m is not None for m in detector.pipeline.assembler.camera_infos))[-1],
             what='the CameraInfos to arrive')
    yield detector, rig, listener
    executor.shutdown()
    detector.destroy()
    rig.node.destroy_node()
    listener.node.destroy_node()
    rclpy.shutdown(context=context)


def publish_and_wait(rig: Rig, listener: Listener, t_anchor: float) -> None:
    expected = codecs.seconds_to_ns(t_anchor)
    rig.publish_frame(t_anchor)
    wait_for(lambda: expected in listener.stamps_ns(), what=f'detections stamped {t_anchor}')


def test_every_frame_answered_with_anchor_stamp_and_output_frame(ros):
    detector, rig, listener = ros
    rig.publish_pose(T0 - PERIOD)
    anchors = [T0 + k * PERIOD for k in range(4)]
    for t in anchors:
        publish_and_wait(rig, listener, t)
    wait_for(lambda: len(listener.markers) >= len(anchors), 10.0, 'markers')

    with listener.lock:
        detections = list(listener.detections)
        markers = list(listener.markers)
    assert [codecs.header_stamp_ns(m) for m in detections] == \
        [codecs.seconds_to_ns(t) for t in anchors]
    for msg in detections:
        assert msg.header.frame_id == 'base_link'
        assert len(msg.detections) == MAX_DETECTIONS          # score_threshold 0: top-k boxes
        scores = [d.results[0].hypothesis.score for d in msg.detections]
        assert scores == sorted(scores, reverse=True)
        for d in msg.detections:
            assert d.header.stamp == msg.header.stamp and d.header.frame_id == 'base_link'
            assert d.results[0].hypothesis.class_id in CLASS_NAMES
            size = (d.bbox.size.x, d.bbox.size.y, d.bbox.size.z)
            assert all(np.isfinite(size)) and min(size) > 0
    assert [codecs.header_stamp_ns(m.markers[0]) for m in markers[:len(anchors)]] == \
        [codecs.seconds_to_ns(t) for t in anchors]
    for msg in markers[:len(anchors)]:
        assert msg.markers[0].action == Marker.DELETEALL
        boxes = [m for m in msg.markers if m.ns == 'boxes']
        labels = [m for m in msg.markers if m.ns == 'labels']
        assert len(boxes) == len(labels) == MAX_DETECTIONS
        assert {m.header.frame_id for m in msg.markers} == {'base_link'}
    stats = detector.pipeline.stats
    assert stats.published == len(anchors) and not stats.skipped
    # the detector's history: the 4th frame saw the three before it (0.1 s apart here)
    assert detector.detector.last_step is not None
    assert len(set(detector.detector.last_step.keys)) > 1


def test_node_publishes_what_the_offline_pipeline_computes_from_the_same_messages(ros):
    """DDS transport, the synchroniser, TF through the listener and the worker thread change
    nothing: the ROS-free pipeline (as in `sparsebev replay`) with a copy of the node's model,
    fed the messages the rig sent, gives the same boxes."""
    import copy

    from sparsebev_ros.frames import tf_buffer_lookup
    from sparsebev_ros.messages import ImportedMessages
    from sparsebev_ros.pipeline import Pipeline
    from sparsebev_ros.tf_buffer import TfBuffer

    detector, rig, listener = ros
    with listener.lock:
        published = list(listener.detections)
    frames = rig.sent_frames[:len(published)]
    assert len(frames) == len(published) == 4
    offline_detector = copy.deepcopy(detector.detector)
    offline_detector.reset()
    buffer = TfBuffer()
    for msg, static in rig.sent_tf:
        buffer.set_transform_msg(msg, static)
    offline = Pipeline(detector.params, offline_detector, tf_buffer_lookup(buffer),
                       ImportedMessages(), class_names=detector.pipeline.class_names)
    for i, info in enumerate(detector.pipeline.assembler.camera_infos):    # as received
        offline.on_camera_info(i, info)
    for images, online in zip(frames, published):
        result = offline.process(images)
        assert not hasattr(result, 'reason'), f'offline pipeline skipped: {result}'
        expected = result.detections_msg
        assert expected.header == online.header
        assert len(expected.detections) == len(online.detections)
        for e, o in zip(expected.detections, online.detections):
            assert e.results[0].hypothesis.class_id == o.results[0].hypothesis.class_id
            assert abs(e.results[0].hypothesis.score - o.results[0].hypothesis.score) < 1e-5
            for field in ('x', 'y', 'z'):
                assert abs(getattr(e.bbox.center.position, field)
                           - getattr(o.bbox.center.position, field)) < 1e-4
                assert abs(getattr(e.bbox.size, field) - getattr(o.bbox.size, field)) < 1e-4


def test_diagnostics_and_latency_topics_report_what_happened(ros):
    detector, rig, listener = ros
    latency = list(listener.latency)
    assert len(latency) >= 4
    # stamped like the detections they describe, so a bag lines them up with the images
    assert [codecs.header_stamp_ns(m) for m in latency[:4]] == listener.stamps_ns()[:4]
    for msg in latency:
        values = {kv.key: float(kv.value) for kv in msg.status[0].values}
        assert {'assemble_ms', 'detector_ms', 'total_ms', 'end_to_end_ms'} <= set(values)
        assert values['total_ms'] > 0

    def latest_status() -> DiagnosticStatus | None:
        for msg in reversed(list(listener.diagnostics)):
            for status in msg.status:
                if status.name == 'sparsebev: detector':
                    return status
        return None

    wait_for(lambda: latest_status() is not None
             and {kv.key: kv.value for kv in latest_status().values}.get('published') == '4',
             10.0, 'a diagnostics message counting the four published frames')
    status = latest_status()
    values = {kv.key: kv.value for kv in status.values}
    assert status.hardware_id == 'tiny'
    assert values['synced'] == '4' and values['errors'] == '0'
    assert float(values['latency_total_p50_ms']) > 0


def test_reset_service_clears_temporal_memory(ros):
    detector, rig, listener = ros
    assert listener.reset_client.wait_for_service(timeout_sec=10.0)
    future = listener.reset_client.call_async(Trigger.Request())
    wait_for(future.done, 10.0, 'the ~/reset response')
    assert future.result().success
    assert detector.pipeline.stats.resets['explicit'] == 1
    t = T0 + 10 * PERIOD
    publish_and_wait(rig, listener, t)
    step = detector.detector.last_step
    assert step.reset_reason                                  # memory was cleared first
    assert set(step.keys) == {step.keys[0]}                   # cold start: current frame only


def test_missing_camera_is_a_degraded_frame_stale_tf_publishes_nothing_node_keeps_running(ros):
    detector, rig, listener = ros
    before = len(listener.stamps_ns())
    skipped_before = sum(detector.pipeline.stats.skipped.values())

    # CAM_BACK never arrives: after sync_max_wait (steady-clock poll) the set goes ahead
    # without it, published and reported as degraded
    t_missing = T0 + 20 * PERIOD
    rig.publish_frame(t_missing, cameras=[0, 1, 2, 4, 5])
    wait_for(lambda: codecs.seconds_to_ns(t_missing) in listener.stamps_ns(), 30.0,
             'the degraded frame')
    assert detector.pipeline.stats.missing_cameras['CAM_BACK/late'] == 1
    status = detector.diagnostic_status()
    values = {kv.key: kv.value for kv in status.values}
    assert values['degraded'] == '1' and values['missing_CAM_BACK/late'] == '1'
    assert 'DEGRADED' in status.message and 'CAM_BACK (late)' in status.message
    # ego poses stop 30 s before this frame: every lookup would be extrapolation
    t_stale = T0 + 50.0
    rig.publish_camera_infos()
    rig.publish_images(t_stale)
    wait_for(lambda: sum(detector.pipeline.stats.skipped.values()) > skipped_before, 30.0,
             'the stale-TF frame to be skipped')
    assert detector.pipeline.stats.skipped['tf_extrapolation'] >= 1

    # the node is alive and the next good frame is published (after the gap: memory reset)
    t_good = T0 + 50.0 + PERIOD
    rig.publish_pose(t_good - PERIOD)
    publish_and_wait(rig, listener, t_good)
    stamps = listener.stamps_ns()
    assert codecs.seconds_to_ns(t_stale) not in stamps
    assert stamps[before:] == [codecs.seconds_to_ns(t_missing), codecs.seconds_to_ns(t_good)]


def destroy_output_subscriptions(listener: Listener) -> None:
    """Destroy the listener's output subscriptions with its node out of the executor first:
    destroying an entity that a spinning executor's wait set holds races it (rclpy raises
    InvalidHandle in the spin thread, which then dies; ros2/rclpy#1284)."""
    executor = listener.node.executor
    executor.remove_node(listener.node)          # wakes the executor, which rebuilds its wait set
    time.sleep(1.0)
    for subscription in listener.subscriptions:
        listener.node.destroy_subscription(subscription)
    listener.subscriptions = []
    executor.add_node(listener.node)


def test_no_inference_without_subscribers(ros):
    detector, rig, listener = ros
    destroy_output_subscriptions(listener)
    wait_for(lambda: not detector.has_subscribers(), 10.0, 'the subscriptions to vanish')
    synced_before = detector.pipeline.stats.synced
    skipped_before = detector.counters['no_subscribers']
    t = T0 + 60.0
    rig.publish_pose(t - PERIOD)
    rig.publish_frame(t)
    wait_for(lambda: detector.counters['no_subscribers'] > skipped_before, 20.0,
             'the frame to be skipped for lack of subscribers')
    assert detector.pipeline.stats.synced == synced_before


def test_corrupt_jpeg_and_time_going_backwards_are_survived(ros):
    detector, rig, listener = ros
    listener.subscriptions = [     # subscribe again (the previous test removed them)
        listener.node.create_subscription(Detection3DArray, '/sparsebev/detections',
                                          listener._on_det, QoSProfile(depth=50)),
        listener.node.create_subscription(MarkerArray, '/sparsebev/markers',
                                          listener._on_markers, QoSProfile(depth=50))]
    wait_for(detector.has_subscribers, 10.0, 'the listener to subscribe again')
    stats = detector.pipeline.stats
    t_good = T0 + 70.0
    rig.publish_pose(t_good - PERIOD)
    publish_and_wait(rig, listener, t_good)

    # a truncated JPEG on CAM_FRONT_LEFT: that camera is missing (decode_error), the frame
    # is published degraded without it
    decode_errors = stats.missing_cameras['CAM_FRONT_LEFT/decode_error']
    t_corrupt = t_good + PERIOD
    rig.jpegs[2], good_jpeg = rig.jpegs[2][:200], rig.jpegs[2]
    try:
        rig.publish_frame(t_corrupt)
        wait_for(lambda: stats.missing_cameras['CAM_FRONT_LEFT/decode_error'] > decode_errors,
                 30.0, 'the decode error')
    finally:
        rig.jpegs[2] = good_jpeg

    # a bag loop: time jumps back 1 s; the node resets its memory and goes on publishing
    backwards = stats.resets['time_backwards']
    t_back = t_good - 1.0
    rig.publish_pose(t_back - PERIOD)
    publish_and_wait(rig, listener, t_back)
    assert stats.resets['time_backwards'] == backwards + 1
    assert codecs.seconds_to_ns(t_corrupt) in listener.stamps_ns()


@pytest.mark.parametrize('name, value, expected', [
    ('sync_window', -0.1, "'sync_window'"),
    ('preset', 'r50_nuimg', "'preset' must be one of"),
    ('image_topics', ['/a', '/b'], "'image_topics' has 2 topics but camera_names has 6"),
    # ranges are also in the descriptors now: the schema's message comes first all the same
    ('max_detections', 0, "'max_detections' must be >= 1"),
    ('score_thresholds.car', 1.5, "'score_thresholds' entry 'car' must be <= 1.0"),
    ('score_thresholds.car', 0, "'score_thresholds.car' must be a floating-point number"),
])
def test_invalid_parameters_fail_at_start_up_naming_the_parameter(ros, name, value, expected):
    from sparsebev_ros.params import ParameterError
    context = ros[0].node.context
    with pytest.raises(ParameterError, match=expected):
        DetectorNode(node_name='sparsebev_bad', context=context,
                     parameter_overrides=[Parameter(name, value=value)])


def test_raw_images_with_the_default_best_effort_qos(ros):
    """``image_transport: raw`` (sensor_msgs/Image, bgr8) and the default sensor-data QoS: a
    second node on the same graph detects from uncompressed images. Best effort may lose a
    large message on a busy machine, so the rig streams frames until one is answered, as a
    live camera would."""
    from sensor_msgs.msg import Image

    detector, rig, listener = ros
    raw = DetectorNode(node_name='sparsebev_raw', context=detector.node.context,
                       parameter_overrides=[Parameter('preset', value='tiny'),
                                            Parameter('device', value='cpu'),
                                            Parameter('image_transport', value='raw'),
                                            Parameter('image_topics', value=RIG_IMAGE_TOPICS),
                                            Parameter('camera_info_topics', value=RIG_INFO_TOPICS),
                                            Parameter('tf_timeout', value=1.0),
                                            Parameter('score_threshold', value=0.0),
                                            Parameter('max_detections', value=5),
                                            Parameter('skip_when_no_subscribers', value=False)])
    assert raw.params.qos_reliability == 'best_effort'
    received: list[Detection3DArray] = []
    sub = listener.node.create_subscription(Detection3DArray, '/sparsebev_raw/detections',
                                            received.append, QoSProfile(depth=10))
    image_pubs = [rig.node.create_publisher(Image, topic, 10) for topic in RIG_IMAGE_TOPICS]
    try:
        with Spinning(detector.node.context, raw.node):
            wait_for(lambda: all(p.get_subscription_count() for p in image_pubs), 20.0,
                     'the raw node to subscribe')
            rgb = [simplejpeg.decode_jpeg(j, colorspace='RGB') for j in rig.jpegs]
            t = T0 + 80.0
            rig.publish_pose(t - PERIOD)
            sent = []
            for attempt in range(10):
                rig.publish_pose(t + PERIOD)
                rig.publish_camera_infos()
                for i, pub in enumerate(image_pubs):
                    msg = Image(**codecs.rgb_to_image_fields(rgb[i], 'bgr8'))
                    msg.header.stamp = stamp(t + CAMERA_OFFSETS[i])
                    msg.header.frame_id = f'{CAMERA_NAMES[i].lower()}_optical'
                    pub.publish(msg)
                sent.append(codecs.seconds_to_ns(t))
                try:
                    wait_for(lambda: bool(received), 5.0, 'detections from raw images')
                    break
                except AssertionError:
                    t += PERIOD
            assert received, f'no detections from raw images after {len(sent)} frames'
            msg = received[0]
            assert codecs.header_stamp_ns(msg) in sent
            assert msg.header.frame_id == 'base_link' and len(msg.detections) == 5
    finally:
        raw.destroy()
        listener.node.destroy_subscription(sub)


def test_diagnostics_keep_coming_with_sim_time_and_no_clock(ros):
    """The diagnostics timer runs on the wall clock: with use_sim_time and nothing on /clock
    (a paused bag), a ROS-clock timer would never fire."""
    detector, rig, listener = ros
    node = DetectorNode(node_name='sparsebev_simtime', context=detector.node.context,
                        detector=detector.detector,
                        parameter_overrides=[Parameter('use_sim_time', value=True),
                                             Parameter('image_topics', value=['/simtime' + t for t in RIG_IMAGE_TOPICS]),
                                             Parameter('camera_info_topics', value=RIG_INFO_TOPICS)])
    try:
        assert node.node.get_clock().now().nanoseconds == 0          # no /clock: time stands
        seen = []
        sub = listener.node.create_subscription(
            DiagnosticArray, '/diagnostics',
            lambda m: seen.extend(s for s in m.status if s.name == 'sparsebev_simtime: detector'),
            QoSProfile(depth=20))
        with Spinning(detector.node.context, node.node):
            wait_for(lambda: len(seen) >= 2, 20.0, 'two diagnostics from the sim-time node')
        listener.node.destroy_subscription(sub)
        assert 'no camera sets in 5 s' in seen[-1].message
    finally:
        node.destroy()


def test_runtime_parameters_change_the_output_and_invalid_ones_are_refused(ros):
    detector, rig, listener = ros
    node = detector.node
    results = node.set_parameters([Parameter('score_threshold', value=1.5)])
    # refused by rclpy already: the descriptor carries the schema's range
    assert not results[0].successful and 'score_threshold out of range' in results[0].reason
    assert 'Max: 1.0' in results[0].reason
    results = node.set_parameters([Parameter('preset', value='r50_nuimg_704x256')])
    assert not results[0].successful                                  # read-only
    results = node.set_parameters([Parameter('classes', value=['car', 'dog'])])
    assert not results[0].successful and 'dog' in results[0].reason
    assert detector.pipeline.params.score_threshold == 0.0            # nothing changed
    assert detector.pipeline.params.classes == ['all']

    results = node.set_parameters([Parameter('score_threshold', value=1.0),
                                   Parameter('publish_markers', value=False)])
    assert all(r.successful for r in results), results
    assert node.get_parameter('score_threshold').value == 1.0
    try:
        markers_before = len(listener.markers)
        t = T0 + 90.0
        rig.publish_pose(t - PERIOD)
        publish_and_wait(rig, listener, t)
        with listener.lock:
            latest = listener.detections[-1]
        assert len(latest.detections) == 0                            # nothing scores 1.0
        time.sleep(0.5)
        assert len(listener.markers) == markers_before                # markers switched off
    finally:
        results = node.set_parameters([Parameter('score_threshold', value=0.0),
                                       Parameter('publish_markers', value=True)])
        assert all(r.successful for r in results)

    # per class (score_thresholds.<class>): 1.0 for every class empties the output as well
    from sparsebev_core.geometry import CLASS_NAMES
    names = [f'score_thresholds.{c}' for c in CLASS_NAMES]
    results = node.set_parameters([Parameter('score_thresholds.car', value=1.5)])
    assert not results[0].successful and 'score_thresholds.car out of range' in results[0].reason
    assert detector.params.score_thresholds == {}
    results = node.set_parameters([Parameter(name, value=1.0) for name in names])
    assert all(r.successful for r in results), results
    assert detector.pipeline.params.score_thresholds == dict.fromkeys(CLASS_NAMES, 1.0)
    try:
        t = T0 + 92.0
        rig.publish_pose(t - PERIOD)
        publish_and_wait(rig, listener, t)
        with listener.lock:
            assert len(listener.detections[-1].detections) == 0
    finally:           # the entries cannot be unset again: back to the global threshold's value
        results = node.set_parameters([Parameter(name, value=0.0) for name in names])
        assert all(r.successful for r in results)


class FailingDetector:
    """Fails every frame the same way (say, a broken CUDA install)."""
    cfg = None

    def __init__(self) -> None:
        self.calls = 0

    def step(self, frame):
        self.calls += 1
        raise RuntimeError('CUDA error: no kernel image is available for execution')

    def reset(self, reason=''):
        pass


def test_the_same_error_on_every_frame_turns_the_diagnostics_to_error(ros):
    from sparsebev_ros.node import ERROR_STREAK

    detector, rig, listener = ros
    failing = FailingDetector()
    node = DetectorNode(node_name='sparsebev_failing', context=detector.node.context,
                        detector=failing,
                        parameter_overrides=[Parameter('image_topics', value=RIG_IMAGE_TOPICS),
                                             Parameter('camera_info_topics', value=RIG_INFO_TOPICS),
                                             Parameter('tf_timeout', value=1.0),
                                             Parameter('qos_reliability', value='reliable'),
                                             Parameter('skip_when_no_subscribers', value=False)])
    try:
        with Spinning(detector.node.context, node.node):
            wait_for(lambda: all(m is not None for m in node.pipeline.assembler.camera_infos)
                     or (rig.publish_camera_infos(), time.sleep(0.2), False)[-1], 20.0,
                     'CameraInfo at the failing node')
            t = T0 + 100.0
            rig.publish_pose(t - PERIOD)
            for k in range(ERROR_STREAK + 2):
                rig.publish_frame(t + k * PERIOD)
                wait_for(lambda: failing.calls > k or node.counters['error'] > k, 20.0,
                         f'frame {k} at the failing node')
            assert node.error_streak.escalated
            status = node.diagnostic_status()
            assert status.level == DiagnosticStatus.ERROR
            assert 'CUDA error' in status.message and "'device'" in status.message
    finally:
        node.destroy()


def test_autoware_objects_match_the_detections(ros):
    """``publish_autoware_objects``: ``~/objects`` (the real autoware_perception_msgs build)
    carries the same boxes as ``~/detections``, stamped and framed alike."""
    from autoware_perception_msgs.msg import DetectedObjects, ObjectClassification, Shape

    detector, rig, listener = ros
    node = DetectorNode(node_name='sparsebev_autoware', context=detector.node.context,
                        parameter_overrides=[Parameter('preset', value='tiny'),
                                             Parameter('device', value='cpu'),
                                             Parameter('publish_autoware_objects', value=True),
                                             Parameter('image_topics', value=RIG_IMAGE_TOPICS),
                                             Parameter('camera_info_topics', value=RIG_INFO_TOPICS),
                                             Parameter('tf_timeout', value=1.0),
                                             Parameter('score_threshold', value=0.0),
                                             Parameter('max_detections', value=7),
                                             Parameter('qos_reliability', value='reliable')])
    objects: list = []
    detections: list = []
    subs = [listener.node.create_subscription(DetectedObjects, '/sparsebev_autoware/objects',
                                              objects.append, QoSProfile(depth=10)),
            listener.node.create_subscription(Detection3DArray, '/sparsebev_autoware/detections',
                                              detections.append, QoSProfile(depth=10))]
    try:
        with Spinning(detector.node.context, node.node):
            wait_for(lambda: node.has_subscribers()
                     and all(m is not None for m in node.pipeline.assembler.camera_infos)
                     or (rig.publish_camera_infos(), time.sleep(0.2), False)[-1], 30.0,
                     'the Autoware node to be ready')
            t = T0 + 120.0
            rig.publish_pose(t - PERIOD)
            rig.publish_frame(t)
            wait_for(lambda: bool(objects) and bool(detections), 60.0, '~/objects')
        msg, det = objects[0], detections[0]
        assert msg.header == det.header and len(msg.objects) == len(det.detections) == 7
        for obj, d in zip(msg.objects, det.detections):
            assert obj.shape.type == Shape.BOUNDING_BOX
            assert abs(obj.existence_probability - d.results[0].hypothesis.score) < 1e-6
            assert obj.classification[0].label <= ObjectClassification.PEDESTRIAN
            assert abs(obj.kinematics.pose_with_covariance.pose.position.x
                       - d.bbox.center.position.x) < 1e-6
            assert abs(obj.shape.dimensions.x - d.bbox.size.x) < 1e-6
    finally:
        for sub in subs:
            listener.node.destroy_subscription(sub)
        node.destroy()
