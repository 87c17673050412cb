"""Raw images with lens distortion: undistorted into the pinhole model, or refused.

SparseBEV projects its sampling points with a pinhole ``K`` (``lidar2img``), so a distorted
image puts every point off by the distortion (tens of pixels at the border of a wide lens).
A raw stream's CameraInfo (``use_projection_matrix: false``) with non-zero ``d`` is therefore,
by ``distorted_images``:

* ``undistort`` (default): remapped into the pinhole camera with the *same* ``K`` and size, no
  rectification rotation (so the image still belongs to its ``frame_id``'s TF frame). The two
  remap tables are built once per camera and calibration (OpenCV ``initUndistortRectifyMap``,
  fixed-point, about 6 bytes per pixel: 8.6 MB for 1600x900) and rebuilt only when the
  calibration changes. Models: ``plumb_bob`` and ``rational_polynomial`` (OpenCV's 4, 5, 8, 12
  or 14 coefficients), ``equidistant`` (OpenCV fisheye, 4 coefficients);
* ``refuse``: the camera is missing from the frame with reason ``distorted_image``.

A model we cannot undistort (another name, the wrong number of coefficients, NaN/Inf) makes the
camera missing with reason ``unsupported_distortion``. Rectified streams (image_proc's
``image_rect`` with ``use_projection_matrix: true``) are never touched: their CameraInfo
describes the raw camera.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from . import reasons

PLUMB_BOB_MODELS = ('plumb_bob', 'rational_polynomial')
OPENCV_COEFFICIENT_COUNTS = (4, 5, 8, 12, 14)
EQUIDISTANT = 'equidistant'
SUPPORTED_MODELS = PLUMB_BOB_MODELS + (EQUIDISTANT,)


class DistortionRefused(Exception):
    """The camera's image cannot be used as a pinhole image; ``reason`` is the missing key."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason


@dataclass(frozen=True)
class Calibration:
    """What the remap tables depend on (a change rebuilds them)."""
    model: str
    d: tuple[float, ...]
    k: tuple[float, ...]
    width: int
    height: int


def calibration_of(info: Any, K: np.ndarray, image_hw: tuple[int, int]) -> Calibration:
    """The calibration of one camera (``image_hw``: the image's size, which the CameraInfo's
    matches when it gives one)."""
    d = tuple(float(v) for v in np.asarray(info.d, dtype=np.float64).reshape(-1))
    return Calibration(str(info.distortion_model), d, tuple(float(v) for v in K.reshape(-1)),
                       int(image_hw[1]), int(image_hw[0]))


def check_supported(c: Calibration) -> None:
    """DistortionRefused(``unsupported_distortion``) unless :func:`remap_tables` can undistort."""
    def refuse(why: str) -> DistortionRefused:
        return DistortionRefused(reasons.UNSUPPORTED_DISTORTION,
                                 f"cannot undistort distortion_model '{c.model}' with "
                                 f'{len(c.d)} coefficients: {why}')
    if not all(np.isfinite(c.d)):
        raise refuse('non-finite coefficients (a broken calibration?)')
    if c.model in PLUMB_BOB_MODELS:
        if len(c.d) not in OPENCV_COEFFICIENT_COUNTS:
            raise refuse(f'{c.model} needs one of {OPENCV_COEFFICIENT_COUNTS} coefficients')
    elif c.model == EQUIDISTANT:
        if len(c.d) != 4:
            raise refuse('equidistant needs 4 coefficients (k1..k4)')
    else:
        raise refuse(f'supported models: {", ".join(SUPPORTED_MODELS)}')


def remap_tables(c: Calibration) -> tuple[np.ndarray, np.ndarray]:
    """OpenCV remap tables taking the distorted image to the pinhole camera ``K`` (same size,
    no rectification rotation)."""
    import cv2
    K = np.asarray(c.k, dtype=np.float64).reshape(3, 3)
    D = np.asarray(c.d, dtype=np.float64)
    size = (c.width, c.height)
    if c.model == EQUIDISTANT:
        return cv2.fisheye.initUndistortRectifyMap(K, D, np.eye(3), K, size, cv2.CV_16SC2)
    return cv2.initUndistortRectifyMap(K, D, np.eye(3), K, size, cv2.CV_16SC2)


class Undistorter:
    """Per camera, the remap tables of its latest calibration; see the module docstring.

    Args:
        mode: ``undistort`` or ``refuse`` (the ``distorted_images`` parameter).
    """

    def __init__(self, mode: str = 'undistort'):
        self.mode = mode
        self._tables: dict[int, tuple[Calibration, tuple[np.ndarray, np.ndarray]]] = {}

    def __call__(self, camera_index: int, image: np.ndarray, info: Any, K: np.ndarray
                 ) -> np.ndarray:
        """``image`` (H, W, 3) as a pinhole image of ``K``; raises DistortionRefused."""
        c = calibration_of(info, K, (image.shape[0], image.shape[1]))
        if self.mode == 'refuse':
            raise DistortionRefused(reasons.DISTORTED_IMAGE,
                                    f"CameraInfo has non-zero distortion ({c.model}) on a raw "
                                    "stream and distorted_images is 'refuse': give rectified "
                                    "images (image_proc) with use_projection_matrix: true, or "
                                    "set distorted_images: 'undistort'")
        cached = self._tables.get(camera_index)
        if cached is None or cached[0] != c:
            check_supported(c)
            cached = (c, remap_tables(c))
            self._tables[camera_index] = cached
        import cv2
        map1, map2 = cached[1]
        return cv2.remap(image, map1, map2, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
