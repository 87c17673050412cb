"""Where the queries look: the sampling points of chosen queries in every frame and camera
(paper Fig. 6, official ``viz_sample_points.py``).

:class:`SamplingPointRecorder` watches the head's ``SpatioTemporalSampling`` module with a
forward hook and recomputes, from the very inputs of each call, the 3-D points, their
velocity warp and their projection with the head's own functions (``model.sampling``); the
model code is untouched. One record per decoder stage.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from ..geometry import CAMERA_NAMES
from ..model import sampling as S
from .draw import GRID_ORDER


@dataclass
class SamplingRecord:
    """Projected sampling points of one decoder stage (batch element 0 kept).

    uv: (T, Q, K, 2) pixels of the network input; camera: (T, Q, K) index of the camera each
    point samples (first valid one, as the model does); valid: (T, Q, K) whether the point lies
    in that camera's image; depth: (T, Q, K) metres in front of that camera.
    """
    uv: np.ndarray
    camera: np.ndarray
    valid: np.ndarray
    depth: np.ndarray


class SamplingPointRecorder:
    """Context manager: ``with SamplingPointRecorder(model) as rec: model(...)``; then
    ``rec.records`` holds one :class:`SamplingRecord` per decoder stage."""

    def __init__(self, model: torch.nn.Module):
        self.modules = [m for m in model.modules() if isinstance(m, S.SpatioTemporalSampling)]
        if not self.modules:
            raise ValueError('the model has no SpatioTemporalSampling module to watch')
        self.records: list[SamplingRecord] = []
        self._handles = []

    def __enter__(self) -> 'SamplingPointRecorder':
        self.records.clear()
        self._handles = [m.register_forward_hook(self._hook) for m in self.modules]
        return self

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    @torch.no_grad()
    def _hook(self, module: S.SpatioTemporalSampling, inputs, output) -> None:
        query_bbox, query_feat, _features, lidar2img, time_diff, image_hw = inputs
        b, q = query_bbox.shape[:2]
        t, g, p = module.num_frames, module.num_groups, module.num_points
        offsets = module.sampling_offset(query_feat).view(b, q, g * p, 3)      # [B, Q, GP, 3]
        points = S.make_sample_points(query_bbox, offsets, module.pc_range,
                                      module.legacy_yaw_convention)            # [B, Q, GP, 3]
        points = points.reshape(b, q, 1, g, p, 3).expand(b, q, t, g, p, 3)
        points = S.warp_points_by_velocity(points, query_bbox[..., 8:10], time_diff)
        points = points.reshape(b, q, t, g * p, 3)                             # [B, Q, T, K, 3]
        uv, valid = S.project_points(points, lidar2img, image_hw)              # [B, T, N, Q, K, 2]
        chosen, camera = S.select_first_valid_camera(uv, valid)                # [B, T, Q, K, 2]
        n = valid.shape[2]
        cam_xyz = S.apply_homogeneous(lidar2img.reshape(b, t, n, 1, 1, 4, 4),
                                      points.permute(0, 2, 1, 3, 4)[:, :, None])  # [B, T, N, Q, K, 4]
        index = camera[:, :, None]                                             # [B, T, 1, Q, K]
        depth = torch.gather(cam_xyz[..., 2], 2, index).squeeze(2)             # [B, T, Q, K]
        ok = torch.gather(valid, 2, index).squeeze(2)                          # [B, T, Q, K]
        h, w = image_hw
        pixels = chosen * chosen.new_tensor([w, h])                            # [B, T, Q, K, 2]
        self.records.append(SamplingRecord(pixels[0].cpu().numpy(), camera[0].cpu().numpy(),
                                           ok[0].cpu().numpy(), depth[0].cpu().numpy()))


def marker_size(depth: np.ndarray) -> np.ndarray:
    """Marker area shrinking with depth (the official formula 4^(2.4 log(60 / d^0.8) + 1),
    scaled down for small images)."""
    d = np.clip(depth, 1.0, 200.0)
    return np.clip(4.0 ** (2.4 * np.log(60.0 / d ** 0.8) / np.log(60.0) + 1.0), 1.0, 64.0)


def sampling_points_figure(images: np.ndarray, record: SamplingRecord, queries: Sequence[int],
                           num_frames: int = 3, title: str = ''):
    """One row per frame (first ``num_frames``), six cameras in the grid order, the valid
    sampling points of ``queries`` drawn over the network-input images, colour by query.

    images: (T*6, H, W, 3) uint8 network inputs, frame-major.
    """
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    T = record.uv.shape[0]
    num_frames = min(num_frames, T)
    H, W = images.shape[1:3]
    fig, axes = plt.subplots(num_frames, 6, figsize=(6 * 3.0, num_frames * 3.0 * H / W + 0.4),
                             squeeze=False)
    colours = plt.get_cmap('tab10')
    for f in range(num_frames):
        for col, name in enumerate(GRID_ORDER):
            cam = CAMERA_NAMES.index(name)
            ax = axes[f, col]
            ax.imshow(images[f * 6 + cam])
            for k, qi in enumerate(queries):
                sel = record.valid[f, qi] & (record.camera[f, qi] == cam)
                if sel.any():
                    uv = record.uv[f, qi][sel]
                    ax.scatter(uv[:, 0], uv[:, 1], s=marker_size(record.depth[f, qi][sel]),
                               color=colours(k % 10), edgecolors='none')
            ax.set_xlim(0, W)
            ax.set_ylim(H, 0)
            ax.set_axis_off()
            if f == 0:
                ax.set_title(name, fontsize=7)
        axes[f, 0].text(-0.02, 0.5, f'frame {f}', transform=axes[f, 0].transAxes, fontsize=7,
                        rotation=90, va='center', ha='right')
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig
