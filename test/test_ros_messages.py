"""Output message details a ROS consumer relies on (through real rosbags CDR round trips)."""
from __future__ import annotations

import numpy as np

from sparsebev_ros.messages import RosbagsMessages, detection_array, ros2_typestore

STORE = ros2_typestore('jazzy')
F = RosbagsMessages(STORE)
BOXES = np.array([[10.0, 2.0, -1.0, 4.5, 1.9, 1.6, 0.3, 1.0, 0.0],
                  [5.0, -3.0, -1.2, 0.6, 0.6, 1.7, 1.2, 0.0, 0.5]])


def test_detection_ids_are_empty_until_there_is_tracking():
    """vision_msgs: ``id`` identifies one object across messages, or is empty. An index within
    one message would make a consumer believe box 0 of every frame is the same object."""
    msg = detection_array(F, BOXES, np.array([0.8, 0.4]), np.array([0, 8]),
                          ['car'] * 8 + ['pedestrian'], 123, 'base_link')
    raw = STORE.serialize_cdr(msg, 'vision_msgs/msg/Detection3DArray')
    again = STORE.deserialize_cdr(raw, 'vision_msgs/msg/Detection3DArray')
    assert len(again.detections) == 2
    assert [d.id for d in again.detections] == ['', '']


def test_a_tracking_model_fills_the_detection_ids_and_marks_its_tracks():
    """With track IDs (a SparseBEV++ model): ``Detection3D.id`` is the ID as text, and each
    box's markers take the track's own colour and show the ID; without, the class colour."""
    from sparsebev_ros.messages import CLASS_COLORS, marker_array, track_color
    names = ['car'] * 8 + ['pedestrian']
    msg = detection_array(F, BOXES, np.array([0.8, 0.4]), np.array([0, 8]), names, 123,
                          'base_link', track_ids=np.array([17, 4]))
    again = STORE.deserialize_cdr(STORE.serialize_cdr(msg, 'vision_msgs/msg/Detection3DArray'),
                                  'vision_msgs/msg/Detection3DArray')
    assert [d.id for d in again.detections] == ['17', '4']
    tracked = marker_array(F, BOXES, np.array([0.8, 0.4]), np.array([0, 8]), names, 123,
                           'base_link', track_ids=np.array([17, 4]))
    plain = marker_array(F, BOXES, np.array([0.8, 0.4]), np.array([0, 8]), names, 123, 'base_link')

    def by_ns(markers, ns):
        return [m for m in markers.markers if m.ns == ns]

    assert [m.text for m in by_ns(tracked, 'labels')] == ['#17 car 0.80', '#4 pedestrian 0.40']
    assert [m.text for m in by_ns(plain, 'labels')] == ['car 0.80', 'pedestrian 0.40']
    colours = [(m.color.r, m.color.g, m.color.b) for m in by_ns(tracked, 'boxes')]
    assert np.allclose(colours, [track_color(17), track_color(4)])
    assert colours[0] != colours[1]
    assert (by_ns(plain, 'boxes')[0].color.r, by_ns(plain, 'boxes')[0].color.g) == \
        (CLASS_COLORS['car'][0], CLASS_COLORS['car'][1])
    # neighbouring IDs look different
    assert min(np.linalg.norm(np.subtract(track_color(i), track_color(i + 1))) for i in range(1, 50)) > 0.3


def test_autoware_detected_objects_map_class_score_box_and_velocity():
    """``~/objects`` for Autoware's tracking: label map, existence probability = score, the
    box as a BOUNDING_BOX, full yaw, the velocity in the object's frame (x along its heading)."""
    from sparsebev_core.geometry import CLASS_NAMES
    from sparsebev_ros.messages import AUTOWARE_LABELS, detected_objects

    boxes = BOXES.copy()
    boxes[0, 6], boxes[0, 7:9] = np.pi / 2, (0.0, 3.0)        # heading +y, moving +y at 3 m/s
    msg = detected_objects(F, boxes, np.array([0.8, 0.4]), np.array([0, 8]), CLASS_NAMES, 123,
                           'map')
    raw = STORE.serialize_cdr(msg, 'autoware_perception_msgs/msg/DetectedObjects')
    msg = STORE.deserialize_cdr(raw, 'autoware_perception_msgs/msg/DetectedObjects')
    assert msg.header.frame_id == 'map' and msg.header.stamp.nanosec == 123
    car, pedestrian = msg.objects
    assert [c.label for c in car.classification] == [1]                 # CAR
    assert [c.label for c in pedestrian.classification] == [7]          # PEDESTRIAN
    assert abs(car.existence_probability - 0.8) < 1e-6
    assert abs(car.classification[0].probability - 0.8) < 1e-6
    assert car.shape.type == 0                                          # BOUNDING_BOX
    assert np.allclose([car.shape.dimensions.x, car.shape.dimensions.y, car.shape.dimensions.z],
                       boxes[0, 3:6])
    pose = car.kinematics.pose_with_covariance.pose
    assert np.allclose([pose.position.x, pose.position.y, pose.position.z],
                       [10.0, 2.0, -1.0 + 1.6 / 2])                     # gravity centre
    assert np.allclose([pose.orientation.z, pose.orientation.w], [np.sqrt(0.5), np.sqrt(0.5)])
    assert car.kinematics.orientation_availability == 2                 # AVAILABLE
    assert car.kinematics.has_twist and not car.kinematics.has_twist_covariance
    twist = car.kinematics.twist_with_covariance.twist.linear
    assert np.allclose([twist.x, twist.y], [3.0, 0.0])                  # forward in its frame
    # every nuScenes class has an Autoware label; the static obstacles are UNKNOWN
    assert set(AUTOWARE_LABELS) == set(CLASS_NAMES)
    assert AUTOWARE_LABELS['construction_vehicle'] == 2 and AUTOWARE_LABELS['traffic_cone'] == 0
