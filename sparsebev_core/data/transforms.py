"""The official data augmentations (docs/official_model.md 5.4-5.6), as plain functions.

Per sample (CPU, in the dataset):

* :func:`sample_image_aug` + :func:`apply_image_aug`: one resize / crop / flip shared by all
  frames and cameras of a sample; its ``ida`` left-multiplies every ``lidar2img``.
* :func:`filter_gt`: valid flag, BEV range (strict), class filter, yaw wrap, NaN velocity 0.
* :func:`sample_bev_aug` + :func:`apply_bev_aug`: rotation about z and isotropic scale of
  boxes and matrices (``lidar2img @ R^-1 @ S^-1``, :func:`bev_aug_inverse`).

Per image batch (on the training device, called by the detector through its hooks):

* :class:`PhotoMetricDistortion` on float RGB 0..255 ``[N, 3, H, W]``;
* :class:`GridMask` on normalised ``[N, 3, H, W]``.

Random draws use NumPy's global generator in the official order (the trainer seeds it per
sample), so a seeded run draws the same augmentation as the official pipeline would.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ..geometry import image_transform_matrix, wrap_angle


# ------------------------------------------------------------------------ image space (5.5)
@dataclass
class ImageAug:
    """One resize -> crop -> flip (rotation is always 0 in the official configs)."""
    resize: float
    resize_dims: tuple[int, int]          # (newW, newH)
    crop: tuple[int, int, int, int]       # (left, top, right, bottom) in resized pixels
    flip: bool
    final_hw: tuple[int, int]

    def ida(self) -> np.ndarray:
        """4x4 image transform that left-multiplies ``lidar2img``."""
        return image_transform_matrix(self.resize, self.crop[:2], flip=self.flip,
                                      final_width=self.final_hw[1])


def sample_image_aug(orig_hw: tuple[int, int], final_hw: tuple[int, int], training: bool,
                     resize_lim: tuple[float, float] = (0.38, 0.55), rand_flip: bool = True
                     ) -> ImageAug:
    """Official ``RandomTransformImage.sample_augmentation`` (BEVDet ``ida_aug_conf``).

    Train: r ~ U(resize_lim), bottom crop, left crop ~ U(0, newW - fW), flip with p = 0.5.
    Test: r = max(fH / H, fW / W), bottom crop, centred horizontally, no flip.
    """
    H, W = orig_hw
    fH, fW = final_hw
    if training:
        resize = float(np.random.uniform(*resize_lim))
        new_w, new_h = int(W * resize), int(H * resize)
        crop_top = int((1 - np.random.uniform(0.0, 0.0)) * new_h) - fH    # bot_pct_lim = (0, 0)
        crop_left = int(np.random.uniform(0, max(0, new_w - fW)))
        flip = bool(rand_flip and np.random.choice([0, 1]))
        np.random.uniform(0.0, 0.0)                                        # rot_lim = (0, 0)
    else:
        resize = max(fH / H, fW / W)
        new_w, new_h = int(W * resize), int(H * resize)
        crop_top = new_h - fH
        crop_left = int(max(0, new_w - fW) / 2)
        flip = False
    return ImageAug(resize, (new_w, new_h), (crop_left, crop_top, crop_left + fW, crop_top + fH),
                    flip, (fH, fW))


def apply_image_aug(image: np.ndarray, aug: ImageAug, method: str = 'pil') -> np.ndarray:
    """Resize / crop / flip one (H, W, 3) uint8 RGB image (PIL bicubic by default)."""
    from ..image import transform_image
    out, _ = transform_image(image, aug.resize, aug.crop[:2], aug.final_hw, flip=aug.flip,
                             method=method)
    return out


# ------------------------------------------------------------------------ annotations (5.4)
def filter_gt(boxes: np.ndarray, labels: np.ndarray, valid: np.ndarray | None,
              pc_range: tuple[float, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Training GT: drop invalid boxes (no lidar/radar points), boxes whose BEV centre is not
    strictly inside the range, and non-detection classes (label < 0); wrap yaw into
    [-pi, pi); NaN velocities become 0 (mmdet3d ``NuScenesDataset``).

    Returns the kept boxes, their labels and their indices into the input."""
    boxes = np.array(boxes, dtype=np.float64).reshape(-1, 9)
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    keep = np.ones(len(boxes), dtype=bool) if valid is None else np.asarray(valid, bool).copy()
    x, y = boxes[:, 0], boxes[:, 1]
    keep &= (x > pc_range[0]) & (y > pc_range[1]) & (x < pc_range[3]) & (y < pc_range[4])
    keep &= labels >= 0
    boxes, labels = boxes[keep], labels[keep]
    boxes[:, 6] = wrap_angle(boxes[:, 6])
    boxes[:, 7:9] = np.nan_to_num(boxes[:, 7:9], nan=0.0)
    return boxes, labels, np.flatnonzero(keep)


# ------------------------------------------------------------------------ BEV (5.6)
def sample_bev_aug(rot_range: tuple[float, float] = (-0.3925, 0.3925),
                   scale_range: tuple[float, float] = (0.95, 1.05)) -> tuple[float, float]:
    """Rotation angle (rad, counter-clockwise about +z) and scale, in the official draw order."""
    angle = float(np.random.uniform(*rot_range))
    scale = float(np.random.uniform(*scale_range))
    return angle, scale


def bev_aug_inverse(angle: float, scale: float) -> np.ndarray:
    """``R^-1 @ S^-1`` (4x4 float64): augmented model frame -> original model frame, the matrix
    that right-multiplies every ``lidar2img`` and the keyframe's model -> world pose (the
    official ``GlobalRotScaleTransImage`` multiplies it into ``ego_pose`` and its inverse into
    ``ego_pose_inv``, so the recurrent state's ego motion sees the augmented frames)."""
    c, s = math.cos(angle), math.sin(angle)
    R = np.array([[c, -s, 0, 0], [s, c, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]], dtype=np.float64)
    S = np.diag([scale, scale, scale, 1.0])
    return np.linalg.inv(R) @ np.linalg.inv(S)


def apply_bev_aug(lidar2img: np.ndarray, boxes: np.ndarray, angle: float, scale: float
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Rotate then scale the model frame: boxes move with it, matrices absorb the inverse.

    Args:
        lidar2img: (M, 4, 4) projections of the model frame.
        boxes: (K, 9) ``[x, y, z, dx, dy, dz, yaw, vx, vy]`` (any z origin).
    Returns:
        ``lidar2img @ R^-1 @ S^-1`` and the rotated, scaled boxes (yaw += angle; centres,
        sizes and velocities times ``scale``).
    """
    lidar2img = np.asarray(lidar2img, np.float64) @ bev_aug_inverse(angle, scale)   # (M, 4, 4)
    boxes = np.array(boxes, dtype=np.float64).reshape(-1, 9)
    c, s = math.cos(angle), math.sin(angle)
    R2 = np.array([[c, -s], [s, c]])
    boxes[:, 0:2] = boxes[:, 0:2] @ R2.T
    boxes[:, 7:9] = boxes[:, 7:9] @ R2.T
    boxes[:, 6] = boxes[:, 6] + angle
    boxes[:, 0:6] *= scale
    boxes[:, 7:9] *= scale
    return lidar2img, boxes


# ------------------------------------------------------------------------ device side (5.6)
def rgb_to_hsv(image: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """RGB 0..255 ``[N, 3, H, W]`` -> HSV with H in degrees [0, 360), S in [0, 1], V 0..255."""
    x = image / 255.0
    max_rgb, argmax_rgb = x.max(dim=-3)                                       # [N, H, W]
    min_rgb, _ = x.min(dim=-3)
    delta = max_rgb - min_rgb
    v = max_rgb
    s = delta / (max_rgb + eps)
    delta = torch.where(delta == 0, torch.ones_like(delta), delta)
    rc, gc, bc = torch.unbind(max_rgb.unsqueeze(-3) - x, dim=-3)
    h = torch.stack((bc - gc, (rc - bc) + 2.0 * delta, (gc - rc) + 4.0 * delta), dim=-3)
    h = h / delta.unsqueeze(-3)                                               # [N, 3, H, W]
    h = torch.gather(h, -3, argmax_rgb.unsqueeze(-3)).squeeze(-3)
    h = (h / 6.0) % 1.0
    return torch.stack((h * 360.0, s, v * 255.0), dim=-3)


def hsv_to_rgb(image: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`rgb_to_hsv` (H in degrees, V 0..255) -> RGB 0..255."""
    h = image[..., 0, :, :] / 360.0
    s = image[..., 1, :, :]
    v = image[..., 2, :, :] / 255.0
    hi = torch.floor(h * 6) % 6
    f = ((h * 6) % 6) - hi
    p = v * (1 - s)
    q = v * (1 - f * s)
    t = v * (1 - (1 - f) * s)
    hi = hi.long()
    idx = torch.stack([hi, hi + 6, hi + 12], dim=-3)
    table = torch.stack((v, q, p, p, t, v, t, v, v, q, p, p, p, p, t, v, v, q), dim=-3)
    return torch.gather(table, -3, idx) * 255.0


class PhotoMetricDistortion:
    """Official ``GpuPhotoMetricDistortion`` on float RGB 0..255 images ``[N, 3, H, W]``.

    Per image, each with p = 0.5: brightness + U(-32, 32); contrast x U(0.5, 1.5) either
    first or last (chosen per image); saturation x U(0.5, 1.5); hue + U(-18, 18) degrees;
    channel permutation. No clamping (as the official code). The official code works on BGR
    input and swaps to RGB internally; the detector hands us RGB, so no swap is needed.
    """

    def __init__(self, brightness_delta: float = 32, contrast_range: tuple[float, float] = (0.5, 1.5),
                 saturation_range: tuple[float, float] = (0.5, 1.5), hue_delta: float = 18):
        self.brightness_delta = brightness_delta
        self.contrast_lower, self.contrast_upper = contrast_range
        self.saturation_lower, self.saturation_upper = saturation_range
        self.hue_delta = hue_delta

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        rnd = np.random
        imgs = images.float().clone()                                         # [N, 3, H, W]
        n = imgs.shape[0]
        contrast_last = [rnd.randint(2) for _ in range(n)]
        for i in range(n):
            if rnd.randint(2):
                imgs[i] += rnd.uniform(-self.brightness_delta, self.brightness_delta)
            if contrast_last[i] == 0 and rnd.randint(2):
                imgs[i] *= rnd.uniform(self.contrast_lower, self.contrast_upper)
        hsv = rgb_to_hsv(imgs)
        for i in range(n):
            if rnd.randint(2):
                hsv[i, 1] *= rnd.uniform(self.saturation_lower, self.saturation_upper)
            if rnd.randint(2):
                hsv[i, 0] += rnd.uniform(-self.hue_delta, self.hue_delta)
        hue = hsv[:, 0]
        hue[hue > 360] -= 360
        hue[hue < 0] += 360
        imgs = hsv_to_rgb(hsv)
        for i in range(n):
            if contrast_last[i] == 1 and rnd.randint(2):
                imgs[i] *= rnd.uniform(self.contrast_lower, self.contrast_upper)
            if rnd.randint(2):
                imgs[i] = imgs[i, torch.as_tensor(rnd.permutation(3))]
        return imgs


class GridMask:
    """Official ``GridMask`` (ratio 0.5, p = 0.7): one stripe lattice for every image and
    channel of the call; the (d - l)^2 squares between stripes are zeroed."""

    def __init__(self, ratio: float = 0.5, prob: float = 0.7):
        self.ratio = ratio
        self.prob = prob

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if np.random.rand() > self.prob:
            return x
        n, c, h, w = x.shape
        hh, ww = int(1.5 * h), int(1.5 * w)
        d = np.random.randint(2, h)
        l = min(max(int(d * self.ratio + 0.5), 1), d - 1)
        mask = np.ones((hh, ww), np.uint8)
        st_h = np.random.randint(d)
        st_w = np.random.randint(d)
        for i in range(hh // d):
            s = d * i + st_h
            mask[s:min(s + l, hh), :] = 0
        for i in range(ww // d):
            s = d * i + st_w
            mask[:, s:min(s + l, ww)] = 0
        top, left = (hh - h) // 2, (ww - w) // 2
        mask = 1 - torch.as_tensor(mask[top:top + h, left:left + w], dtype=x.dtype, device=x.device)
        return x * mask                                                       # [N, 3, H, W]
