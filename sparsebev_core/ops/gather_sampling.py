"""Multi-view sampling as explicit bilinear taps read with ``Gather``: no 5-D ``grid_sample``.

The formulation for deployment (ONNX ``Gather``, ``Floor``, ``Where`` and elementwise ops,
which onnxruntime and TensorRT run natively, no plugin) and a torch backend (``'gather'``).
Every sampling point reads exactly one view, so per level it needs four taps of that view:

* the level ``[R, C, N, H, W]`` is read as a channels-last table ``[R*N*H*W, C]`` (free when
  its memory is already ``[R, N, H, W, C]``, what ``group_features_for_sampling`` builds for
  this backend; one copy per call otherwise);
* a point's pixel position follows ``grid_sample``'s align-corners arithmetic
  (``((2x - 1) + 1) / 2 * (W - 1)``), its four taps get ``grid_sample``'s bilinear
  weights (summed with one batched ``MatMul``), and a tap outside the view contributes an exact
  zero (``Where``, so a non-finite value elsewhere in the map never leaks in): that is
  ``padding_mode='zeros'`` without ever touching the neighbouring view.

The view index is ``round(v * (N - 1))`` (half away from zero), clamped into ``[0, N - 1]``,
NaN -> 0: the CUDA kernel's rule. The 5-D torch backend interpolates along the view axis
instead and so leaks a weight of ~1e-7 into the neighbouring view when ``v * (N - 1)`` is not
an exact integer; that is the only place where the two differ beyond float rounding.
Shapes and layouts: as :func:`sparsebev_core.ops.msmv_sampling.msmv_sampling_torch`.
"""
from __future__ import annotations

from typing import Sequence

import torch

from ..errors import InputError

Tensor = torch.Tensor


def view_index(view_coordinate: Tensor, num_views: int) -> Tensor:
    """The op's view coordinate ``k / (N - 1)`` -> view index k as an int64 tensor.

    Rounds half away from zero, clamps into ``[0, N - 1]``, NaN -> 0.
    """
    scaled = view_coordinate * float(max(num_views - 1, 0))
    rounded = torch.sign(scaled) * torch.floor(scaled.abs() + 0.5)
    rounded = torch.where(rounded == rounded, rounded, torch.zeros_like(rounded))   # NaN -> 0
    return rounded.clamp(0.0, float(num_views - 1)).long()


def tap_table(feature: Tensor) -> Tensor:
    """Level ``[R, C, N, H, W]`` -> ``[R*N*H*W, C]``: row ``((r*N + n)*H + y)*W + x`` holds
    pixel (y, x) of view n of row r. A view (no copy) when the memory is channels-last."""
    r, c, n, h, w = feature.shape
    return feature.permute(0, 2, 3, 4, 1).reshape(r * n * h * w, c)


def align_corners_pixel(coordinate: Tensor, size: int) -> Tensor:
    """Op coordinate in [0, 1] -> pixel position, with ``grid_sample``'s float arithmetic."""
    normalised = coordinate * 2.0 - 1.0
    return ((normalised + 1.0) / 2.0) * float(size - 1)


def bilinear_taps(locations: Tensor, num_views: int, height: int,
                  width: int) -> tuple[Tensor, Tensor, Tensor]:
    """Rows of :func:`tap_table`, bilinear weights and in-view flags of every point's four taps.

    locations ``[R, Q, P, 3]`` -> (index ``[R, Q, P, 4]`` int64, weight ``[R, Q, P, 4]``,
    inside ``[R, Q, P, 4]`` bool); taps in ``grid_sample``'s order (nw, ne, sw, se); a tap
    outside the view has ``inside`` False and a harmless in-range index.
    """
    rows = locations.shape[0]
    ix = align_corners_pixel(locations[..., 0], width)                      # [R, Q, P]
    iy = align_corners_pixel(locations[..., 1], height)
    view = view_index(locations[..., 2], num_views)                         # [R, Q, P] int64
    x0, y0 = torch.floor(ix), torch.floor(iy)
    x1, y1 = x0 + 1.0, y0 + 1.0
    weights = torch.stack([(x1 - ix) * (y1 - iy), (ix - x0) * (y1 - iy),
                           (x1 - ix) * (iy - y0), (ix - x0) * (iy - y0)], dim=-1)  # [R, Q, P, 4]
    tap_x = torch.stack([x0, x1, x0, x1], dim=-1)                           # [R, Q, P, 4]
    tap_y = torch.stack([y0, y0, y1, y1], dim=-1)
    inside = (tap_x >= 0.0) & (tap_x <= float(width - 1)) & (tap_y >= 0.0) & (tap_y <= float(height - 1))
    tap_x = torch.where(inside, tap_x, torch.zeros_like(tap_x)).long()     # safe before the cast
    tap_y = torch.where(inside, tap_y, torch.zeros_like(tap_y)).long()
    row = torch.arange(rows, device=locations.device).view(rows, 1, 1, 1)
    index = ((row * num_views + view[..., None]) * height + tap_y) * width + tap_x
    return index, weights, inside


def sample_level(table: Tensor, index: Tensor, weights: Tensor, inside: Tensor) -> Tensor:
    """The four taps of every point read from ``table`` and summed with their weights:
    ``[R, Q, P, C]``. An outside tap reads an exact zero (``Where``), whatever its row holds.

    In an ONNX export (``torch.onnx.is_in_onnx_export()``) the outside taps get weight 0
    instead (their index points at an in-range pixel): the same numbers for finite features,
    without a ``Where`` over every gathered value (about 20% of the r50 head in onnxruntime);
    a non-finite feature value at that pixel would leak (docs/deploy.md).
    """
    channels = table.shape[1]
    values = table.index_select(0, index.reshape(-1))                      # [R*Q*P*4, C]
    if torch.onnx.is_in_onnx_export():
        weights = weights * inside.to(weights.dtype)
    else:
        values = torch.where(inside.reshape(-1, 1), values, values.new_zeros(()))
    summed = torch.bmm(weights.reshape(-1, 1, 4).to(values.dtype),
                       values.view(-1, 4, channels))                       # [R*Q*P, 1, C]
    return summed.view(*index.shape[:-1], channels)                        # [R, Q, P, C]


def msmv_sampling_gather(features_per_level: Sequence[Tensor], locations: Tensor,
                         scale_weights: Tensor) -> Tensor:
    """Gather backend: features ``[R, C, N, H_l, W_l]`` per level, locations ``[R, Q, P, 3]``,
    scale_weights ``[R, Q, P, L]`` -> ``[R, Q, C, P]``.

    Differentiable through autograd (features, the (x, y) part of the locations, the level
    weights; the view coordinate is an index and gets gradient 0). Tap positions and weights
    are computed in float32 (float64 for float64 features), also for float16 features.
    """
    out = None
    for level, feat in enumerate(features_per_level):                      # feat [R, C, N, H, W]
        _, _, num_views, height, width = feat.shape
        position_dtype = torch.float64 if feat.dtype == torch.float64 else torch.float32
        index, weights, inside = bilinear_taps(locations.to(position_dtype), num_views, height, width)
        sampled = sample_level(tap_table(feat), index, weights, inside)    # [R, Q, P, C]
        weighted = sampled * scale_weights[..., level, None].to(feat.dtype)
        out = weighted if out is None else out + weighted                  # [R, Q, P, C]
    if out is None:
        raise InputError('msmv_sampling needs at least one feature level')
    return out.permute(0, 1, 3, 2).contiguous()                            # [R, Q, C, P]
