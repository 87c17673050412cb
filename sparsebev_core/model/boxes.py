"""The four box layouts of SparseBEV (docs/official_model.md section 1.1), as pure functions.

| layout | fields |
|---|---|
| LiDAR box (9)            | x, y, z_bottom, dx, dy, dz, yaw, vx, vy  (final output, GT container) |
| gravity box (9)          | x, y, z_center, dx, dy, dz, yaw, vx, vy  (loss targets, DN input) |
| query box (10)           | x^, y^, z^, log dx, log dy, log dz, sin, cos, vx, vy  (decoder state) |
| head output (10)         | x, y, log dx, log dy, z_center, log dz, sin, cos, vx, vy  (losses, coder) |

x^, y^, z^ are centres normalised to [0, 1] by the point-cloud range. Velocities may be
absent (7-D / 8-D variants), as in the official helpers.
"""
from __future__ import annotations

from typing import Sequence

import torch

Tensor = torch.Tensor


def normalize_bbox(boxes: Tensor) -> Tensor:
    """Gravity box ``[..., 7|9]`` -> head-output layout ``[..., 8|10]`` (log sizes, sin/cos)."""
    cx, cy, cz = boxes[..., 0:1], boxes[..., 1:2], boxes[..., 2:3]
    log_dx, log_dy, log_dz = boxes[..., 3:4].log(), boxes[..., 4:5].log(), boxes[..., 5:6].log()
    yaw = boxes[..., 6:7]
    fields = [cx, cy, log_dx, log_dy, cz, log_dz, yaw.sin(), yaw.cos()]
    if boxes.shape[-1] > 7:
        fields += [boxes[..., 7:8], boxes[..., 8:9]]                  # vx, vy
    return torch.cat(fields, dim=-1)


def denormalize_bbox(head_boxes: Tensor) -> Tensor:
    """Head-output layout ``[..., 8|10]`` -> gravity box ``[..., 7|9]`` (exp sizes, atan2 yaw)."""
    yaw = torch.atan2(head_boxes[..., 6:7], head_boxes[..., 7:8])
    cx, cy, cz = head_boxes[..., 0:1], head_boxes[..., 1:2], head_boxes[..., 4:5]
    dx, dy, dz = head_boxes[..., 2:3].exp(), head_boxes[..., 3:4].exp(), head_boxes[..., 5:6].exp()
    fields = [cx, cy, cz, dx, dy, dz, yaw]
    if head_boxes.shape[-1] > 8:
        fields += [head_boxes[..., 8:9], head_boxes[..., 9:10]]       # vx, vy
    return torch.cat(fields, dim=-1)


def _normalize_xyz(xyz: Tensor, pc_range: Sequence[float]) -> Tensor:
    """Metric centres -> [0, 1] over the point-cloud range, axis by axis."""
    out = xyz.clone()
    for axis in range(3):
        lo, hi = pc_range[axis], pc_range[axis + 3]
        out[..., axis] = (xyz[..., axis] - lo) / (hi - lo)
    return out


def _denormalize_xyz(xyz_normalized: Tensor, pc_range: Sequence[float]) -> Tensor:
    """[0, 1] centres -> metres over the point-cloud range (``x^ * (max - min) + min``)."""
    out = xyz_normalized.clone()
    for axis in range(3):
        lo, hi = pc_range[axis], pc_range[axis + 3]
        out[..., axis] = xyz_normalized[..., axis] * (hi - lo) + lo
    return out


def encode_bbox(boxes: Tensor, pc_range: Sequence[float] | None = None) -> Tensor:
    """Gravity box ``[..., 7|9]`` -> query layout ``[..., 8|10]``.

    No clamping here: the caller (query denoising) clamps x^, y^, z^ to [0, 1].
    """
    xyz = boxes[..., 0:3] if pc_range is None else _normalize_xyz(boxes[..., 0:3], pc_range)
    log_size = boxes[..., 3:6].log()                                   # [..., 3]
    yaw = boxes[..., 6:7]
    fields = [xyz, log_size, yaw.sin(), yaw.cos()]
    if boxes.shape[-1] > 7:
        fields.append(boxes[..., 7:9])                                 # vx, vy
    return torch.cat(fields, dim=-1)


def decode_bbox(query_boxes: Tensor, pc_range: Sequence[float] | None = None) -> Tensor:
    """Query layout ``[..., 8|10]`` -> gravity box ``[..., 7|9]`` (metres, exp sizes, yaw)."""
    xyz = query_boxes[..., 0:3]
    if pc_range is not None:
        xyz = _denormalize_xyz(xyz, pc_range)
    size = query_boxes[..., 3:6].exp()                                 # [..., 3]
    yaw = torch.atan2(query_boxes[..., 6:7], query_boxes[..., 7:8])
    fields = [xyz, size, yaw]
    if query_boxes.shape[-1] > 8:
        fields.append(query_boxes[..., 8:10])                          # vx, vy
    return torch.cat(fields, dim=-1)


def query_to_head_layout(query_boxes: Tensor, pc_range: Sequence[float]) -> Tensor:
    """Decoder output (query layout) -> head-output layout, as the official head does it.

    Centres are de-normalised in place of x^, y^, z^ and the fields are then reordered to
    ``[x, y, log dx, log dy, z, log dz, sin, cos, vx, vy]`` (quirk 14 of docs/official_model.md section 11).
    """
    xyz = _denormalize_xyz(query_boxes[..., 0:3], pc_range)            # [..., 3]
    return torch.cat([xyz[..., 0:2], query_boxes[..., 3:5], xyz[..., 2:3],
                      query_boxes[..., 5:]], dim=-1)                   # [..., 10]


def inverse_sigmoid(x: Tensor, eps: float = 1e-5) -> Tensor:
    """``log(x / (1 - x))`` after clamping x to [0, 1] and both terms to >= eps."""
    x = x.clamp(min=0.0, max=1.0)
    return torch.log(x.clamp(min=eps) / (1.0 - x).clamp(min=eps))
