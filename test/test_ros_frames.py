"""FrameAssembler and Pipeline: every skip reason and reset rule, and never a made-up pose.

Messages are rosbags dataclasses (the same attribute paths as rclpy messages); transforms
come from our TfBuffer. The detector is a recording stand-in (not SparseBEV) returning the
closed-form truth of the drive in ``ros_scene``.
"""
import numpy as np
import pytest

from ros_scene import (CAMERA_OFFSET_NS, FRAME_PERIOD_NS, HEIGHT, K, WIDTH, PerfectDriveDetector,
                       T_ego_cam, T_world_ego, camera_stamp, jpeg, truth_in)
from sparsebev_core import resets
from sparsebev_core.frame import InvalidFrameError
from sparsebev_core.geometry import CAMERA_NAMES, invert_transform, nuscenes_lidar_to_ego
from sparsebev_ros.backpressure import ThrottledLogger
from sparsebev_ros.codecs import matrix_to_translation_quat
from sparsebev_ros.frames import FrameAssembler, Skip, tf_buffer_lookup
from sparsebev_ros.messages import RosbagsMessages, header, ros2_typestore
from sparsebev_ros.params import ParameterError, validate
from sparsebev_ros.pipeline import Pipeline, PipelineResult, streaming_options
from sparsebev_ros.tf_buffer import TfBuffer

F = RosbagsMessages(ros2_typestore('humble'))


def put(tf, parent, child, T, stamp, static=False):
    t, q = matrix_to_translation_quat(T)
    tf.set_transform(parent, child, stamp, t, q, static)


def make_tf(frames=range(20), static=True):
    tf = TfBuffer()
    if static:
        for i, name in enumerate(CAMERA_NAMES):
            put(tf, 'base_link', name, T_ego_cam(i), 0, static=True)
        put(tf, 'base_link', 'LIDAR_TOP', nuscenes_lidar_to_ego(), 0, static=True)
    for f in frames:
        for i in range(6):
            s = camera_stamp(f, i)
            put(tf, 'odom', 'base_link', T_world_ego(s), s)
    return tf


def image(f, i, stamp=None, data=None, scale=1):
    stamp = camera_stamp(f, i) if stamp is None else stamp
    data = jpeg(f * 6 + i, WIDTH * scale, HEIGHT * scale) if data is None else data
    return F.new('sensor_msgs/msg/CompressedImage', header=header(F, stamp, CAMERA_NAMES[i]),
                 format='jpeg', data=np.frombuffer(data, np.uint8))


def info(i, k=None, scale=1, d=(0.0,) * 5):
    Ks = K() if k is None else np.asarray(k, float)
    Ks = Ks * [[scale], [scale], [1]]
    return F.new('sensor_msgs/msg/CameraInfo', header=header(F, 0, CAMERA_NAMES[i]),
                 height=HEIGHT * scale, width=WIDTH * scale, distortion_model='plumb_bob',
                 d=np.asarray(d, float), k=Ks.reshape(-1), p=np.zeros(12))


def frame_images(f, **kw):
    return [image(f, i, **kw) for i in range(6)]


def pipeline(tf=None, detector=None, log=None, **params):
    """A pipeline over the six cameras; ``min_cameras=6`` unless given: any camera problem
    skips the frame (the degraded-frame rule has its own tests below)."""
    p = validate({'min_cameras': 6, **params})
    det = detector or PerfectDriveDetector()
    pipe = Pipeline(p, det, tf_buffer_lookup(tf or make_tf()), F, log=log)
    for i in range(6):
        pipe.on_camera_info(i, info(i))
    return pipe, det


# ------------------------------------------------------------------ the assembled frame
def test_frame_carries_poses_at_each_image_stamp_and_the_anchor_stamp():
    assembler = FrameAssembler(validate({}), tf_buffer_lookup(make_tf()))
    for i in range(6):
        assembler.set_camera_info(i, info(i))
    frame = assembler.assemble(frame_images(3))
    assert not isinstance(frame, Skip), frame
    assert frame.stamp == pytest.approx(camera_stamp(3, 0) / 1e9)
    np.testing.assert_allclose(frame.T_world_ego, T_world_ego(camera_stamp(3, 0)), atol=1e-9)
    np.testing.assert_allclose(frame.T_ego_model, nuscenes_lidar_to_ego(), atol=1e-9)
    for i, cam in enumerate(frame.cameras):
        assert cam.name == CAMERA_NAMES[i]
        assert cam.image.shape == (HEIGHT, WIDTH, 3) and cam.image.dtype == np.uint8
        np.testing.assert_allclose(cam.K, K())
        np.testing.assert_allclose(cam.T_ego_cam, T_ego_cam(i), atol=1e-9)
        np.testing.assert_allclose(cam.T_world_ego, T_world_ego(camera_stamp(3, i)), atol=1e-9)
        assert cam.stamp == pytest.approx(camera_stamp(3, i) / 1e9)


def test_model_frame_from_tf_when_named():
    assembler = FrameAssembler(validate({'model_frame': 'LIDAR_TOP'}), tf_buffer_lookup(make_tf()))
    for i in range(6):
        assembler.set_camera_info(i, info(i))
    frame = assembler.assemble(frame_images(0))
    np.testing.assert_allclose(frame.T_ego_model, nuscenes_lidar_to_ego(), atol=1e-9)


# ------------------------------------------------------------------ skips
def test_missing_camera_skips_frame():
    pipe, det = pipeline()
    images = frame_images(0)
    images[4] = None
    out = pipe.process(images)
    assert isinstance(out, Skip) and out.reason == 'missing_camera' and out.camera == 'CAM_BACK_LEFT'
    assert det.frames == []


def test_camera_spread_over_limit_skips_and_resets_memory():
    pipe, det = pipeline(max_camera_time_diff=0.1, sync_window=0.05)
    assert isinstance(pipe.process(frame_images(0)), PipelineResult)
    images = frame_images(1)
    images[5] = image(1, 5, stamp=camera_stamp(1, 0) + 120_000_000)
    out = pipe.process(images)
    assert out.reason == 'camera_time_spread' and '0.120 s' in out.detail
    assert pipe.stats.resets['camera_time_spread'] == 1 and det.resets == ['camera_time_spread']
    assert len(det.frames) == 1


def test_tf_lookup_before_first_transform_skips_frame():
    pipe, det = pipeline(tf=make_tf(frames=[]))
    out = pipe.process(frame_images(0))
    assert out.reason == 'tf_unavailable' and 'odom' in out.detail
    assert det.frames == [] and pipe.stats.skipped['tf_unavailable'] == 1


def test_tf_extrapolation_skips_frame():
    pipe, det = pipeline(tf=make_tf(frames=range(3)))
    assert isinstance(pipe.process(frame_images(2)), PipelineResult)
    out = pipe.process(frame_images(3))                      # TF ends at frame 2
    assert out.reason == 'tf_extrapolation' and 'future' in out.detail
    assert len(det.frames) == 1


def test_missing_extrinsics_skip_frame_instead_of_identity():
    pipe, det = pipeline(tf=make_tf(static=False))
    out = pipe.process(frame_images(0))
    assert out.reason == 'tf_unavailable' and out.camera == 'CAM_FRONT' and det.frames == []


def test_missing_and_zero_camera_info_skip_frame():
    pipe, det = pipeline()
    pipe.assembler.camera_infos[2] = None
    out = pipe.process(frame_images(0))
    assert out.reason == 'missing_camera_info' and out.camera == 'CAM_FRONT_LEFT'
    pipe.on_camera_info(2, info(2, k=np.zeros((3, 3))))
    out = pipe.process(frame_images(0))
    assert out.reason == 'zero_camera_info' and out.camera == 'CAM_FRONT_LEFT'
    assert det.frames == []


def test_corrupt_jpeg_skips_frame_with_decode_error():
    pipe, det = pipeline()
    images = frame_images(0)
    images[3] = image(0, 3, data=jpeg(3)[:50] + b'\x00' * 40)
    out = pipe.process(images)
    assert out.reason == 'decode_error' and out.camera == 'CAM_BACK' and det.frames == []


def test_unsupported_encoding_skips_frame():
    pipe, det = pipeline(image_transport='raw')
    images = []
    for i in range(6):
        images.append(F.new('sensor_msgs/msg/Image', header=header(F, camera_stamp(0, i), CAMERA_NAMES[i]),
                            height=HEIGHT, width=WIDTH, encoding='rgb8' if i else 'yuv422',
                            step=WIDTH * 3, data=np.zeros(HEIGHT * WIDTH * 3, np.uint8)))
    out = pipe.process(images)
    assert out.reason == 'unsupported_encoding' and out.camera == 'CAM_FRONT' and 'yuv422' in out.detail


def test_image_not_matching_its_camera_info_skips_frame():
    pipe, det = pipeline()
    images = frame_images(0)
    images[1] = image(0, 1, scale=2)
    out = pipe.process(images)
    assert out.reason == 'camera_info_size_mismatch' and out.camera == 'CAM_FRONT_RIGHT'


# ------------------------------------------------------------------ resets
def test_time_going_backwards_resets_memory():
    pipe, det = pipeline()
    for f in (5, 6, 2):
        assert isinstance(pipe.process(frame_images(f)), PipelineResult)
    assert det.resets == ['time_backwards'] and pipe.stats.resets['time_backwards'] == 1


def test_gap_over_limit_resets_memory():
    lines = []
    pipe, det = pipeline(detector=PerfectDriveDetector(max_time_gap=0.5), log=lines.append)
    pipe.process(frame_images(0))
    pipe.process(frame_images(1))
    out = pipe.process(frame_images(9))                      # 8 frames = 0.67 s later
    assert det.resets == ['time_gap'] and pipe.stats.resets == {'time_gap': 1}
    assert out.detections.reset_reason == 'time_gap'
    assert any('exceeds max_time_gap 0.500 s' in line for line in lines)


def test_every_reset_rule_speaks_the_one_key_vocabulary():
    """Detector-side (time) and pipeline-side (ROS) rules in one drive: the counted keys are
    exactly ``sparsebev_core.resets.RESET_REASONS``, each counted once, and the pipeline
    defines no reset key of its own."""
    import sparsebev_ros.pipeline as pipeline_module

    class RefusesOnce(PerfectDriveDetector):
        refuse = False

        def step(self, frame):
            if self.refuse:
                self.refuse = False
                raise InvalidFrameError('T_world_ego is not a rigid transform')
            return super().step(frame)

    det = RefusesOnce(max_time_gap=0.5)
    pipe, _ = pipeline(detector=det, max_camera_time_diff=0.1, sync_window=0.05)
    pipe.process(frame_images(0))
    spread = frame_images(1)
    spread[5] = image(1, 5, stamp=camera_stamp(1, 0) + 120_000_000)
    pipe.process(spread)                                     # camera_time_spread
    pipe.process(frame_images(2))
    for i in range(6):
        pipe.on_camera_info(i, info(i, scale=2))
    pipe.process(frame_images(3, scale=2))                   # image_size_changed
    pipe.process(frame_images(1, scale=2))                   # time_backwards
    pipe.process(frame_images(9, scale=2))                   # time_gap (detector: 0.5 s)
    pipe.reset()                                             # explicit
    det.refuse = True
    pipe.process(frame_images(10, scale=2))                  # invalid_frame
    pipe.reset(resets.CLOCK_JUMP)          # what the node does when its /clock jumps back
    # rig_changed cannot happen here: the pipeline's rig is its camera_names parameter
    # (test_streaming.py covers it)
    assert dict(pipe.stats.resets) == {key: 1 for key in resets.RESET_REASONS
                                       if key != resets.RIG_CHANGED}
    assert det.resets == ['camera_time_spread', 'image_size_changed', 'time_backwards',
                          'time_gap', 'explicit', 'invalid_frame', 'clock_jump']
    own = {value for name, value in vars(pipeline_module).items() if name.startswith('RESET_')}
    assert own <= set(resets.RESET_REASONS)


def test_image_size_change_resets_memory():
    pipe, det = pipeline()
    pipe.process(frame_images(0))
    for i in range(6):
        pipe.on_camera_info(i, info(i, scale=2))
    out = pipe.process(frame_images(1, scale=2))
    assert isinstance(out, PipelineResult) and det.resets == ['image_size_changed']
    np.testing.assert_allclose(out.frame.cameras[0].K, K() * [[2], [2], [1]])


def test_explicit_reset_and_hooks():
    pipe, det = pipeline()
    seen = []
    pipe.on_reset.append(seen.append)
    pipe.reset()
    assert det.resets == ['explicit'] and seen == ['explicit']


# ------------------------------------------------------------------ outputs
@pytest.mark.parametrize('output_frame', ['base_link', 'odom', 'CAM_FRONT'])
def test_published_boxes_are_the_truth_in_the_output_frame(output_frame):
    pipe, det = pipeline(output_frame=output_frame, score_threshold=0.1)
    out = pipe.process(frame_images(4))
    stamp = camera_stamp(4, 0)
    T_world_out = {'base_link': T_world_ego(stamp), 'odom': np.eye(4),
                   'CAM_FRONT': T_world_ego(stamp) @ T_ego_cam(0)}[output_frame]
    truth = truth_in(invert_transform(T_world_out))
    np.testing.assert_allclose(out.boxes[:, :6], truth[:, :6], atol=1e-3)
    assert out.detections_msg.header.frame_id == output_frame
    c = out.detections_msg.detections[0].bbox.center.position
    assert (c.x, c.y, c.z) == pytest.approx((truth[0, 0], truth[0, 1], truth[0, 2] + truth[0, 5] / 2), abs=1e-3)


def test_class_filter_threshold_and_max_detections():
    pipe, _ = pipeline(classes=['pedestrian'], score_threshold=0.1)
    out = pipe.process(frame_images(0))
    assert [d.results[0].hypothesis.class_id for d in out.detections_msg.detections] == ['pedestrian']
    pipe, _ = pipeline(score_threshold=0.7)
    assert len(pipe.process(frame_images(0)).detections_msg.detections) == 1
    pipe, _ = pipeline(score_threshold=0.1, max_detections=1)
    out = pipe.process(frame_images(0))
    assert out.scores.tolist() == [0.9]


def test_per_class_score_thresholds_replace_the_global_one_for_their_classes():
    """The drive's truth: a car scoring 0.9 and a pedestrian scoring 0.6."""
    def published(**params):
        pipe, _ = pipeline(**params)
        out = pipe.process(frame_images(0))
        return sorted(d.results[0].hypothesis.class_id for d in out.detections_msg.detections)
    assert published(score_threshold=0.3) == ['car', 'pedestrian']
    assert published(score_threshold=0.3, score_thresholds={'car': 0.95}) == ['pedestrian']
    assert published(score_threshold=0.3, score_thresholds={'pedestrian': 0.7}) == ['car']
    assert published(score_threshold=0.95, score_thresholds={'pedestrian': 0.5}) == ['pedestrian']
    # while running; the detector's own threshold follows the lowest one
    pipe, det = pipeline(score_threshold=0.95)
    det.score_threshold = 0.95
    pipe.set_output_params(validate({'min_cameras': 6, 'score_threshold': 0.95,
                                     'score_thresholds': {'pedestrian': 0.4}}))
    assert det.score_threshold == 0.4
    assert [d.results[0].hypothesis.class_id
            for d in pipe.process(frame_images(1)).detections_msg.detections] == ['pedestrian']
    assert streaming_options(validate({'score_thresholds': {'bus': 0.1}})).score_threshold == 0.1
    # a class the detector does not have (a custom config's classes) is refused
    with pytest.raises(ParameterError, match="'score_thresholds' has \\['pedestrian'\\]"):
        Pipeline(validate({'score_thresholds': {'pedestrian': 0.4}}), PerfectDriveDetector(),
                 tf_buffer_lookup(make_tf()), F, class_names=('car', 'truck'))


def test_distortion_is_reported_once_per_camera_and_warnings_are_throttled():
    lines = []
    pipe, _ = pipeline(log=lines.append)
    pipe.on_camera_info(0, info(0, d=(-0.3, 0.1, 0, 0, 0)))
    pipe.process(frame_images(0))
    pipe.process(frame_images(1))
    assert sum('non-zero distortion' in line for line in lines) == 1
    now = [0.0]
    log = ThrottledLogger(lines.append, period=5.0, clock=lambda: now[0])
    lines.clear()
    for t in (0.0, 1.0, 2.0, 6.0):
        now[0] = t
        log('tf', 'no tf')
    assert lines == ['no tf', 'no tf (and 2 more like it)']


def test_stamp_and_frame_of_outputs_are_the_anchor_stamp():
    pipe, _ = pipeline(anchor_camera='CAM_BACK', publish_markers=True)
    out = pipe.process(frame_images(2))
    stamp = camera_stamp(2, 3)
    assert out.stamp_ns == stamp
    for msg in (out.detections_msg, out.markers_msg.markers[0]):
        assert msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec == stamp
    assert out.markers_msg.markers[0].action == 3
    assert FRAME_PERIOD_NS > 5 * CAMERA_OFFSET_NS


def test_frame_the_detector_refuses_is_skipped_and_memory_reset():
    class Refusing(PerfectDriveDetector):
        def step(self, frame):
            raise InvalidFrameError('T_world_ego is not a rigid transform')
    pipe, det = pipeline(detector=Refusing())
    out = pipe.process(frame_images(0))
    assert isinstance(out, Skip) and out.reason == 'invalid_frame' and 'rigid' in out.detail
    assert det.resets == ['invalid_frame'] and pipe.stats.published == 0


@pytest.mark.parametrize('bug', [ValueError('cannot reshape array of size 6 into shape (4,4)'),
                                 RuntimeError('shape mismatch in the head')])
def test_a_detector_bug_surfaces_instead_of_skipping_the_frame(bug):
    """Only InvalidFrameError / codec errors mean "bad frame"; a preset or shape bug (a plain
    ValueError too) must not be counted as an invalid frame, frame after frame."""
    class Buggy(PerfectDriveDetector):
        def step(self, frame):
            raise bug
    pipe, det = pipeline(detector=Buggy())
    with pytest.raises(type(bug), match=str(bug).split()[0]):
        pipe.process(frame_images(0))
    assert pipe.stats.skipped['invalid_frame'] == 0 and 'invalid_frame' not in det.resets


# ------------------------------------------------------------------ degraded frames
def test_a_failing_camera_is_missing_with_its_reason_and_the_frame_goes_ahead():
    pipe, det = pipeline(min_cameras=4)
    images = frame_images(0)
    images[3] = image(0, 3, data=jpeg(3)[:50] + b'\x00' * 40)           # CAM_BACK corrupt
    images[5] = None                                                     # CAM_BACK_RIGHT late
    out = pipe.process(images, {5: 'late'})
    assert isinstance(out, PipelineResult)
    frame = det.frames[-1]
    assert frame.missing_cameras == {'CAM_BACK': 'decode_error', 'CAM_BACK_RIGHT': 'late'}
    assert frame.valid_views.tolist() == [True, True, True, False, True, False]
    assert frame.cameras[3].image is None and frame.cameras[5].image is None   # never black
    np.testing.assert_allclose(frame.cameras[3].K, K())        # nominal geometry where known
    assert pipe.stats.degraded == 1 and pipe.stats.missing_cameras == {
        'CAM_BACK/decode_error': 1, 'CAM_BACK_RIGHT/late': 1}
    # back to complete: no image-size reset for the camera that was missing
    assert isinstance(pipe.process(frame_images(1)), PipelineResult)
    assert det.resets == [] and not det.frames[-1].missing_cameras


def test_fewer_than_min_cameras_skips_under_the_first_missing_cameras_reason():
    pipe, det = pipeline(min_cameras=5)
    images = frame_images(0)
    images[1], images[4] = None, None
    out = pipe.process(images, {1: 'late', 4: 'no_image'})
    assert isinstance(out, Skip) and out.reason == 'late' and out.camera == 'CAM_FRONT_RIGHT'
    assert '4 of 6 cameras present, min_cameras 5' in out.detail and 'CAM_BACK_LEFT' in out.detail
    assert det.frames == []


def test_a_rig_of_three_cameras_assembles_frames_of_three():
    names = ['CAM_FRONT', 'CAM_BACK', 'CAM_FRONT_LEFT']
    det = PerfectDriveDetector()
    pipe = Pipeline(validate({'camera_names': names}), det, tf_buffer_lookup(make_tf()), F)
    for i, c in enumerate((0, 3, 2)):
        pipe.on_camera_info(i, info(c))
    out = pipe.process([image(0, 0), image(0, 3), image(0, 2)])
    assert isinstance(out, PipelineResult) and det.frames[-1].camera_names == tuple(names)
