"""Encoded images flow from the FrameAssembler to the detector's preprocessing: checked early
(format, signature, header size against the CameraInfo), decoded once, by the detector.

Uses the recording stand-in detector and the message helpers of ``test_ros_frames``.
"""
import io

import cv2
import numpy as np
import pytest
from PIL import Image

from ros_scene import HEIGHT, WIDTH, jpeg
from sparsebev_core import resets
from sparsebev_core.image import ImageDecodeError, decode_image, image_header_size, image_size
from sparsebev_ros.pipeline import Pipeline
from sparsebev_ros.params import validate
from sparsebev_ros.frames import tf_buffer_lookup
from test_ros_frames import F, frame_images, image, info, make_tf


def deferred_pipeline(**params):
    from ros_scene import PerfectDriveDetector
    det = PerfectDriveDetector()
    pipe = Pipeline(validate(params), det, tf_buffer_lookup(make_tf()), F, defer_decoding=True)
    for i in range(6):
        pipe.on_camera_info(i, info(i))
    return pipe, det


@pytest.mark.parametrize('fmt', ['jpeg', 'progressive', 'png', 'grey_jpeg'])
def test_header_size_without_decoding(fmt):
    rgb = np.random.default_rng(0).integers(0, 255, (37, 61, 3), dtype=np.uint8)
    if fmt == 'png':
        data = cv2.imencode('.png', rgb)[1].tobytes()
    elif fmt == 'grey_jpeg':
        data = cv2.imencode('.jpg', rgb[:, :, 0])[1].tobytes()
    else:
        buf = io.BytesIO()
        Image.fromarray(rgb).save(buf, format='JPEG', progressive=fmt == 'progressive')
        data = buf.getvalue()
    assert image_header_size(data)[::-1] == (37, 61) == image_size(data) == decode_image(data).shape[:2]
    assert image_size(rgb) == (37, 61)
    for bad in (data[:10], b'GIF89a' + data[6:], b''):
        with pytest.raises(ImageDecodeError):
            image_size(bad)


def test_deferred_frames_carry_the_bytes_and_decode_to_the_same_pixels():
    pipe, det = deferred_pipeline()
    out = pipe.process(frame_images(0))
    cameras = out.frame.cameras
    assert all(isinstance(c.image, bytes) for c in cameras)            # not decoded here
    np.testing.assert_array_equal(decode_image(cameras[2].image), decode_image(jpeg(2)))
    assert pipe.process(frame_images(1)).frame.key                     # the next frame runs too


def test_deferred_checks_still_skip_early():
    """The checks that need no pixels run before the detector: with every camera required
    (min_cameras 6) the frame is skipped; with the default the camera is missing, and the
    frame goes ahead degraded."""
    pipe, det = deferred_pipeline(min_cameras=6)
    images = frame_images(0)
    images[1] = image(0, 1, scale=2)                                    # header 2x the CameraInfo
    assert pipe.process(images).reason == 'camera_info_size_mismatch'
    images = frame_images(0)
    images[3] = image(0, 3, data=b'\xff\xd8\xff' + b'\x00' * 40)        # no frame header
    out = pipe.process(images)
    assert out.reason == 'decode_error' and out.camera == 'CAM_BACK' and det.frames == []
    pipe, det = deferred_pipeline()
    out = pipe.process(images)
    assert out.frame.missing_cameras == {'CAM_BACK': 'decode_error'}
    assert len(det.frames) == 1 and not det.frames[0].cameras[3].valid


def test_size_change_rule_reads_the_header_of_deferred_images():
    pipe, det = deferred_pipeline()
    pipe.process(frame_images(0))
    for i in range(6):                                                  # a new calibration + size
        pipe.on_camera_info(i, info(i, scale=2))
    pipe.process(frame_images(1, scale=2))
    assert pipe.stats.resets[resets.IMAGE_SIZE_CHANGED] == 1


def test_decoding_stays_in_the_assembler_for_a_cpu_detector():
    from ros_scene import PerfectDriveDetector
    pipe = Pipeline(validate({}), PerfectDriveDetector(), tf_buffer_lookup(make_tf()), F)
    assert pipe.assembler.decode_images                                 # no device: as before
    for i in range(6):
        pipe.on_camera_info(i, info(i))
    assert pipe.process(frame_images(0)).frame.cameras[0].image.shape == (HEIGHT, WIDTH, 3)
