"""mmdet-style ResNet (``style='pytorch'``) with the official SparseBEV options.

State-dict names follow mmdet (and torchvision, minus ``fc``): ``conv1``, ``bn1``,
``layer{1..4}.{i}.conv{1,2,3}`` / ``bn{1,2,3}`` / ``downsample.{0,1}``, so official
checkpoints and the nuImages Cascade Mask R-CNN pretrain files load by name.

Options (docs/official_model.md section 2.2):
* ``frozen_stages``: the stem (conv1 + bn1) and layers ``1..frozen_stages`` get
  ``requires_grad=False`` and are kept in eval mode, whatever ``train()`` says.
* ``norm_eval``: every BatchNorm stays in eval mode during training (running statistics
  frozen; the affine parameters of unfrozen stages still train).
* ``with_cp``: activation checkpointing inside each residual block, under the one rule of
  ``model.activation_checkpoint`` (training, autograd on, the block's input needs a gradient).
"""
from __future__ import annotations

import torch
import torch.nn as nn

from ...recipe.backbones import ResNetConfig
from ..activation_checkpoint import run_segment
from .freezing import apply_train_mode_rules, freeze

# depth -> (block type, blocks per stage)
ARCH_SETTINGS: dict[int, tuple[str, tuple[int, int, int, int]]] = {
    18: ('basic', (2, 2, 2, 2)),
    34: ('basic', (3, 4, 6, 3)),
    50: ('bottleneck', (3, 4, 6, 3)),
    101: ('bottleneck', (3, 4, 23, 3)),
    152: ('bottleneck', (3, 8, 36, 3)),
}


class BasicBlock(nn.Module):
    """Two 3x3 convs (ResNet-18/34)."""
    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1,
                 downsample: nn.Module | None = None, with_cp: bool = False):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.with_cp = with_cp

    def _inner(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return out + identity

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(run_segment(self, self._inner, x, probe=x, enabled=self.with_cp))


class Bottleneck(nn.Module):
    """1x1 -> 3x3 (stride here: ``style='pytorch'``) -> 1x1 x4 (ResNet-50/101)."""
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1,
                 downsample: nn.Module | None = None, with_cp: bool = False):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.with_cp = with_cp

    def _inner(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return out + identity

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(run_segment(self, self._inner, x, probe=x, enabled=self.with_cp))


class ResNet(nn.Module):
    """ResNet returning the stages in ``out_indices`` (C2..C5 at strides 4, 8, 16, 32)."""

    def __init__(self, depth: int = 50, base_channels: int = 64,
                 out_indices: tuple[int, ...] = (0, 1, 2, 3), frozen_stages: int = 1,
                 norm_eval: bool = True, with_cp: bool = False, in_channels: int = 3):
        super().__init__()
        if depth not in ARCH_SETTINGS:
            raise ValueError(f'ResNet depth must be one of {sorted(ARCH_SETTINGS)}, got {depth}')
        kind, stage_blocks = ARCH_SETTINGS[depth]
        block = BasicBlock if kind == 'basic' else Bottleneck
        self.depth = depth
        self.out_indices = tuple(out_indices)
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval
        self.with_cp = with_cp

        self.conv1 = nn.Conv2d(in_channels, base_channels, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(base_channels)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)

        inplanes = base_channels
        self.out_channels: list[int] = []
        self.res_layers: list[str] = []
        for i, num_blocks in enumerate(stage_blocks):
            planes = base_channels * 2 ** i
            stride = 1 if i == 0 else 2
            layer = self._make_layer(block, inplanes, planes, num_blocks, stride, with_cp)
            inplanes = planes * block.expansion
            name = f'layer{i + 1}'
            self.add_module(name, layer)
            self.res_layers.append(name)
            self.out_channels.append(inplanes)
        self.out_channels = [self.out_channels[i] for i in self.out_indices]
        self.init_weights()
        freeze(self.frozen_modules())

    @staticmethod
    def _make_layer(block, inplanes: int, planes: int, num_blocks: int, stride: int,
                    with_cp: bool) -> nn.Sequential:
        downsample = None
        if stride != 1 or inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(inplanes, planes * block.expansion, 1, stride=stride, bias=False),
                nn.BatchNorm2d(planes * block.expansion))
        layers = [block(inplanes, planes, stride, downsample, with_cp)]
        layers += [block(planes * block.expansion, planes, 1, None, with_cp)
                   for _ in range(1, num_blocks)]
        return nn.Sequential(*layers)

    def init_weights(self) -> None:
        """mmdet defaults: Kaiming-normal convs (fan_out), BN 1/0, last BN of each block 0."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode='fan_out', nonlinearity='relu')
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        # zero_init_residual=True (mmdet default): each residual branch starts as identity
        for m in self.modules():
            if isinstance(m, Bottleneck):
                nn.init.zeros_(m.bn3.weight)
            elif isinstance(m, BasicBlock):
                nn.init.zeros_(m.bn2.weight)

    def frozen_modules(self) -> list[nn.Module]:
        """The stem and the first ``frozen_stages`` layers (empty when frozen_stages < 0)."""
        if self.frozen_stages < 0:
            return []
        mods: list[nn.Module] = [self.conv1, self.bn1]
        mods += [getattr(self, f'layer{i}') for i in range(1, self.frozen_stages + 1)]
        return mods

    def train(self, mode: bool = True) -> 'ResNet':
        """Switch mode, then re-apply frozen stages and ``norm_eval``."""
        super().train(mode)
        apply_train_mode_rules(self, self.frozen_modules(), self.norm_eval, mode)
        return self

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """``x [N, 3, H, W]`` normalised -> C2..C5 selected by ``out_indices``."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))   # [N, base, H/4, W/4]
        outs = []
        for i, name in enumerate(self.res_layers):
            x = getattr(self, name)(x)                          # [N, C_i, H/2^(i+2), W/2^(i+2)]
            if i in self.out_indices:
                outs.append(x)
        return outs


def build_resnet(cfg: ResNetConfig) -> ResNet:
    """Plain constructor from a ``ResNetConfig``."""
    return ResNet(depth=cfg.depth, base_channels=cfg.base_channels,
                  out_indices=tuple(cfg.out_indices), frozen_stages=cfg.frozen_stages,
                  norm_eval=cfg.norm_eval, with_cp=cfg.with_cp)


# Pretrain key table (model.backbones.dispatch): (regex on the file's key, replacement).
# nuImages Cascade Mask R-CNN pretrain files (mmdet3d model zoo): the official config's
# revise_keys=[('backbone', 'img_backbone')]; neck / rpn_head / roi_head keys are ignored.
PRETRAIN_KEY_MAP: tuple[tuple[str, str], ...] = ((r'^backbone\.', 'img_backbone.'),)
