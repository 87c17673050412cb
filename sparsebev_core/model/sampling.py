"""Adaptive spatio-temporal sampling (docs/official_model.md section 2.5.3).

Each query generates ``G * P`` 3-D points inside its box (offsets in units of the box size,
in the box frame), warps them into every past frame with its own velocity, projects them into
the cameras with ``lidar2img``, keeps one camera per point, and samples all pyramid levels
there with query-generated level weights. The official code's numeric quirks (first valid
camera, unmasked invalid points, the BGT/BTG scale-weight order) are reproduced by named
functions below.

The view count N comes from the input (``lidar2img [B, T*N, 4, 4]``): any rig, N = 1 included.
An optional per-view validity mask ``valid_views [B, T*N]`` (a camera that dropped out) makes
every point ignore the invalid views when it picks its camera, and the invalid views' features
read as zeros, so no point ever samples them; ``None`` (all valid) is the official computation
bit for bit.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from ..geometry import CAMERA_NAMES
from ..ops import msmv_sampling, prefers_channels_last, resolve_backend
from .activation_checkpoint import run_segment
from .boxes import decode_bbox

Tensor = torch.Tensor

NUM_CAMERAS = len(CAMERA_NAMES)       # default N of the helpers below (nuScenes rig); the
                                      # model passes the view count of its input
DEPTH_EPS = 1e-5                      # projections with depth <= eps are invalid


def group_features_for_sampling(features: Sequence[Tensor], num_groups: int,
                                num_cameras: int = NUM_CAMERAS,
                                channels_last: bool | None = None,
                                valid_views: Tensor | None = None) -> list[Tensor]:
    """FPN levels ``[B, T*N, G*C, H, W]`` -> the sampling op's layout ``[B*T*G, C, N, H, W]``.

    Channel ``g*C + c`` of a level belongs to sampling group g (docs/official_model.md, quirk 11: contiguous groups);
    row ``(b*T + t)*G + g``. This is the one place that knows the op's feature layout: done
    once per forward, reused by every decoder layer. ``channels_last`` (default: what the
    selected backend reads fastest, :func:`sparsebev_core.ops.prefers_channels_last`) lays the
    memory out as ``[B*T*G, N, H, W, C]`` with the same logical shape and values.
    ``valid_views [B, T*N]`` bool: the features of invalid views become zeros (one more copy,
    only when a mask is given), so a point that falls back onto an invalid view samples zeros.
    """
    grouped = []
    for feat in features:
        b, tn, gc, h, w = feat.shape
        t, c = tn // num_cameras, gc // num_groups
        if channels_last is None:
            use_channels_last = prefers_channels_last(resolve_backend(feat), feat.device)
        else:
            use_channels_last = channels_last
        if valid_views is not None:
            keep = valid_views.to(device=feat.device, dtype=torch.bool).reshape(b, tn, 1, 1, 1)
            feat = torch.where(keep, feat, feat.new_zeros(()))               # [B, T*N, G*C, H, W]
        if use_channels_last and torch.onnx.is_in_onnx_export():
            # the same layout as two cheap transposes (C <-> H*W, then a block move of G):
            # onnxruntime runs the one 7-D permutation below 1.6x slower (docs/benchmarks.md)
            x = feat.reshape(b * tn * num_groups, c, h * w).transpose(1, 2)    # [BTNG, HW, C]
            x = x.reshape(b * t, num_cameras, num_groups, h * w * c).transpose(1, 2)
            x = x.reshape(b * t * num_groups, num_cameras, h, w, c)            # [BTG, N, H, W, C]
            grouped.append(x.permute(0, 4, 1, 2, 3))                           # [BTG, C, N, H, W] view
            continue
        feat = feat.reshape(b, t, num_cameras, num_groups, c, h, w)          # [B, T, N, G, C, H, W]
        if use_channels_last:
            feat = feat.permute(0, 1, 3, 2, 5, 6, 4)                         # [B, T, G, N, H, W, C]
            feat = feat.reshape(b * t * num_groups, num_cameras, h, w, c)    # [BTG, N, H, W, C] memory
            grouped.append(feat.permute(0, 4, 1, 2, 3))                      # [BTG, C, N, H, W] view
        else:
            feat = feat.permute(0, 1, 3, 4, 2, 5, 6)                         # [B, T, G, C, N, H, W]
            grouped.append(feat.reshape(b * t * num_groups, c, num_cameras, h, w))  # [BTG, C, N, H, W]
    return grouped


def rotate_offsets_about_z(offsets: Tensor, yaw: Tensor, legacy_yaw_convention: bool) -> Tensor:
    """Rotate box-frame offsets ``[B, Q, K, 3]`` by the box yaw ``[B, Q, 1]`` about +z.

    mmdet3d >= 1.0 boxes: counter-clockwise rotation. Quirk 7 / docs/official_model.md 2.7: checkpoints trained
    with the mmdet3d 0.17.1 convention (``version == 'v0.17.1'``) rotate the other way.
    """
    sin, cos = torch.sin(yaw)[..., None], torch.cos(yaw)[..., None]          # [B, Q, 1, 1]
    if legacy_yaw_convention:
        sin = -sin
    x, y, z = offsets[..., 0:1], offsets[..., 1:2], offsets[..., 2:3]       # [B, Q, K, 1]
    return torch.cat([x * cos - y * sin, x * sin + y * cos, z], dim=-1)     # [B, Q, K, 3]


def make_sample_points(query_bbox: Tensor, offsets: Tensor, pc_range: Sequence[float],
                       legacy_yaw_convention: bool = False) -> Tensor:
    """3-D points ``center + R(yaw) (size * offset)``: ``[B, Q, K, 3]`` metres, model frame.

    query_bbox ``[B, Q, 10]`` (query layout), offsets ``[B, Q, K, 3]`` in box-size units.
    """
    box = decode_bbox(query_bbox, pc_range)                                  # [B, Q, 9]
    center, size, yaw = box[..., 0:3], box[..., 3:6], box[..., 6:7]
    scaled = size[:, :, None, :] * offsets                                   # [B, Q, K, 3]
    return center[:, :, None, :] + rotate_offsets_about_z(scaled, yaw, legacy_yaw_convention)


def warp_points_by_velocity(points: Tensor, velocity: Tensor, time_diff: Tensor) -> Tensor:
    """Move each frame's points back along the query velocity: x, y -= v * time_diff[t].

    points ``[B, Q, T, G, P, 3]``, velocity ``[B, Q, 2]`` m/s (detached by the caller),
    time_diff ``[B, T]`` seconds (positive for past frames). z is unchanged.
    """
    shift = velocity[:, :, None, :] * time_diff[:, None, :, None]            # [B, Q, T, 2]
    shift = shift[:, :, :, None, None, :]                                    # [B, Q, T, 1, 1, 2]
    return torch.cat([points[..., 0:2] - shift, points[..., 2:3]], dim=-1)   # [B, Q, T, G, P, 3]


def apply_homogeneous(matrix: Tensor, xyz: Tensor) -> Tensor:
    """``matrix @ [x, y, z, 1]`` for broadcastable ``matrix [..., 4, 4]`` and ``xyz [..., 3]``.

    Row by row as ``((m0 x + m1 y) + m2 z) + m3``: the summation order of the official
    batched 4x4 matmul (so the parity numbers match bitwise) without materialising one
    4x4 matrix per point and camera.
    """
    x, y, z = xyz[..., 0], xyz[..., 1], xyz[..., 2]
    rows = [matrix[..., i, 0] * x + matrix[..., i, 1] * y + matrix[..., i, 2] * z + matrix[..., i, 3]
            for i in range(4)]
    return torch.stack(rows, dim=-1)                                         # [..., 4]


def project_points(points: Tensor, lidar2img: Tensor,
                   image_hw: tuple[int, int]) -> tuple[Tensor, Tensor]:
    """Project points ``[B, Q, T, K, 3]`` into every camera of their frame.

    lidar2img ``[B, T*N, 4, 4]`` (N views per frame, any N >= 1) maps model-frame points to
    network-input pixels; the pixel coordinates are normalised by the (padded) input size
    (docs/official_model.md, quirk 9). Returns normalised ``(u/W, v/H)`` ``[B, T, N, Q, K, 2]`` and the valid flag
    ``[B, T, N, Q, K]`` (depth > eps and strictly inside (0, 1)^2, docs/official_model.md, quirk 8).
    """
    b, q, t, k, _ = points.shape
    num_cameras = lidar2img.shape[1] // t
    image_h, image_w = image_hw
    lidar2img = lidar2img.reshape(b, t, num_cameras, 1, 1, 4, 4)             # [B, T, N, 1, 1, 4, 4]
    xyz = points.permute(0, 2, 1, 3, 4)[:, :, None]                          # [B, T, 1, Q, K, 3]
    cam = apply_homogeneous(lidar2img, xyz)                                  # [B, T, N, Q, K, 4]
    depth = cam[..., 2:3]                                                    # [B, T, N, Q, K, 1]
    uv = cam[..., 0:2] / torch.clamp(depth, min=DEPTH_EPS)                   # [B, T, N, Q, K, 2]
    uv = uv / uv.new_tensor([image_w, image_h])                              # [B, T, N, Q, K, 2]
    valid = ((depth[..., 0] > DEPTH_EPS)
             & (uv[..., 1] > 0.0) & (uv[..., 1] < 1.0)
             & (uv[..., 0] > 0.0) & (uv[..., 0] < 1.0))                      # [B, T, N, Q, K]
    return uv, valid


def mask_invalid_views(valid: Tensor, valid_views: Tensor | None) -> Tensor:
    """Projection flags ``[B, T, N, Q, K]`` and with the view mask ``[B, T*N]`` (None: as is).

    A projection into an invalid view is not valid, so :func:`select_first_valid_camera` picks
    the first *valid* view that sees the point.
    """
    if valid_views is None:
        return valid
    b, t, n = valid.shape[:3]
    return valid & valid_views.to(device=valid.device, dtype=torch.bool).reshape(b, t, n, 1, 1)


def select_first_valid_camera(uv: Tensor, valid: Tensor) -> tuple[Tensor, Tensor]:
    """Keep one projection per point: the first camera (in camera order) where it is valid.

    docs/official_model.md, quirk 8 ([issue #74]): a point valid in no camera falls back to camera 0 with whatever
    coordinates camera 0 produced, and is *not* masked afterwards; it only samples zeros
    when those coordinates leave the image. ``argmax`` returns the first maximum.
    uv ``[B, T, N, Q, K, 2]``, valid ``[B, T, N, Q, K]`` -> uv ``[B, T, Q, K, 2]``,
    camera index ``[B, T, Q, K]`` (int64).
    """
    camera = torch.argmax(valid.to(torch.uint8), dim=2)                      # [B, T, Q, K]
    index = camera[:, :, None, :, :, None].expand(-1, -1, 1, -1, -1, 2)      # [B, T, 1, Q, K, 2]
    chosen = torch.gather(uv, 2, index).squeeze(2)                           # [B, T, Q, K, 2]
    return chosen, camera


def pack_locations(uv: Tensor, camera: Tensor, num_groups: int,
                   num_cameras: int = NUM_CAMERAS) -> Tensor:
    """(u/W, v/H, view/(N-1)) in the op's row order ``(b*T + t)*G + g``: ``[BTG, Q, P, 3]``.

    uv ``[B, T, Q, G*P, 2]``, camera ``[B, T, Q, G*P]``. With one view (N = 1) the view
    coordinate is 0.
    """
    b, t, q, gp, _ = uv.shape
    view = camera.to(uv.dtype)[..., None] / max(num_cameras - 1, 1)          # [B, T, Q, GP, 1]
    loc = torch.cat([uv, view], dim=-1)                                      # [B, T, Q, GP, 3]
    loc = loc.reshape(b, t, q, num_groups, gp // num_groups, 3)              # [B, T, Q, G, P, 3]
    loc = loc.permute(0, 1, 3, 2, 4, 5)                                      # [B, T, G, Q, P, 3]
    return loc.reshape(b * t * num_groups, q, gp // num_groups, 3)           # [BTG, Q, P, 3]


def pack_scale_weights_bgt_quirk(scale_weights: Tensor, num_frames: int) -> Tensor:
    """Level weights ``[B, Q, G, P, L]`` packed the official (mis-ordered) way: ``[BTG, Q, P, L]``.

    docs/official_model.md, quirk 10 ([issue #24], [issue #66], kept for weight compatibility): the official code
    flattens the weights as ``(b, g, t)`` while locations and features are ``(b, t, g)``.
    Row ``(b*T + t)*G + g`` therefore receives the weights of group ``(t*G + g) // T``
    (the same for every frame, so only the group index is scrambled).
    """
    b, q, g, p, l = scale_weights.shape
    w = scale_weights[:, :, :, None].expand(b, q, g, num_frames, p, l)       # [B, Q, G, T, P, L]
    w = w.permute(0, 2, 3, 1, 4, 5)                                          # [B, G, T, Q, P, L]
    return w.reshape(b * g * num_frames, q, p, l)                            # rows (b*G+g)*T+t


def unpack_sampled(sampled: Tensor, batch: int, num_frames: int, num_groups: int) -> Tensor:
    """Op output ``[BTG, Q, C, P]`` -> ``[B, Q, G, T*P, C]`` (in-group point index t*P + p)."""
    btg, q, c, p = sampled.shape
    out = sampled.reshape(batch, num_frames, num_groups, q, c, p)            # [B, T, G, Q, C, P]
    out = out.permute(0, 3, 2, 1, 5, 4)                                      # [B, Q, G, T, P, C]
    return out.flatten(3, 4)                                                 # [B, Q, G, T*P, C]


class SpatioTemporalSampling(nn.Module):
    """Query -> sampled features ``[B, Q, G, T*P, C/G]`` (``sampling_offset``, ``scale_weights``)."""

    def __init__(self, embed_dims: int, num_frames: int, num_groups: int, num_points: int,
                 num_levels: int, pc_range: Sequence[float]) -> None:
        super().__init__()
        self.num_frames = num_frames
        self.num_groups = num_groups
        self.num_points = num_points
        self.num_levels = num_levels
        self.pc_range = tuple(pc_range)
        self.legacy_yaw_convention = False            # set by the head (checkpoint 'v0.17.1')
        self.sampling_offset = nn.Linear(embed_dims, num_groups * num_points * 3)
        self.scale_weights = nn.Linear(embed_dims, num_groups * num_points * num_levels)

    @torch.no_grad()
    def init_weights(self) -> None:
        """Offsets start query-independent, filling the box: weight 0, bias U(-0.5, 0.5)."""
        nn.init.zeros_(self.sampling_offset.weight)
        nn.init.uniform_(self.sampling_offset.bias, -0.5, 0.5)

    def _forward(self, query_bbox: Tensor, query_feat: Tensor, features: list[Tensor],
                 lidar2img: Tensor, time_diff: Tensor, image_hw: tuple[int, int],
                 valid_views: Tensor | None) -> Tensor:
        b, q = query_bbox.shape[:2]
        t, g, p, levels = self.num_frames, self.num_groups, self.num_points, self.num_levels
        num_views = lidar2img.shape[1] // t

        offsets = self.sampling_offset(query_feat).view(b, q, g * p, 3)      # [B, Q, GP, 3]
        points = make_sample_points(query_bbox, offsets, self.pc_range,
                                    self.legacy_yaw_convention)              # [B, Q, GP, 3]
        points = points.reshape(b, q, 1, g, p, 3).expand(b, q, t, g, p, 3)   # [B, Q, T, G, P, 3]
        velocity = query_bbox[..., 8:10].detach()                            # [B, Q, 2] m/s
        points = warp_points_by_velocity(points, velocity, time_diff)        # [B, Q, T, G, P, 3]

        weights = self.scale_weights(query_feat).view(b, q, g, p, levels)    # [B, Q, G, P, L]
        weights = torch.softmax(weights, dim=-1)                             # [B, Q, G, P, L]

        uv, valid = project_points(points.reshape(b, q, t, g * p, 3), lidar2img,
                                   image_hw)                                 # [B, T, N, Q, GP, 2]
        valid = mask_invalid_views(valid, valid_views)                       # [B, T, N, Q, GP]
        uv, camera = select_first_valid_camera(uv, valid)                    # [B, T, Q, GP, 2]
        locations = pack_locations(uv, camera, g, num_views)                 # [BTG, Q, P, 3]
        packed_weights = pack_scale_weights_bgt_quirk(weights, t)            # [BTG, Q, P, L]
        sampled = msmv_sampling(features, locations, packed_weights)         # [BTG, Q, C, P]
        return unpack_sampled(sampled, b, t, g)                              # [B, Q, G, T*P, C]

    def forward(self, query_bbox: Tensor, query_feat: Tensor, features: list[Tensor],
                lidar2img: Tensor, time_diff: Tensor, image_hw: tuple[int, int],
                valid_views: Tensor | None = None) -> Tensor:
        """query_bbox ``[B, Q, 10]``, query_feat ``[B, Q, C]``, features from
        :func:`group_features_for_sampling` (given the same ``valid_views``), lidar2img
        ``[B, T*N, 4, 4]``, time_diff ``[B, T]``, image_hw the padded network-input size,
        valid_views ``[B, T*N]`` bool or None (all valid) -> ``[B, Q, G, T*P, C/G]``."""
        return run_segment(self, self._forward, query_bbox, query_feat, features, lidar2img,
                           time_diff, image_hw, valid_views, probe=query_feat)
