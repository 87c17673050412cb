"""Fuzz the message decoders and the TF buffer: more than 2,000 mutated messages (fixed seed),
each built as a real rosbags message and sent through a CDR round trip.

Every call either raises one of the documented error types or returns a result that keeps the
function's contract:

* images (``CompressedImage`` JPEG/PNG and raw ``Image``): (H, W, 3) uint8 with at most
  ``max_image_pixels`` pixels, and bounded memory while decoding (tracemalloc peak);
* ``CameraInfo`` intrinsics: finite, positive focal lengths, finite principal point, K[2,2] = 1;
* transforms (``transform_to_matrix``, ``TfBuffer``): finite rigid 4x4 matrices.
"""
from __future__ import annotations

import math
import tracemalloc
import zlib

import numpy as np
import pytest

from fault_cases import real_jpeg, real_png
from sparsebev_ros import codecs, reasons
from sparsebev_ros.messages import RosbagsMessages, header, ros2_typestore
from sparsebev_ros.tf_buffer import InvalidArgumentException, TfBuffer, TransformException
from sparsebev_ros.undistort import DistortionRefused, Undistorter

SEED = 20260101
MAX_PIXELS = 1024 * 1024
MEMORY_LIMIT = 64 * MAX_PIXELS          # bytes traced while decoding one image (RGB + copies)
STORE = ros2_typestore('humble')
F = RosbagsMessages(STORE)
STRANGE = (math.nan, math.inf, -math.inf, 0.0, -0.0, 1e-310, -1.0, 1e308, -1e308, 2.0, 1e-12, 7.0)
IMAGE_ERRORS = codecs.CODEC_ERRORS


def roundtrip(msg):
    return STORE.deserialize_cdr(STORE.serialize_cdr(msg, msg.__msgtype__), msg.__msgtype__)


def mutate_bytes(rng: np.random.Generator, data: bytes) -> bytes:
    """One of: flipped bytes, truncation, a zeroed range, a patched header size, a repeat."""
    b = bytearray(data)
    kind = rng.integers(7)
    if kind == 6:                                     # some pass unchanged
        return data
    if kind == 0:
        for i in rng.integers(0, len(b), rng.integers(1, 9)):
            b[i] = int(rng.integers(256))
    elif kind == 1:
        b = b[:int(rng.integers(0, len(b)))]
    elif kind == 2:
        i = int(rng.integers(0, len(b)))
        b[i:i + int(rng.integers(1, 128))] = b'\x00' * len(b[i:i + 128])
    elif kind == 3:                                   # declared size: PNG IHDR or JPEG SOF
        if b[:4] == b'\x89PNG':                      # with a valid CRC: only the size lies
            side = lambda: int(rng.choice([rng.integers(0, 2**31), rng.integers(0, 5000)]))  # noqa: E731
            b[16:24] = side().to_bytes(4, 'big') + side().to_bytes(4, 'big')
            b[29:33] = zlib.crc32(bytes(b[12:29])).to_bytes(4, 'big')
        else:
            sof = b.find(b'\xff\xc0')
            if sof > 0:
                b[sof + 5:sof + 9] = bytes(rng.integers(0, 256, 4, dtype=np.uint8))
    elif kind == 4:
        i, j = sorted(int(v) for v in rng.integers(0, len(b), 2))
        b = b[:j] + b[i:j] + b[j:]
    else:
        b = b[:8] + bytes(rng.integers(0, 256, int(rng.integers(1, 64)), dtype=np.uint8)) + b[8:]
    return bytes(b)


def check_decoded(image: np.ndarray) -> None:
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
    assert 0 < image.shape[0] * image.shape[1] <= MAX_PIXELS


def decode_bounded(fn, msg):
    """``fn(msg, MAX_PIXELS)`` under tracemalloc; (result or None, peak bytes)."""
    tracemalloc.reset_peak()
    start = tracemalloc.get_traced_memory()[0]
    try:
        out = fn(msg, MAX_PIXELS)
    except IMAGE_ERRORS:
        out = None
    return out, tracemalloc.get_traced_memory()[1] - start


@pytest.fixture
def traced():
    tracemalloc.start()
    yield
    tracemalloc.stop()


@pytest.mark.parametrize('fmt, count', [('jpeg', 700), ('png', 400)])
def test_fuzzed_compressed_images(traced, fmt, count):
    rng = np.random.default_rng([SEED, len(fmt)])
    bases = [real_jpeg(40, 24, s) for s in range(3)] if fmt == 'jpeg' else [real_png(40, 24, s) for s in range(3)]
    decoded = 0
    for k in range(count):
        data = mutate_bytes(rng, bases[k % len(bases)])
        msg = roundtrip(F.new('sensor_msgs/msg/CompressedImage', header=header(F, 10**18 + k, 'cam'),
                              format=fmt, data=np.frombuffer(data, np.uint8)))
        out, peak = decode_bounded(codecs.compressed_to_rgb, msg)
        assert peak < MEMORY_LIMIT, f'case {k}: {peak / 2**20:.0f} MiB traced for {len(data)} bytes'
        if out is not None:
            check_decoded(out)
            decoded += 1
    assert 0 < decoded < count                        # both outcomes are exercised


def test_fuzzed_raw_images(traced):
    rng = np.random.default_rng([SEED, 1])
    encodings = ('rgb8', 'bgr8', 'rgba8', 'bgra8', 'mono8', '8UC3', 'yuv422', '', 'RGB8', '16UC1')
    decoded = 0
    for k in range(400):
        h, w = int(rng.integers(-2, 40)), int(rng.integers(-2, 40))
        step = int(rng.choice([w * 3, w * 4, w, 0, -1, int(rng.integers(0, 2**31))]))
        size = int(rng.choice([max(h * step, 0), int(rng.integers(0, 4000)), 0]))
        if rng.random() < 0.1:
            h, w = int(rng.integers(2**15, 2**31)), int(rng.integers(2**15, 2**31))   # claims huge
        msg = F.new('sensor_msgs/msg/Image', header=header(F, 10**18 + k, 'cam'),
                    height=h % 2**32, width=w % 2**32, encoding=str(rng.choice(encodings)),
                    is_bigendian=0, step=step % 2**32,
                    data=rng.integers(0, 256, min(size, 2**20), dtype=np.uint8))
        out, peak = decode_bounded(codecs.image_to_rgb, roundtrip(msg))
        assert peak < MEMORY_LIMIT
        if out is not None:
            check_decoded(out)
            decoded += 1
    assert decoded > 0


def _camera_info(rng: np.random.Generator, k: int):
    K = np.array([[400.0, 0, 320], [0, 400.0, 240], [0, 0, 1]]).reshape(-1)
    P = np.concatenate([K.reshape(3, 3), np.zeros((3, 1))], axis=1).reshape(-1)
    d = np.zeros(5)
    for arr in (K, P, d):
        for i in rng.integers(0, arr.size, rng.integers(0, 4)):
            arr[i] = rng.choice(STRANGE) if rng.random() < 0.7 else rng.normal(0, 1000)
    if rng.random() < 0.2:
        with np.errstate(over='ignore', invalid='ignore'):
            K *= rng.choice([-1.0, 0.5, 2.0, 1e-300, 1e300])
    return roundtrip(F.new('sensor_msgs/msg/CameraInfo', header=header(F, 10**18 + k, 'cam'),
                           height=480, width=640, distortion_model='plumb_bob', d=d, k=K,
                           r=np.eye(3).reshape(-1), p=P))


def test_fuzzed_camera_infos_give_usable_intrinsics_or_a_typed_error():
    rng = np.random.default_rng([SEED, 2])
    accepted = undistorted = refused = 0
    undistort, image = Undistorter(), np.zeros((480, 640, 3), np.uint8)
    for k in range(500):
        msg = _camera_info(rng, k)
        for use_p in (False, True):
            try:
                K = codecs.camera_info_K(msg, use_projection_matrix=use_p)
            except codecs.CameraInfoError:
                continue
            accepted += 1
            assert np.all(np.isfinite(K)) and K[0, 0] > 0 and K[1, 1] > 0 and K[2, 2] == 1.0
            if not use_p and codecs.has_distortion(msg):      # undistorted, or refused by key
                try:
                    assert undistort(0, image, msg, K).shape == image.shape
                    undistorted += 1
                except DistortionRefused as exc:
                    assert exc.reason in (reasons.UNSUPPORTED_DISTORTION,)
                    refused += 1
        assert isinstance(codecs.has_distortion(msg), bool)
    assert 0 < accepted < 1000 and undistorted > 0 and refused > 0


def _transform(rng: np.random.Generator, k: int):
    t = rng.normal(0, 10, 3)
    q = rng.normal(0, 1, 4)
    q /= np.linalg.norm(q)
    kind = rng.integers(5)
    if kind == 1:
        t[rng.integers(3)] = rng.choice(STRANGE)
    elif kind == 2:
        q[rng.integers(4)] = rng.choice(STRANGE)
    elif kind == 3:
        q *= rng.choice([0.0, 0.5, 0.999, 1.001, 1.2, 2.0, 1e-200])
    v3 = F.new('geometry_msgs/msg/Vector3', x=t[0], y=t[1], z=t[2])
    quat = F.new('geometry_msgs/msg/Quaternion', x=q[0], y=q[1], z=q[2], w=q[3])
    parent, child = rng.choice([('map', 'base_link'), ('base_link', 'cam'), ('', 'cam'),
                                ('cam', 'cam'), ('/map', '/base_link')], p=[0.4, 0.4, 0.07, 0.07, 0.06])
    return roundtrip(F.new('geometry_msgs/msg/TransformStamped',
                           header=header(F, 10**18 + int(rng.integers(0, 10**9)), str(parent)),
                           child_frame_id=str(child),
                           transform=F.new('geometry_msgs/msg/Transform', translation=v3, rotation=quat)))


def assert_rigid(T: np.ndarray) -> None:
    assert T.shape == (4, 4) and np.all(np.isfinite(T))
    R = T[:3, :3]
    np.testing.assert_allclose(R.T @ R, np.eye(3), atol=1e-6)
    assert abs(np.linalg.det(R) - 1.0) < 1e-6
    np.testing.assert_array_equal(T[3], [0, 0, 0, 1])


def test_fuzzed_transforms_are_rigid_or_refused():
    rng = np.random.default_rng([SEED, 3])
    buf = TfBuffer(cache_time=1e9)
    refused = 0
    for k in range(600):
        msg = _transform(rng, k)
        try:
            assert_rigid(codecs.transform_to_matrix(msg))
        except codecs.TransformError:
            refused += 1
        try:
            buf.set_transform_msg(msg)
        except InvalidArgumentException:
            pass
        for target, source in (('map', 'base_link'), ('base_link', 'cam'), ('map', 'cam')):
            try:
                assert_rigid(buf.lookup_transform(target, source, 0))
                assert_rigid(buf.lookup_transform(target, source, 10**18 + int(rng.integers(0, 10**9))))
            except TransformException:
                pass
    assert 0 < refused < 600
    # one TFMessage mixing good and bad transforms keeps the good ones
    msgs = [_transform(np.random.default_rng([SEED, 4, i]), i) for i in range(20)]
    tf = TfBuffer()
    accepted = tf.set_tf_message(F.new('tf2_msgs/msg/TFMessage', transforms=msgs))
    assert accepted + tf.rejected_invalid == len(msgs) and tf.rejected_invalid > 0

