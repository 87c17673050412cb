"""mmdet FPN as the official configs use it (docs/official_model.md section 2.3).

No extra convs, no norm, no activation: a 1x1 lateral conv per input level, a top-down
pathway that upsamples the coarser level with nearest-neighbour interpolation to the
*exact* size of the finer one (size-based, so odd sizes work), a 3x3 output conv per
level, and, when more outputs than inputs are asked for, extra levels made by
``max_pool2d(kernel_size=1, stride=2)`` of the last output (no parameters).

State-dict names follow mmdet's ``ConvModule`` wrapping: ``lateral_convs.{i}.conv.*`` and
``fpn_convs.{i}.conv.*``.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..recipe.config import FPNConfig


class ConvModule(nn.Module):
    """A bare conv under the attribute name mmdet uses (``.conv``), bias on, no norm/act."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, padding: int = 0):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class FPN(nn.Module):
    """Feature pyramid: ``len(in_channels)`` inputs -> ``num_outs`` maps of ``out_channels``."""

    def __init__(self, in_channels: tuple[int, ...] | list[int], out_channels: int = 256,
                 num_outs: int = 4):
        super().__init__()
        if num_outs < len(in_channels):
            raise ValueError(f'FPN num_outs ({num_outs}) must be >= the number of input '
                             f'levels ({len(in_channels)})')
        self.in_channels = list(in_channels)
        self.out_channels = out_channels
        self.num_outs = num_outs
        self.lateral_convs = nn.ModuleList(
            [ConvModule(c, out_channels, 1) for c in self.in_channels])
        self.fpn_convs = nn.ModuleList(
            [ConvModule(out_channels, out_channels, 3, padding=1) for _ in self.in_channels])
        self.init_weights()

    def init_weights(self) -> None:
        """mmdet FPN default: Xavier-uniform conv weights, zero biases."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, inputs: list[torch.Tensor] | tuple[torch.Tensor, ...]) -> list[torch.Tensor]:
        """``inputs`` C_i ``[N, in_i, h_i, w_i]`` (fine to coarse) -> ``num_outs`` ``[N, C, h, w]``."""
        if len(inputs) != len(self.in_channels):
            raise ValueError(f'FPN expects {len(self.in_channels)} input levels, got {len(inputs)}')
        laterals = [conv(x) for conv, x in zip(self.lateral_convs, inputs)]  # [N, C, h_i, w_i]
        for i in range(len(laterals) - 1, 0, -1):
            finer_size = laterals[i - 1].shape[2:]
            laterals[i - 1] = laterals[i - 1] + F.interpolate(
                laterals[i], size=finer_size, mode='nearest')                 # [N, C, h_{i-1}, w_{i-1}]
        outs = [conv(x) for conv, x in zip(self.fpn_convs, laterals)]
        while len(outs) < self.num_outs:
            outs.append(F.max_pool2d(outs[-1], 1, stride=2))                 # [N, C, ceil(h/2), ceil(w/2)]
        return outs


def build_fpn(cfg: FPNConfig) -> FPN:
    """Plain constructor from an ``FPNConfig``."""
    return FPN(tuple(cfg.in_channels), cfg.out_channels, cfg.num_outs)
