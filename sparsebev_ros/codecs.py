"""Message <-> numpy, duck-typed: works for rclpy messages and rosbags dataclasses alike.

Only attribute paths are used (``msg.header.stamp.sec``, ``msg.data``, ``msg.k``), and
buffers go through ``memoryview`` so that rclpy's ``array.array('B')`` / ``bytes`` and rosbags'
numpy arrays read the same way.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from sparsebev_core.errors import InputError
from sparsebev_core.geometry import (make_transform, quat_to_rot, quat_wxyz_to_xyzw,
                                     quat_xyzw_to_wxyz, rot_to_quat)
from sparsebev_core.image import (DEFAULT_MAX_IMAGE_PIXELS, ImageDecodeError,  # the one decode
                                  ImageTooLargeError)  # error type, re-exported here

from . import reasons


class CodecError(InputError):
    """A message cannot be turned into what we need; ``reason`` is a short machine key."""
    reason = 'codec_error'


class UnsupportedEncodingError(CodecError):
    """``sensor_msgs/Image`` encoding (or CompressedImage format) we do not decode."""
    reason = reasons.UNSUPPORTED_ENCODING


class TransformError(CodecError):
    """A transform or pose message with non-finite values or a quaternion that is not unit."""
    reason = 'invalid_transform'


class CameraInfoError(CodecError):
    """CameraInfo without usable intrinsics (all zeros, singular)."""
    reason = reasons.ZERO_CAMERA_INFO


# every error a message can cause on its way to numpy (catch these, by type, around decoding)
CODEC_ERRORS: tuple[type[Exception], ...] = (CodecError, ImageDecodeError)


# --------------------------------------------------------------------------------------------
# time
# --------------------------------------------------------------------------------------------
def stamp_to_ns(stamp: Any) -> int:
    """``builtin_interfaces/Time`` (``sec``, ``nanosec``) -> integer nanoseconds."""
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def ns_to_seconds(ns: int) -> float:
    """Integer nanoseconds -> float64 seconds (the core's time unit)."""
    return ns / 1e9


def seconds_to_ns(seconds: float) -> int:
    """Float seconds -> integer nanoseconds (rounded)."""
    return int(round(seconds * 1e9))


def ns_to_sec_nanosec(ns: int) -> tuple[int, int]:
    """Integer nanoseconds -> (sec, nanosec) with 0 <= nanosec < 1e9."""
    sec, nanosec = divmod(int(ns), 1_000_000_000)
    return sec, nanosec


def header_stamp_ns(msg: Any) -> int:
    """Stamp of a message with a ``header`` in nanoseconds."""
    return stamp_to_ns(msg.header.stamp)


# --------------------------------------------------------------------------------------------
# buffers
# --------------------------------------------------------------------------------------------
def as_uint8(data: Any) -> np.ndarray:
    """A message's ``uint8[]`` field (numpy, array.array('B'), bytes, list) as a 1-D uint8 array."""
    if isinstance(data, np.ndarray):
        return data.reshape(-1).view(np.uint8) if data.dtype != np.uint8 else data.reshape(-1)
    if isinstance(data, list):
        return np.asarray(data, dtype=np.uint8)
    return np.frombuffer(memoryview(data), dtype=np.uint8)


# --------------------------------------------------------------------------------------------
# images
# --------------------------------------------------------------------------------------------
_CHANNELS = {'rgb8': 3, 'bgr8': 3, 'rgba8': 4, 'bgra8': 4, 'mono8': 1, '8uc1': 1, '8uc3': 3}


def _check_pixels(width: int, height: int, max_pixels: int, what: str) -> None:
    if width * height > max_pixels:
        raise ImageTooLargeError(f'{what} declares {width}x{height} pixels, more than the limit of '
                                 f'{max_pixels} (parameter max_image_pixels); not decoded')


def image_to_rgb(msg: Any, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> np.ndarray:
    """``sensor_msgs/Image`` -> (H, W, 3) uint8 RGB.

    Supported encodings: rgb8, bgr8, rgba8, bgra8, mono8 (and 8UC1/8UC3, read as mono/BGR as
    cv_bridge does). Others raise UnsupportedEncodingError; rows may be padded (``step``).
    More than ``max_pixels`` pixels raise ImageTooLargeError.
    """
    encoding = str(msg.encoding).lower()
    if encoding not in _CHANNELS:
        raise UnsupportedEncodingError(
            f"image encoding '{msg.encoding}' is not supported; use rgb8, bgr8, rgba8, bgra8 or mono8")
    channels = _CHANNELS[encoding]
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    if height <= 0 or width <= 0:
        raise ImageDecodeError(f'image has size {width}x{height}')
    _check_pixels(width, height, max_pixels, 'raw image')
    data = as_uint8(msg.data)
    if step < width * channels or len(data) < step * height:
        raise ImageDecodeError(f'image data too short: {len(data)} bytes for {width}x{height} '
                               f'{encoding} with step {step}')
    rows = data[:step * height].reshape(height, step)[:, :width * channels]
    pixels = rows.reshape(height, width, channels)                       # [H, W, C]
    if encoding in ('rgb8',):
        return np.ascontiguousarray(pixels)
    if encoding in ('bgr8', '8uc3'):
        return np.ascontiguousarray(pixels[:, :, ::-1])
    if encoding == 'rgba8':
        return np.ascontiguousarray(pixels[:, :, :3])
    if encoding == 'bgra8':
        return np.ascontiguousarray(pixels[:, :, 2::-1])
    return np.ascontiguousarray(np.repeat(pixels, 3, axis=2))            # mono8 -> gray RGB


def _decode_bytes(data: bytes, max_pixels: int) -> np.ndarray:
    """JPEG/PNG bytes -> (H, W, 3) uint8 RGB with the core decoder (the official pixels)."""
    from sparsebev_core.image import decode_image
    return decode_image(data, max_pixels)


def compressed_bytes(msg: Any) -> bytes:
    """The JPEG/PNG bytes of a ``sensor_msgs/CompressedImage``, checked as far as possible
    without decoding (format, non-empty, file signature); raises like :func:`compressed_to_rgb`."""
    fmt = str(msg.format).lower()
    if 'compresseddepth' in fmt:
        raise UnsupportedEncodingError(f"compressed image format '{msg.format}' is a depth image; "
                                       'the detector needs colour images')
    data = as_uint8(msg.data).tobytes()
    if not data:
        raise ImageDecodeError('compressed image has no data')
    is_jpeg = data[:3] == b'\xff\xd8\xff'
    is_png = data[:8] == b'\x89PNG\r\n\x1a\n'
    if not (is_jpeg or is_png):
        if any(k in fmt for k in ('jpeg', 'jpg', 'png')) or not fmt:
            raise ImageDecodeError(f"compressed image (format '{msg.format}') is not a valid "
                                   'JPEG or PNG stream')
        raise UnsupportedEncodingError(f"compressed image format '{msg.format}' is not supported; "
                                       'use jpeg or png')
    return data


def compressed_to_rgb(msg: Any, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> np.ndarray:
    """``sensor_msgs/CompressedImage`` (JPEG or PNG) -> (H, W, 3) uint8 RGB.

    The declared size is checked against ``max_pixels`` before anything is decoded."""
    image = _decode_bytes(compressed_bytes(msg), max_pixels)
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    return image


def to_camera_image(msg: Any, decode: bool = True,
                    max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> np.ndarray | bytes:
    """What a ``CameraView`` holds for this message: (H, W, 3) uint8 RGB, or with
    ``decode=False`` a CompressedImage's checked JPEG/PNG bytes (signature read, header size
    checked against ``max_pixels``: ``image.check_image_size``), decoded later by the
    detector's preprocessing (in its thread pool or on the GPU). Raw ``Image`` messages are
    always converted here."""
    if decode or hasattr(msg, 'encoding'):
        return to_rgb(msg, max_pixels)
    data = compressed_bytes(msg)
    from sparsebev_core.image import check_image_size
    check_image_size(data, max_pixels)                  # readable header, size within the limit
    return data


def to_rgb(msg: Any, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> np.ndarray:
    """Image or CompressedImage -> (H, W, 3) uint8 RGB (at most ``max_pixels`` pixels)."""
    if hasattr(msg, 'encoding'):
        return image_to_rgb(msg, max_pixels)
    return compressed_to_rgb(msg, max_pixels)


def rgb_to_image_fields(image: np.ndarray, encoding: str = 'rgb8') -> dict[str, Any]:
    """Field values of a ``sensor_msgs/Image`` for an (H, W, 3) uint8 RGB array."""
    image = np.ascontiguousarray(image, dtype=np.uint8)
    if encoding == 'bgr8':
        image = np.ascontiguousarray(image[:, :, ::-1])
    elif encoding == 'mono8':
        image = np.ascontiguousarray(image[:, :, 0])
    elif encoding != 'rgb8':
        raise UnsupportedEncodingError(f"cannot write encoding '{encoding}'")
    h, w = image.shape[:2]
    return dict(height=h, width=w, encoding=encoding, is_bigendian=0,
                step=image.strides[0], data=image.reshape(-1))


# --------------------------------------------------------------------------------------------
# CameraInfo
# --------------------------------------------------------------------------------------------
def camera_info_K(msg: Any, use_projection_matrix: bool = False) -> np.ndarray:
    """Intrinsics (3, 3) from ``CameraInfo.k``, or from ``p`` (rectified streams).

    A homogeneous K with ``K[2,2]`` other than 1 is normalised by ``K[2,2]`` (a positive
    scale of a projection matrix is the same camera). Refused (CameraInfoError): a matrix
    of the wrong size, non-finite entries, ``K[2,2] <= 0``, and a result whose focal lengths
    are not finite and positive or whose principal point is not finite.
    """
    source = 'p' if use_projection_matrix else 'k'
    try:
        values = np.asarray(msg.p if use_projection_matrix else msg.k, dtype=np.float64)
        K = values.reshape(3, 4)[:, :3].copy() if use_projection_matrix else values.reshape(3, 3).copy()
    except (TypeError, ValueError) as exc:
        raise CameraInfoError(f'CameraInfo.{source} is not a {"3x4" if use_projection_matrix else "3x3"}'
                              f' matrix of numbers ({exc})') from None
    hint = '; the camera driver must publish calibration'
    bad = [f'{source}[{i}]={v}' for i, v in enumerate(K.reshape(-1)) if not math.isfinite(v)]
    if bad:
        raise CameraInfoError(f'CameraInfo.{source} has no usable intrinsics: non-finite entries ({", ".join(bad)}){hint}')
    if not K[2, 2] > 0:
        raise CameraInfoError(f'CameraInfo.{source} has no usable intrinsics: K[2,2]={K[2, 2]} '
                              f'must be > 0 (1 for a normalised matrix){hint}')
    with np.errstate(over='ignore', invalid='ignore'):
        K = K / K[2, 2]
    if not (np.all(np.isfinite(K)) and K[0, 0] > 0 and K[1, 1] > 0):
        raise CameraInfoError(f'CameraInfo.{source} has no usable intrinsics (fx={K[0, 0]}, '
                              f'fy={K[1, 1]}, cx={K[0, 2]}, cy={K[1, 2]} after dividing by '
                              f'K[2,2]){hint}')
    return K


def has_distortion(msg: Any) -> bool:
    """True when CameraInfo carries non-zero distortion coefficients (images not rectified)."""
    d = np.asarray(msg.d, dtype=np.float64).reshape(-1)
    return bool(d.size and (np.any(np.abs(d) > 1e-12) or not np.all(np.isfinite(d))))


def camera_info_size(msg: Any) -> tuple[int, int]:
    """(H, W) the calibration refers to; (0, 0) when unset."""
    return int(msg.height), int(msg.width)


# --------------------------------------------------------------------------------------------
# transforms
# --------------------------------------------------------------------------------------------
QUATERNION_TOLERANCE = 1e-2
"""How far a quaternion's squared norm may be from 1 (tf2's tolerance)."""


def _rigid(translation: tuple, q_xyzw: tuple, what: str) -> np.ndarray:
    """4x4 from a translation and an (x, y, z, w) quaternion; TransformError unless both are
    finite and the quaternion is unit (within tf2's tolerance)."""
    t = np.asarray(translation, np.float64)
    q = np.asarray(q_xyzw, np.float64)
    if not (np.all(np.isfinite(t)) and np.all(np.isfinite(q))):
        raise TransformError(f'{what} has NaN or Inf (translation {t.tolist()}, rotation {q.tolist()})')
    norm = float(np.linalg.norm(q))                   # no overflow for huge components
    if abs(norm * norm - 1.0) > QUATERNION_TOLERANCE:
        raise TransformError(f'{what} rotation {q.tolist()} is not a unit quaternion '
                             f'(norm {norm:.6g})')
    return make_transform(quat_to_rot(quat_xyzw_to_wxyz(q)), t)


def transform_to_matrix(transform: Any) -> np.ndarray:
    """``geometry_msgs/Transform`` (or a TransformStamped) -> 4x4 ``T_parent_child``.

    Raises TransformError for non-finite values or a quaternion that is not unit."""
    if hasattr(transform, 'transform'):
        transform = transform.transform
    t, q = transform.translation, transform.rotation
    return _rigid((t.x, t.y, t.z), (q.x, q.y, q.z, q.w), 'transform')


def matrix_to_translation_quat(T: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """4x4 -> translation (3,) and ROS-order quaternion (x, y, z, w)."""
    T = np.asarray(T, dtype=np.float64)
    return T[:3, 3].copy(), quat_wxyz_to_xyzw(rot_to_quat(T[:3, :3]))
