"""The official augmentations as functions: geometry kept consistent, distributions as specified."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from sparsebev_core.data import transforms as T
from sparsebev_core import geometry
from sparsebev_core.geometry import POINT_CLOUD_RANGE, box_corners, project_points


def test_test_time_image_aug_is_the_geometry_test_time_transform():
    aug = T.sample_image_aug((900, 1600), (256, 704), training=False)
    ida, info = geometry.test_time_image_transform((900, 1600), (256, 704))
    np.testing.assert_allclose(aug.ida(), ida)
    assert aug.resize == pytest.approx(0.44) and aug.crop == info['crop'] == (0, 140, 704, 396)
    assert not aug.flip


def test_training_image_aug_draws_resize_crop_and_flip_in_range():
    np.random.seed(0)
    augs = [T.sample_image_aug((900, 1600), (256, 704), True, (0.38, 0.55)) for _ in range(200)]
    assert all(0.38 <= a.resize <= 0.55 for a in augs)
    assert all(a.crop[1] == a.resize_dims[1] - 256 for a in augs)              # bottom crop
    assert all(0 <= a.crop[0] <= max(0, a.resize_dims[0] - 704) for a in augs)
    assert 60 < sum(a.flip for a in augs) < 140


def test_flipped_ida_mirrors_projected_pixels():
    aug = T.ImageAug(0.5, (800, 450), (48, 194, 752, 450), True, (256, 704))
    plain = T.ImageAug(0.5, (800, 450), (48, 194, 752, 450), False, (256, 704))
    pix = np.array([[100.0, 500.0, 1.0, 1.0]]) * 7.0                          # (u d, v d, d, 1)
    pix[0, 3] = 1.0
    u_plain = (plain.ida() @ pix[0])[:2] / 7.0
    u_flip = (aug.ida() @ pix[0])[:2] / 7.0
    assert u_flip[0] == pytest.approx(704 - u_plain[0]) and u_flip[1] == pytest.approx(u_plain[1])


def test_apply_image_aug_flips_pixels_with_the_matrix():
    img = np.zeros((90, 160, 3), np.uint8)
    img[40:50, 10:20] = 255                                                   # bright patch left
    aug = T.ImageAug(1.0, (160, 90), (0, 0, 160, 90), True, (90, 160))
    out = T.apply_image_aug(img, aug)
    ys, xs = np.nonzero(out[..., 0] > 128)
    centre = aug.ida() @ np.array([15.0, 45.0, 1.0, 1.0])
    assert abs(xs.mean() - centre[0]) < 1.0 and abs(ys.mean() - centre[1]) < 1.0


def test_bev_aug_moves_boxes_and_matrices_together():
    rng = np.random.default_rng(0)
    lidar2img = rng.normal(size=(12, 4, 4))
    boxes = np.concatenate([rng.uniform(-30, 30, (5, 3)), rng.uniform(1, 4, (5, 3)),
                            rng.uniform(-3, 3, (5, 1)), rng.uniform(-5, 5, (5, 2))], axis=1)
    new_l2i, new_boxes = T.apply_bev_aug(lidar2img, boxes, 0.3, 1.04)
    # the corners of the augmented boxes project exactly where the original corners did
    for m in range(12):
        uv0, d0 = project_points(lidar2img[m], box_corners(boxes).reshape(-1, 3))
        uv1, d1 = project_points(new_l2i[m], box_corners(new_boxes).reshape(-1, 3))
        np.testing.assert_allclose(d1, d0, rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(uv1, uv0, rtol=1e-7, atol=1e-7)
    assert np.allclose(np.hypot(*new_boxes[:, 7:9].T), 1.04 * np.hypot(*boxes[:, 7:9].T))
    np.testing.assert_allclose(new_boxes[:, 6], boxes[:, 6] + 0.3)
    # velocity direction turns with the boxes
    ang = np.arctan2(new_boxes[:, 8], new_boxes[:, 7]) - np.arctan2(boxes[:, 8], boxes[:, 7])
    np.testing.assert_allclose(np.angle(np.exp(1j * (ang - 0.3))), 0.0, atol=1e-9)


def test_filter_gt_keeps_valid_in_range_detection_classes():
    boxes = np.zeros((5, 9))
    boxes[:, 0] = [0.0, 51.2, 51.19, -10.0, 5.0]
    boxes[:, 6] = [4.0, 0.0, 0.0, 0.0, 0.0]
    boxes[0, 7:9] = np.nan
    labels = np.array([0, 1, 2, -1, 3])
    valid = np.array([True, True, True, True, False])
    out, out_labels, index = T.filter_gt(boxes, labels, valid, POINT_CLOUD_RANGE)
    assert index.tolist() == [0, 2] and out_labels.tolist() == [0, 2]
    assert out[0, 6] == pytest.approx(4.0 - 2 * np.pi)                         # wrapped yaw
    assert np.all(out[0, 7:9] == 0.0)                                         # NaN velocity


def test_hsv_round_trip_is_exact_enough():
    x = torch.rand(2, 3, 8, 8) * 255
    np.testing.assert_allclose(T.hsv_to_rgb(T.rgb_to_hsv(x)).numpy(), x.numpy(), atol=1e-3)


def test_photometric_distortion_changes_images_per_image_and_leaves_input_alone():
    np.random.seed(1)
    x = torch.rand(6, 3, 16, 16) * 255
    before = x.clone()
    y = T.PhotoMetricDistortion()(x)
    assert torch.equal(x, before) and y.shape == x.shape and y.dtype == torch.float32
    changed = [(y[i] - x[i]).abs().mean().item() > 0.5 for i in range(6)]
    assert any(changed)
    np.random.seed(1)
    assert torch.equal(T.PhotoMetricDistortion()(x), y)                       # seeded


def test_grid_mask_drops_the_same_squares_in_every_image_and_channel():
    x = torch.ones(4, 3, 64, 96)
    np.random.seed(3)
    masks = []
    for _ in range(20):
        y = T.GridMask()(x)
        if not torch.equal(y, x):
            assert torch.equal(y[0], y[3]) and torch.equal(y[0, 0], y[0, 2])
            masks.append(1.0 - y.mean().item())
    assert 8 <= len(masks) <= 19                                              # p = 0.7
    assert all(0.05 < m < 0.5 for m in masks)
