"""Per-camera network inputs of one frame: decode (if encoded), the official test-time resize and
crop for each camera's own size (one ``ida`` per camera), upload to the model's device.

:class:`CameraInputs` runs the cameras in a thread pool when asked (decoders and resizers
release the GIL), or resizes on the device (``device_preprocess``: the ``'torch'`` resize,
JPEGs decoded on the GPU when a GPU decoder is installed). A missing camera gets no pixels,
only its nominal geometry (:class:`CameraGeometry`, ``valid=False``).
"""
from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

from ..frame import Frame, InvalidFrameError
from ..image import (ImageDecodeError, ResizeMethod, as_rgb_image, device_jpeg_decoder,
                     resize_crop, resize_crop_tensor)
from .checks import camera_label


@dataclass(frozen=True)
class CameraGeometry:
    """What is needed to rebuild one camera's ``lidar2img`` for any later reference pose."""
    K: np.ndarray               # (3, 3) intrinsics of the original image
    T_ego_cam: np.ndarray       # (4, 4) camera -> ego
    T_world_ego: np.ndarray     # (4, 4) ego pose at the camera's own stamp
    ida: np.ndarray             # (4, 4) resize/crop of the network input
    stamp: float                # capture time (s)
    valid: bool = True          # False: the camera was missing (zeros in its feature slot)


class CameraInputs:
    """Decode, resize / crop and upload the cameras of a frame (see the module doc).

    Args:
        device: the model's device (where the batch goes).
        input_hw: the network input size ``cfg.input_size``.
        resize_method: 'pil' (official pixels), 'cv2' or 'torch' (``image.py``).
        device_preprocess: resize and crop on ``device`` ('torch' resize only).
        workers: threads for the cameras (0: in the calling thread). Same pixels either way.
    """

    def __init__(self, device: torch.device, input_hw: tuple[int, int],
                 resize_method: ResizeMethod, device_preprocess: bool, workers: int) -> None:
        self.device = device
        self.input_hw = input_hw
        self.resize_method = resize_method
        self.device_preprocess = device_preprocess
        self._pool = ThreadPoolExecutor(int(workers), 'sparsebev-preprocess') if workers > 0 else None
        self._device_decoder = device_jpeg_decoder() if device.type == 'cuda' else None

    def prepare(self, frame: Frame) -> tuple[torch.Tensor, tuple[CameraGeometry, ...]]:
        """Decode, resize and crop the present cameras' images (each by the rule for its own
        size); returns [n_valid, 3, H, W] uint8 + the geometry of all N cameras."""
        indexed = list(enumerate(frame.cameras))
        if self._pool is not None:                       # decoders and resizers release the GIL
            prepared = list(self._pool.map(lambda item: self._prepare_camera(*item, frame), indexed))
        else:
            prepared = [self._prepare_camera(*item, frame) for item in indexed]
        # n_valid x [H, W, 3] uint8 (host) or [3, H, W] on the device (device_preprocess)
        images = [image for image, _ in prepared if image is not None]
        if self.device_preprocess:
            batch = torch.stack([image.permute(1, 2, 0) for image in images])  # [n, H, W, 3]
            batch = batch.permute(0, 3, 1, 2)             # [n, 3, H, W] uint8, as the host path
        else:
            batch = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2)   # [n, 3, H, W] uint8
            batch = batch.to(self.device, non_blocking=True)
        return batch, tuple(geometry for _, geometry in prepared)

    def _prepare_camera(self, index: int, camera, frame: Frame
                        ) -> tuple[np.ndarray | torch.Tensor | None, CameraGeometry]:
        """One camera: network-input pixels ((H, W, 3) uint8, or [3, H, W] on the device with
        ``device_preprocess``) and its geometry; a missing camera: None and its nominal geometry
        (identity where unknown: any finite matrix)."""
        if not camera.valid:
            stamp = float(camera.stamp) if math.isfinite(camera.stamp) else float(frame.stamp)
            return None, CameraGeometry(
                np.eye(3) if camera.K is None else np.asarray(camera.K, np.float64),
                np.eye(4) if camera.T_ego_cam is None else np.asarray(camera.T_ego_cam, np.float64),
                np.asarray(frame.T_world_ego if camera.T_world_ego is None else camera.T_world_ego,
                           np.float64), np.eye(4), stamp, valid=False)
        try:
            if self.device_preprocess:
                image, ida = resize_crop_tensor(self._upload(camera.image), self.input_hw)
            else:
                image, ida = resize_crop(as_rgb_image(camera.image), self.input_hw,
                                         method=self.resize_method)
        except ValueError as err:
            raise InvalidFrameError(f'{camera_label(camera, index, frame.camera_names)} at {camera.stamp:.6f} s: '
                                    f'{err}') from err
        return image, CameraGeometry(
            np.asarray(camera.K, np.float64), np.asarray(camera.T_ego_cam, np.float64),
            np.asarray(camera.T_world_ego, np.float64), ida, float(camera.stamp))

    def _upload(self, image) -> torch.Tensor:
        """Decoded uint8 ``[3, H, W]`` on the device (JPEGs through the GPU decoder if any)."""
        if self._device_decoder is not None and isinstance(image, (bytes, bytearray, memoryview)) \
                and bytes(image[:2]) == b'\xff\xd8':
            try:
                return self._device_decoder(bytes(image), self.device)
            except RuntimeError as err:
                raise ImageDecodeError(f'GPU JPEG decoder: {err}') from err
        rgb = as_rgb_image(image)                                         # (H, W, 3) uint8
        return torch.from_numpy(rgb).to(self.device, non_blocking=True).permute(2, 0, 1)
