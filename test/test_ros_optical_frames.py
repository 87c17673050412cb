"""Image ``frame_id``s must be optical frames (z forward, x right, y down): a camera whose
extrinsic is in the body convention (x forward, y left, z up) is warned about once; the real
nuScenes rig and the test drive's cameras are optical and pass quietly."""
import json
import math
from pathlib import Path

import numpy as np
import pytest

from ros_scene import R_EGO_OPTICAL, T_ego_cam
from sparsebev_core.geometry import CAMERA_NAMES, make_transform, rot_z
from sparsebev_ros.backpressure import ThrottledLogger
from sparsebev_ros.frames import FrameAssembler, Skip, tf_buffer_lookup
from sparsebev_ros.optical_frames import OpticalFrameCheck, looks_optical
from sparsebev_ros.params import validate
from test_ros_frames import frame_images, info, make_tf, put

SAMPLE = Path(__file__).resolve().parent / 'data' / 'real_nuscenes_sample'


def rot_x(angle):
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


def test_optical_cameras_look_optical_and_body_frames_do_not():
    for i in range(6):
        assert looks_optical(T_ego_cam(i))
    # pitched 30 degrees down (about the camera's x axis): still optical
    assert looks_optical(make_transform(R_EGO_OPTICAL @ rot_x(math.radians(-30)), (0, 0, 1)))
    # the body convention (x forward, y left, z up), whatever the yaw: not optical
    for yaw in (0.0, 1.0, math.pi):
        assert not looks_optical(make_transform(rot_z(yaw), (1.5, 0.0, 1.6)))
    # an optical frame upside down (y up)
    assert not looks_optical(make_transform(R_EGO_OPTICAL @ rot_x(math.pi), (0, 0, 1)))


def test_the_real_nuscenes_cameras_are_optical():
    images = json.loads((SAMPLE / 'sample.json').read_text())['sample']['images']
    assert set(images) == set(CAMERA_NAMES)
    for name, camera in images.items():
        assert looks_optical(np.asarray(camera['cam2ego'], float)), name


def test_a_body_frame_camera_is_warned_about_once_and_still_used():
    lines = []
    tf = make_tf()
    put(tf, 'base_link', 'CAM_FRONT_LEFT', make_transform(rot_z(math.radians(55)), (1.0, 0.5, 1.6)),
        0, static=True)                               # camera_link-style: x forward, z up
    assembler = FrameAssembler(validate({}), tf_buffer_lookup(tf),
                               warn=ThrottledLogger(lines.append, period=0.0))
    for i in range(6):
        assembler.set_camera_info(i, info(i))
    for f in range(3):
        frame = assembler.assemble(frame_images(f))
        assert not isinstance(frame, Skip) and not frame.missing_cameras
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"{CAMERA_NAMES[2]}: frame_id '{CAMERA_NAMES[2]}' does not look "
                               'like an optical frame')
    assert 'z forward, x right, y down' in lines[0]


def test_the_check_warns_again_for_a_new_frame_id_only():
    seen = []
    check = OpticalFrameCheck(lambda key, text: seen.append(key), 'base_link')
    body = make_transform(np.eye(3), (0, 0, 0))
    check('CAM_A', 'cam_a_link', body)
    check('CAM_A', 'cam_a_link', body)
    check('CAM_A', 'cam_a_optical_frame', T_ego_cam(0))
    check('CAM_A', 'cam_a_other_link', body)
    assert seen == ['optical_frame/CAM_A', 'optical_frame/CAM_A']
