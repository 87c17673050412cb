"""Codecs and output messages with rosbags message classes standing in for rclpy messages
(same attribute paths), plus ``array.array('B')`` / ``bytes`` buffers as rclpy uses."""
import array

import cv2
import numpy as np
import pytest
import simplejpeg

from sparsebev_core.geometry import make_transform, rot_z, yaw_to_quat
from sparsebev_ros import codecs
from sparsebev_ros.messages import (RosbagsMessages, detection_array, header, marker_array,
                                    ros2_typestore)

STORE = ros2_typestore('humble')
F = RosbagsMessages(STORE)
RGB = np.arange(4 * 5 * 3, dtype=np.uint8).reshape(4, 5, 3) * 3


def roundtrip(msg):
    """Serialize to CDR and back: what a bag or a subscription hands over."""
    return STORE.deserialize_cdr(STORE.serialize_cdr(msg, msg.__msgtype__), msg.__msgtype__)


def image_msg(pixels, encoding, pad=0, buffer='numpy'):
    h, w = pixels.shape[:2]
    rows = pixels.reshape(h, -1)
    step = rows.shape[1] + pad
    data = np.zeros((h, step), np.uint8)
    data[:, :rows.shape[1]] = rows
    data = data.reshape(-1)
    msg = F.new('sensor_msgs/msg/Image', header=header(F, 5, 'cam'), height=h, width=w,
                encoding=encoding, step=step, data=data)
    msg = roundtrip(msg)
    if buffer == 'array':
        msg.data = array.array('B', bytes(data))
    elif buffer == 'bytes':
        msg.data = bytes(data)
    return msg


@pytest.mark.parametrize('buffer', ['numpy', 'array', 'bytes'])
@pytest.mark.parametrize('pad', [0, 3])
def test_raw_image_encodings_decode_to_rgb(buffer, pad):
    assert np.array_equal(codecs.to_rgb(image_msg(RGB, 'rgb8', pad, buffer)), RGB)
    assert np.array_equal(codecs.to_rgb(image_msg(RGB[:, :, ::-1].copy(), 'bgr8', pad, buffer)), RGB)
    rgba = np.concatenate([RGB, np.full((4, 5, 1), 255, np.uint8)], axis=2)
    assert np.array_equal(codecs.to_rgb(image_msg(rgba, 'rgba8', pad, buffer)), RGB)
    bgra = np.concatenate([RGB[:, :, ::-1], np.full((4, 5, 1), 7, np.uint8)], axis=2)
    assert np.array_equal(codecs.to_rgb(image_msg(bgra, 'bgra8', pad, buffer)), RGB)
    gray = codecs.to_rgb(image_msg(RGB[:, :, 0].copy(), 'mono8', pad, buffer))
    assert gray.shape == (4, 5, 3) and np.array_equal(gray[:, :, 2], RGB[:, :, 0])


def test_unsupported_encoding_raises_a_specific_error():
    msg = image_msg(np.zeros((4, 5, 2), np.uint8), '16UC1')
    with pytest.raises(codecs.UnsupportedEncodingError, match='16UC1'):
        codecs.to_rgb(msg)


def test_truncated_raw_image_is_a_decode_error():
    msg = image_msg(RGB, 'rgb8')
    msg.data = msg.data[:10]
    with pytest.raises(codecs.ImageDecodeError, match='too short'):
        codecs.to_rgb(msg)


def compressed(data: bytes, fmt='jpeg'):
    return roundtrip(F.new('sensor_msgs/msg/CompressedImage', header=header(F, 5, 'cam'), format=fmt,
                           data=np.frombuffer(data, np.uint8)))


def test_compressed_jpeg_and_png_decode_to_rgb():
    big = cv2.resize(RGB, (40, 32), interpolation=cv2.INTER_NEAREST)
    jpg = simplejpeg.encode_jpeg(np.ascontiguousarray(big), quality=100, colorspace='RGB')
    out = codecs.to_rgb(compressed(jpg))
    assert out.shape == (32, 40, 3) and np.abs(out.astype(int) - big).mean() < 3
    ok, png = cv2.imencode('.png', big[:, :, ::-1])
    msg = compressed(png.tobytes(), 'png')
    msg.data = array.array('B', png.tobytes())
    assert np.array_equal(codecs.to_rgb(msg), big)


def test_corrupt_jpeg_and_unknown_format_raise_specific_errors():
    jpg = simplejpeg.encode_jpeg(np.zeros((16, 16, 3), np.uint8), colorspace='RGB')
    with pytest.raises(codecs.ImageDecodeError):
        codecs.to_rgb(compressed(jpg[:60] + b'\x00' * 20))
    with pytest.raises(codecs.ImageDecodeError):
        codecs.to_rgb(compressed(b'not an image', 'jpeg'))
    with pytest.raises(codecs.UnsupportedEncodingError, match='theora'):
        codecs.to_rgb(compressed(b'\x00\x01\x02', 'theora'))
    with pytest.raises(codecs.UnsupportedEncodingError, match='depth'):
        codecs.to_rgb(compressed(b'\x00' * 12 + b'\x89PNG\r\n\x1a\n', '16UC1; compressedDepth png'))


def camera_info(k=None, p=None, d=(0.0,) * 5):
    k = np.zeros(9) if k is None else np.asarray(k, float).reshape(-1)
    p = np.zeros(12) if p is None else np.asarray(p, float).reshape(-1)
    return roundtrip(F.new('sensor_msgs/msg/CameraInfo', header=header(F, 5, 'cam'), height=900,
                           width=1600, distortion_model='plumb_bob', d=np.asarray(d, float), k=k, p=p))


def test_camera_info_intrinsics_from_k_or_from_p():
    K = np.array([[1266.4, 0, 816.3], [0, 1266.4, 491.5], [0, 0, 1]])
    P = np.concatenate([K * [[0.5], [0.5], [1]], [[3.0], [0], [0]]], axis=1)
    info = camera_info(K, P)
    np.testing.assert_array_equal(codecs.camera_info_K(info), K)
    np.testing.assert_array_equal(codecs.camera_info_K(info, use_projection_matrix=True), P[:, :3])
    info.k = array.array('d', K.reshape(-1))                          # rclpy-style buffer
    np.testing.assert_array_equal(codecs.camera_info_K(info), K)


def test_zero_camera_info_raises_and_distortion_is_detected():
    with pytest.raises(codecs.CameraInfoError, match='no usable intrinsics'):
        codecs.camera_info_K(camera_info())
    with pytest.raises(codecs.CameraInfoError):
        codecs.camera_info_K(camera_info(np.eye(3)), use_projection_matrix=True)
    assert not codecs.has_distortion(camera_info(np.eye(3)))
    assert codecs.has_distortion(camera_info(np.eye(3), d=(-0.3, 0.1, 0, 0, 0)))
    assert not codecs.has_distortion(camera_info(np.eye(3), d=()))


def test_stamps_keep_nanosecond_precision():
    ns = 1_700_000_123_987_654_321
    stamp = header(F, ns, 'x').stamp
    assert (stamp.sec, stamp.nanosec) == (1_700_000_123, 987_654_321)
    assert codecs.stamp_to_ns(roundtrip(header(F, ns, 'x')).stamp) == ns
    assert codecs.seconds_to_ns(codecs.ns_to_seconds(ns)) == pytest.approx(ns, abs=500)


def test_transform_stamped_to_matrix_and_back():
    T = make_transform(rot_z(0.7), (1.0, -2.0, 0.5))
    t, q = codecs.matrix_to_translation_quat(T)
    msg = F.new('geometry_msgs/msg/TransformStamped', header=header(F, 1, 'map'), child_frame_id='base_link',
                transform=F.new('geometry_msgs/msg/Transform',
                                translation=F.new('geometry_msgs/msg/Vector3', x=t[0], y=t[1], z=t[2]),
                                rotation=F.new('geometry_msgs/msg/Quaternion', x=q[0], y=q[1], z=q[2], w=q[3])))
    np.testing.assert_allclose(codecs.transform_to_matrix(roundtrip(msg)), T, atol=1e-12)


BOXES = np.array([[10.0, -3.0, -1.8, 4.5, 1.9, 1.6, 0.4, 3.0, 1.0],
                  [2.0, 5.0, -1.7, 0.7, 0.6, 1.8, -2.0, 0.0, 0.0]])


def test_detection_array_has_gravity_centre_pose_size_and_class_scores():
    msg = roundtrip(detection_array(F, BOXES, np.array([0.8, 0.4]), np.array([0, 8]),
                                    ['car'] * 8 + ['pedestrian'], 1_700_000_000_5, 'base_link'))
    assert msg.header.frame_id == 'base_link'
    assert codecs.stamp_to_ns(msg.header.stamp) == 1_700_000_000_5
    assert len(msg.detections) == 2
    d = msg.detections[0]
    c = d.bbox.center
    assert (c.position.x, c.position.y, c.position.z) == pytest.approx((10.0, -3.0, -1.0))
    w, x, y, z = yaw_to_quat(0.4)
    assert (c.orientation.x, c.orientation.y, c.orientation.z, c.orientation.w) == pytest.approx((x, y, z, w))
    assert (d.bbox.size.x, d.bbox.size.y, d.bbox.size.z) == pytest.approx((4.5, 1.9, 1.6))
    assert d.results[0].hypothesis.class_id == 'car'
    assert d.results[0].hypothesis.score == pytest.approx(0.8)
    assert msg.detections[1].results[0].hypothesis.class_id == 'pedestrian'


def test_marker_array_starts_with_deleteall_then_boxes_labels_and_velocity_arrows():
    msg = roundtrip(marker_array(F, BOXES, np.array([0.8, 0.4]), np.array([0, 8]),
                                 ['car'] * 8 + ['pedestrian'], 42, 'base_link', style='lines'))
    first = msg.markers[0]
    assert first.action == 3                                  # DELETEALL
    kinds = [(m.ns, m.type) for m in msg.markers[1:]]
    assert kinds == [('boxes', 5), ('labels', 9), ('velocity', 0), ('boxes', 5), ('labels', 9)]
    box = msg.markers[1]
    assert len(box.points) == 24                              # 12 edges
    zs = sorted({round(p.z, 6) for p in box.points})
    assert zs == pytest.approx([-1.8, -0.2])                  # bottom and top faces
    assert msg.markers[2].text == 'car 0.80'
    arrow = msg.markers[3]
    assert (arrow.points[1].x - arrow.points[0].x, arrow.points[1].y - arrow.points[0].y) == pytest.approx((3.0, 1.0))
    cubes = roundtrip(marker_array(F, BOXES, np.array([0.8, 0.4]), np.array([0, 8]),
                                   ['car'] * 8 + ['pedestrian'], 42, 'base_link', style='cubes'))
    assert cubes.markers[1].type == 1 and cubes.markers[1].scale.x == pytest.approx(4.5)
    assert all(m.header.frame_id == 'base_link' for m in cubes.markers)


def test_empty_detections_still_clear_the_markers():
    msg = marker_array(F, np.zeros((0, 9)), np.zeros(0), np.zeros(0, int), ['car'], 1, 'base_link')
    assert [m.action for m in msg.markers] == [3]
    assert len(detection_array(F, np.zeros((0, 9)), [], [], ['car'], 1, 'map').detections) == 0


def test_builders_work_with_generated_python_message_classes(monkeypatch):
    """ImportedMessages imports `<pkg>.msg` classes as rclpy's generated code provides them;
    here stand-in modules whose classes only take keyword fields (as rclpy's do)."""
    import sys
    import types
    from sparsebev_ros.messages import ImportedMessages

    def package(name, classes):
        module = types.ModuleType(f'{name}.msg')
        for cls in classes:
            setattr(module, cls, type(cls, (types.SimpleNamespace,), {}))
        monkeypatch.setitem(sys.modules, f'{name}.msg', module)

    package('std_msgs', ['Header', 'ColorRGBA'])
    package('builtin_interfaces', ['Time', 'Duration'])
    package('geometry_msgs', ['Point', 'Pose', 'Quaternion', 'Vector3', 'PoseWithCovariance'])
    package('vision_msgs', ['ObjectHypothesis', 'ObjectHypothesisWithPose', 'BoundingBox3D',
                            'Detection3D', 'Detection3DArray'])
    package('visualization_msgs', ['Marker', 'MarkerArray'])
    factory = ImportedMessages()
    det = detection_array(factory, BOXES, [0.8, 0.4], [0, 8], ['car'] * 8 + ['pedestrian'], 7, 'map')
    assert type(det).__name__ == 'Detection3DArray' and det.header.stamp.nanosec == 7
    assert det.detections[1].results[0].hypothesis.class_id == 'pedestrian'
    markers = marker_array(factory, BOXES, [0.8, 0.4], [0, 8], ['car'] * 8 + ['pedestrian'], 7, 'map')
    assert markers.markers[0].action == 3 and isinstance(markers.markers[1].id, int)
