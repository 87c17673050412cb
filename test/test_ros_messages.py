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
