"""VoVNet-99-eSE (DD3D "V2-99") backbone with the official SparseBEV / DD3D state-dict names.

One-shot aggregation (OSA) blocks: ``layers_per_block`` 3x3 conv-BN-ReLU layers in a chain,
the block input and every layer output concatenated, a 1x1 conv-BN-ReLU "concat" projection,
then effective squeeze-excitation (eSE: global average pool -> 1x1 conv with bias -> hard
sigmoid -> channel scale). Blocks after the first in a stage add an identity shortcut;
stages 3-5 start with a 3x3/2 max-pool (ceil mode). Note: the official module builds and
applies eSE in *every* block regardless of the spec's ``eSE`` flag; we do the same.

Names follow the official module exactly (they contain ``/``, as in DD3D):
``stem.stem_1/conv.weight``, ``stem.stem_1/norm.*``, ``stage2.OSA2_1.layers.0.OSA2_1_0/conv.weight``,
``stage2.OSA2_1.concat.OSA2_1_concat/conv.weight``, ``stage2.OSA2_1.ese.fc.{weight,bias}``.
So official SparseBEV checkpoints load by name; DD3D pretrain files are mapped by
``PRETRAIN_KEY_MAP`` below.
"""
from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn as nn
import torch.nn.functional as F

from ...recipe.backbones import VoVNetConfig
from ..activation_checkpoint import run_segment
from .freezing import apply_train_mode_rules, freeze


def _conv_bn_relu(name: str, in_ch: int, out_ch: int, kernel: int, stride: int = 1
                  ) -> list[tuple[str, nn.Module]]:
    """``{name}/conv``, ``{name}/norm``, ``{name}/relu`` as the official helper names them."""
    return [(f'{name}/conv', nn.Conv2d(in_ch, out_ch, kernel, stride=stride, padding=kernel // 2,
                                       bias=False)),
            (f'{name}/norm', nn.BatchNorm2d(out_ch)),
            (f'{name}/relu', nn.ReLU(inplace=True))]


class HardSigmoid(nn.Module):
    """relu6(x + 3) / 6."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu6(x + 3.0) / 6.0


class EffectiveSE(nn.Module):
    """eSE: one 1x1 conv (with bias) on the globally pooled feature gates the channels."""

    def __init__(self, channels: int):
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Conv2d(channels, channels, kernel_size=1)
        self.hsigmoid = HardSigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.hsigmoid(self.fc(self.avg_pool(x)))        # [N, C, H, W] * [N, C, 1, 1]


class OSABlock(nn.Module):
    """One-shot aggregation block (official ``_OSA_module``, non-depthwise)."""

    def __init__(self, in_ch: int, stage_ch: int, concat_ch: int, layers_per_block: int,
                 name: str, identity: bool = False, with_cp: bool = False):
        super().__init__()
        self.identity = identity
        self.with_cp = with_cp
        self.layers = nn.ModuleList()
        ch = in_ch
        for i in range(layers_per_block):
            self.layers.append(nn.Sequential(OrderedDict(_conv_bn_relu(f'{name}_{i}', ch, stage_ch, 3))))
            ch = stage_ch
        self.concat = nn.Sequential(OrderedDict(
            _conv_bn_relu(f'{name}_concat', in_ch + layers_per_block * stage_ch, concat_ch, 1)))
        self.ese = EffectiveSE(concat_ch)

    def _inner(self, x: torch.Tensor) -> torch.Tensor:
        outputs = [x]
        y = x
        for layer in self.layers:
            y = layer(y)                                            # [N, stage_ch, H, W]
            outputs.append(y)
        y = self.ese(self.concat(torch.cat(outputs, dim=1)))       # [N, concat_ch, H, W]
        return y + x if self.identity else y

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return run_segment(self, self._inner, x, probe=x, enabled=self.with_cp)


def _osa_stage(stage_num: int, in_ch: int, stage_ch: int, concat_ch: int, num_blocks: int,
               layers_per_block: int, with_cp: bool) -> nn.Sequential:
    """``stage{n}``: [Pooling (n > 2)] + ``OSA{n}_1`` .. ``OSA{n}_{num_blocks}``."""
    modules: list[tuple[str, nn.Module]] = []
    if stage_num != 2:
        modules.append(('Pooling', nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True)))
    for i in range(num_blocks):
        name = f'OSA{stage_num}_{i + 1}'
        modules.append((name, OSABlock(in_ch if i == 0 else concat_ch, stage_ch, concat_ch,
                                       layers_per_block, name, identity=i > 0, with_cp=with_cp)))
    return nn.Sequential(OrderedDict(modules))


class VoVNet(nn.Module):
    """VoVNet returning the stages named in ``out_features`` (strides 4, 8, 16, 32)."""

    def __init__(self, cfg: VoVNetConfig, in_channels: int = 3):
        super().__init__()
        self.frozen_stages = cfg.frozen_stages
        self.norm_eval = cfg.norm_eval
        self.out_features = tuple(cfg.out_features)
        s1, s2, s3 = cfg.stem_channels
        self.stem = nn.Sequential(OrderedDict(
            _conv_bn_relu('stem_1', in_channels, s1, 3, stride=2)
            + _conv_bn_relu('stem_2', s1, s2, 3, stride=1)
            + _conv_bn_relu('stem_3', s2, s3, 3, stride=2)))
        in_chs = [s3] + list(cfg.stage_out_channels[:-1])
        self.stage_names: list[str] = []
        for i in range(4):
            name = f'stage{i + 2}'
            self.add_module(name, _osa_stage(i + 2, in_chs[i], cfg.stage_conv_channels[i],
                                             cfg.stage_out_channels[i], cfg.blocks_per_stage[i],
                                             cfg.layers_per_block, cfg.with_cp))
            self.stage_names.append(name)
        channels = dict(zip(self.stage_names, cfg.stage_out_channels), stem=s3)
        self.out_channels = [channels[n] for n in self.out_features]
        # The official module keeps PyTorch's default init (its own init is commented out);
        # the DD3D pretrain file overwrites every weight anyway.
        freeze(self.frozen_modules())

    def frozen_modules(self) -> list[nn.Module]:
        """The stem and stages ``2..frozen_stages+1`` (empty when frozen_stages < 0)."""
        if self.frozen_stages < 0:
            return []
        return [self.stem] + [getattr(self, f'stage{i + 1}') for i in range(1, self.frozen_stages + 1)]

    def train(self, mode: bool = True) -> 'VoVNet':
        """Switch mode, then re-apply frozen stages and ``norm_eval``."""
        super().train(mode)
        apply_train_mode_rules(self, self.frozen_modules(), self.norm_eval, mode)
        return self

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """``x [N, 3, H, W]`` (BGR, normalised) -> the ``out_features`` maps, fine to coarse."""
        outs = []
        x = self.stem(x)                                            # [N, 128, H/4, W/4]
        if 'stem' in self.out_features:
            outs.append(x)
        for name in self.stage_names:
            x = getattr(self, name)(x)                              # [N, C_s, H/2^s, W/2^s]
            if name in self.out_features:
                outs.append(x)
        return outs


def build_vovnet(cfg: VoVNetConfig) -> VoVNet:
    """Plain constructor from a ``VoVNetConfig``."""
    return VoVNet(cfg)


# Pretrain key table (model.backbones.dispatch): (regex on the file's key, replacement).
# DD3D pretrain (``pretrain/dd3d_det_final.pth``). The official config loads it with no key
# revision, i.e. the file SparseBEV points to already carries ``img_backbone.*`` names (kept
# as they are). The original DD3D (detectron2) layout nests the VoVNet as
# ``backbone.bottom_up.*``; an mmdet-style export would use ``backbone.*``. Both map here.
# Everything else (DD3D's FPN and heads) is ignored and reported.
PRETRAIN_KEY_MAP: tuple[tuple[str, str], ...] = (
    (r'^img_backbone\.', 'img_backbone.'),
    (r'^backbone\.bottom_up\.', 'img_backbone.'),
    (r'^backbone\.(?=stem\.|stage[2-5]\.)', 'img_backbone.'),
)
