"""Camera rigs built in code, for the model and training tests that need no dataset."""
from __future__ import annotations

import math

import numpy as np
import torch

from sparsebev_core import geometry


def ring_of_cameras() -> list[tuple[np.ndarray, np.ndarray]]:
    """Six pinhole cameras (400x225 intrinsics) 1.5 m up, looking out horizontally at
    nuScenes-like yaws: ``(K [3, 3], T_ego_cam [4, 4])`` each."""
    K = np.array([[300.0, 0, 200], [0, 300.0, 112.5], [0, 0, 1]])
    cam_to_ego_axes = np.array([[0, 0, 1], [-1, 0, 0], [0, -1, 0]], float)
    return [(K, geometry.make_transform(geometry.rot_z(np.deg2rad(yaw))[:3, :3] @ cam_to_ego_axes, [0, 0, 1.5]))
            for yaw in (0, -55, 55, 180, 110, -110)]


def ring_lidar2img(input_hw: tuple[int, int]) -> np.ndarray:
    """``lidar2img [6, 4, 4]`` float32 of :func:`ring_of_cameras` (ego = model frame) at the
    network input ``input_hw`` (the official test-time resize of 400x225 images)."""
    ida, _ = geometry.test_time_image_transform((225, 400), tuple(input_hw))
    return np.stack([geometry.compose_lidar2img(K, T, np.eye(4), np.eye(4), np.eye(4), ida)
                     for K, T in ring_of_cameras()]).astype(np.float32)


def outward_lidar2img(input_hw: tuple[int, int], batch: int = 1, cameras: int = 6) -> torch.Tensor:
    """``[batch, cameras, 4, 4]``: cameras evenly around the vehicle at its origin, looking
    outwards, a 90 degree field of view over the input width."""
    h, w = input_hw
    lidar2img = torch.zeros(batch, cameras, 4, 4)
    for c in range(cameras):
        yaw = 2 * math.pi * c / cameras
        cam_from_lidar = torch.tensor([[-math.sin(yaw), math.cos(yaw), 0, 0],
                                       [0, 0, -1, 0],
                                       [math.cos(yaw), math.sin(yaw), 0, 0],
                                       [0, 0, 0, 1]], dtype=torch.float32)
        k = torch.tensor([[w / 2, 0, w / 2, 0], [0, w / 2, h / 2, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
        lidar2img[:, c] = k @ cam_from_lidar
    return lidar2img
