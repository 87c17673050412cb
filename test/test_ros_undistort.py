"""Distorted raw images (CameraInfo ``d`` non-zero, ``use_projection_matrix: false``):
undistorted into the pinhole ``K`` (cached remap per camera) or refused with a reason key;
never an exception. The distorted test images are drawn with OpenCV's *forward* models
(``projectPoints``), independent of the remap being tested."""
import cv2
import numpy as np
import pytest

from ros_scene import HEIGHT, K, WIDTH
from sparsebev_core.geometry import CAMERA_NAMES
from sparsebev_ros import reasons
from sparsebev_ros.codecs import to_camera_image
from sparsebev_ros.frames import FrameAssembler, Skip, tf_buffer_lookup
from sparsebev_ros.params import validate
from sparsebev_ros.undistort import DistortionRefused, Undistorter
from test_ros_frames import F, frame_images, info, make_tf

W, H = 640, 480
K_CAM = np.array([[300.0, 0.0, 320.0], [0.0, 300.0, 240.0], [0.0, 0.0, 1.0]])
PLUMB_BOB = (-0.28, 0.07, 0.001, -0.0005, 0.0)
EQUIDISTANT = (-0.02, 0.01, -0.004, 0.001)
# points in the camera frame (z forward) towards the image corners, where distortion is large
POINTS = np.array([[-1.6, -1.1, 2.0], [1.5, 1.0, 2.0], [1.0, -0.9, 2.5], [0.0, 0.0, 3.0]])


def camera_info(model, d, width=W, height=H, k=K_CAM):
    return F.new('sensor_msgs/msg/CameraInfo', header=F.new('std_msgs/msg/Header',
                 stamp=F.new('builtin_interfaces/msg/Time', sec=0, nanosec=0), frame_id='cam'),
                 height=height, width=width, distortion_model=model, d=np.asarray(d, float),
                 k=np.asarray(k, float).reshape(-1), p=np.zeros(12))


def distorted_projection(model, d, points):
    rvec = tvec = np.zeros(3)
    if model == 'equidistant':
        uv, _ = cv2.fisheye.projectPoints(points.reshape(-1, 1, 3), rvec, tvec, K_CAM,
                                          np.asarray(d, float))
    else:
        uv, _ = cv2.projectPoints(points, rvec, tvec, K_CAM, np.asarray(d, float))
    return uv.reshape(-1, 2)


def pinhole_projection(points):
    uvw = points @ K_CAM.T
    return uvw[:, :2] / uvw[:, 2:]


def image_with_dots(uv):
    """A black image with a small white dot at each (sub-pixel) position."""
    img = np.zeros((H, W, 3), np.uint8)
    for u, v in uv:
        cv2.circle(img, (int(round(u * 16)), int(round(v * 16))), 3 * 16, (255, 255, 255), -1,
                   lineType=cv2.LINE_AA, shift=4)
    return img


def dot_centres(img, near, radius=12):
    """Intensity centroid of the image around each expected position."""
    gray = img[..., 0].astype(np.float64)
    out = []
    for u, v in near:
        u0, v0 = int(round(u)), int(round(v))
        patch = gray[v0 - radius:v0 + radius + 1, u0 - radius:u0 + radius + 1]
        vs, us = np.mgrid[v0 - radius:v0 + radius + 1, u0 - radius:u0 + radius + 1]
        assert patch.sum() > 0, f'no dot near ({u:.1f}, {v:.1f})'
        out.append(((us * patch).sum() / patch.sum(), (vs * patch).sum() / patch.sum()))
    return np.array(out)


@pytest.mark.parametrize('model, d', [('plumb_bob', PLUMB_BOB), ('rational_polynomial',
                                      PLUMB_BOB + (0.01, 0.0, 0.0)), ('equidistant', EQUIDISTANT)])
def test_undistortion_moves_a_known_point_where_the_pinhole_model_projects_it(model, d):
    distorted_uv = distorted_projection(model, d, POINTS)
    pinhole_uv = pinhole_projection(POINTS)
    moved = np.linalg.norm(distorted_uv - pinhole_uv, axis=1)
    assert moved[:3].min() > 8.0, f'the test points must be visibly distorted: {moved}'
    out = Undistorter()(0, image_with_dots(distorted_uv), camera_info(model, d), K_CAM)
    assert out.shape == (H, W, 3) and out.dtype == np.uint8
    np.testing.assert_allclose(dot_centres(out, pinhole_uv), pinhole_uv, atol=0.5)


def test_remap_tables_are_cached_per_camera_and_rebuilt_when_the_calibration_changes():
    undistort = Undistorter()
    img = image_with_dots(distorted_projection('plumb_bob', PLUMB_BOB, POINTS))
    undistort(0, img, camera_info('plumb_bob', PLUMB_BOB), K_CAM)
    tables = undistort._tables[0][1]
    undistort(0, img, camera_info('plumb_bob', PLUMB_BOB), K_CAM)
    assert undistort._tables[0][1] is tables                       # reused
    undistort(1, img, camera_info('plumb_bob', PLUMB_BOB), K_CAM)
    assert set(undistort._tables) == {0, 1}                         # one per camera
    undistort(0, img, camera_info('plumb_bob', (-0.1, 0.0, 0.0, 0.0, 0.0)), K_CAM)
    assert undistort._tables[0][1] is not tables                    # a new calibration


@pytest.mark.parametrize('model, d, reason, words', [
    ('plumb_bob', PLUMB_BOB, reasons.DISTORTED_IMAGE, "distorted_images is 'refuse'"),
])
def test_refuse_mode_names_the_reason(model, d, reason, words):
    with pytest.raises(DistortionRefused, match=words) as err:
        Undistorter('refuse')(0, np.zeros((H, W, 3), np.uint8), camera_info(model, d), K_CAM)
    assert err.value.reason == reason


@pytest.mark.parametrize('model, d, words', [
    ('kannala_brandt', (0.1, 0.0, 0.0, 0.0), "supported models: plumb_bob"),
    ('equidistant', (0.1, 0.0, 0.0, 0.0, 0.0), 'equidistant needs 4 coefficients'),
    ('plumb_bob', (0.1, 0.0, 0.0), 'plumb_bob needs one of'),
    ('plumb_bob', (float('nan'), 0.0, 0.0, 0.0, 0.0), 'non-finite coefficients'),
])
def test_a_distortion_we_cannot_undistort_is_refused_with_the_reason(model, d, words):
    with pytest.raises(DistortionRefused, match=words) as err:
        Undistorter()(0, np.zeros((H, W, 3), np.uint8), camera_info(model, d), K_CAM)
    assert err.value.reason == reasons.UNSUPPORTED_DISTORTION


# ------------------------------------------------------------------ in the frame assembler
def assembled(decode_images=True, d=PLUMB_BOB, model='plumb_bob', **params):
    lines = []
    assembler = FrameAssembler(validate(params), tf_buffer_lookup(make_tf()),
                               warn=lambda key, text: lines.append(text),
                               decode_images=decode_images)
    for i in range(6):
        assembler.set_camera_info(i, info(i))
    distorted = info(2, d=d)
    distorted.distortion_model = model
    assembler.set_camera_info(2, distorted)
    return assembler.assemble(frame_images(0)), lines


@pytest.mark.parametrize('decode_images', [True, False])
def test_the_assembler_undistorts_a_distorted_raw_camera_and_says_so_once(decode_images):
    frame, lines = assembled(decode_images)
    assert not isinstance(frame, Skip), frame
    cam = frame.cameras[2]
    assert cam.valid and isinstance(cam.image, np.ndarray) and cam.image.shape == (HEIGHT, WIDTH, 3)
    decoded = to_camera_image(frame_images(0)[2])
    expected = cv2.undistort(decoded, K(), np.array(PLUMB_BOB))     # OpenCV's one-shot function
    assert np.abs(cam.image.astype(int) - expected).mean() < 2.0     # (fixed-point remap: ~1 level)
    assert np.abs(cam.image.astype(int) - decoded).mean() > 10.0
    others = [c for i, c in enumerate(frame.cameras) if i != 2]
    assert all((isinstance(c.image, np.ndarray)) == decode_images for c in others)
    assert [line for line in lines if 'distortion' in line] == [
        f'{CAMERA_NAMES[2]}: CameraInfo has non-zero distortion (plumb_bob) on a raw stream: '
        'undistorting its images']


def test_refused_or_unsupported_distortion_makes_only_that_camera_missing():
    frame, _ = assembled(distorted_images='refuse')
    assert frame.missing_cameras == {CAMERA_NAMES[2]: reasons.DISTORTED_IMAGE}
    frame, _ = assembled(model='fisheye_unknown')
    assert frame.missing_cameras == {CAMERA_NAMES[2]: reasons.UNSUPPORTED_DISTORTION}
    frame, _ = assembled(distorted_images='refuse', min_cameras=6)
    assert isinstance(frame, Skip) and frame.reason == reasons.DISTORTED_IMAGE


def test_rectified_streams_are_left_alone():
    """``use_projection_matrix: true``: the images are image_proc's rectified ones; their
    CameraInfo's ``d`` describes the raw camera."""
    lines = []
    assembler = FrameAssembler(validate({'use_projection_matrix': True,
                                         'distorted_images': 'refuse'}),
                               tf_buffer_lookup(make_tf()), warn=lambda k, t: lines.append(t))
    for i in range(6):
        msg = info(i, d=PLUMB_BOB)
        msg.p = np.hstack([K(), np.zeros((3, 1))]).reshape(-1)
        assembler.set_camera_info(i, msg)
    frame = assembler.assemble(frame_images(0))
    assert not isinstance(frame, Skip) and not frame.missing_cameras
    assert not lines
