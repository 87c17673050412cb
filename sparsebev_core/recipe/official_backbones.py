"""Each backbone's official-config mapping, one row per backbone: how ``img_backbone=dict(...)``
of an official config reads into its config dataclass and how the dataclass is written back.

:data:`OFFICIAL_BACKBONES` is the recipe's dispatch table (config type -> official type name,
read, write), next to ``model.backbones.dispatch.BACKBONES`` (config type -> build, pretrain
keys), which the recipe cannot import (torch). A new backbone adds its config to
``recipe/backbones.py``, a row here and a row there; nothing else dispatches on the type.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable

from .backbones import BackboneConfig, EVA02Config, ResNetConfig, VoVNetConfig
from .official_fields import OfficialConfigError, Section, pretrained_of, read_dataclass

# constructor defaults of the official VoVNet / EVA02 modules (for keys a config leaves out)
VOVNET_DEFAULTS: dict[str, Any] = dict(frozen_stages=-1, norm_eval=True, with_cp=False)
EVA02_DEFAULTS: dict[str, Any] = dict(
    img_size=1024, real_img_size=(256, 704), patch_size=16, in_chans=3, embed_dim=768, depth=12,
    num_heads=12, mlp_ratio=4 * 2 / 3, qkv_bias=True, drop_path_rate=0.0, use_abs_pos=True,
    pt_hw_seq_len=16, window_size=0, window_block_indexes=(), use_act_checkpoint=False,
    pretrain_img_size=224, frozen_blocks=-1, fpn_out_channels=256,
    fpn_scale_factors=(4.0, 2.0, 1.0, 0.5), fpn_top_block=False)
VOVNET_SPEC_NAME = 'V-99-eSE'                 # the one VoVNet variant we build
EVA02_FPN_SQUARE_PAD = 1600                   # detectron2 padding hint of the official config; unused
EVA02_FIXED: dict[str, Any] = dict(residual_block_indexes=(), intp_freq=True, fpn_norm='LN',
                                   pretrain_use_cls_token=True, out_feature='last_feat',
                                   fpn_in_feature='last_feat')


# ------------------------------------------------------------------------------ ResNet (mmdet)
def read_resnet(b: Section) -> ResNetConfig:
    """mmdet ``ResNet``: absent keys take mmdet's defaults."""
    b.fixed('num_stages', 4)
    b.fixed('style', 'pytorch')
    norm = b.section('norm_cfg', None)
    if norm is not None:
        if norm.raw('type', 'BN') not in ('BN', 'BN2d'):
            raise OfficialConfigError(f'{norm.where}.type = {norm.data["type"]!r}: only BatchNorm (BN, BN2d) is supported')
        norm.fixed('requires_grad', True)
        norm.finish()
    return ResNetConfig(depth=b.get('depth', 0), base_channels=b.get('base_channels', 0, 64),
                        out_indices=b.get('out_indices', (0,), (0, 1, 2, 3)),
                        frozen_stages=b.get('frozen_stages', 0, -1),
                        norm_eval=b.get('norm_eval', False, False),
                        with_cp=b.get('with_cp', False, False))


def write_resnet(b: ResNetConfig, pretrained: str) -> dict:
    """``img_backbone`` of a ResNet (its pretrain goes to the top-level ``load_from``)."""
    return dict(type='ResNet', depth=b.depth, **({'base_channels': b.base_channels}
                                                if b.base_channels != 64 else {}),
                num_stages=4, out_indices=b.out_indices, frozen_stages=b.frozen_stages,
                norm_cfg=dict(type='BN2d', requires_grad=True), norm_eval=b.norm_eval,
                style='pytorch', with_cp=b.with_cp)


# ------------------------------------------------------------------------------ VoVNet (DD3D)
def read_vovnet(b: Section) -> VoVNetConfig:
    """The official ``VoVNet`` (``V-99-eSE`` only)."""
    if b.raw('spec_name') != VOVNET_SPEC_NAME:
        raise OfficialConfigError(f'{b.name("spec_name")} = {b.data["spec_name"]!r} is not '
                                  f'supported: this implementation builds {VOVNET_SPEC_NAME!r}')
    b.fixed('input_ch', 3)
    return read_dataclass(b, VoVNetConfig, VOVNET_DEFAULTS, required=('out_features',))


def write_vovnet(b: VoVNetConfig, pretrained: str) -> dict:
    """The official keys first, our extensions only when they differ from the defaults (its
    pretrain goes to the top-level ``load_from``)."""
    defaults = VoVNetConfig()
    fields = {f.name: getattr(b, f.name) for f in dataclasses.fields(b)}
    official = ('out_features', 'norm_eval', 'frozen_stages', 'with_cp')
    out = dict(type='VoVNet', spec_name=VOVNET_SPEC_NAME, **{k: fields[k] for k in official})
    out.update({k: v for k, v in fields.items() if k not in official and v != getattr(defaults, k)})
    return out


# ------------------------------------------------------------------------------ EVA02
def read_eva02(b: Section) -> EVA02Config:
    """The official ``EVA02`` (ViT + simple pyramid)."""
    for key, value in EVA02_FIXED.items():
        b.fixed(key, value)
    b.raw('xattn', None)                          # xformers attention: same result, not used
    b.raw('fpn_square_pad', None)                 # a padding hint; the input size is fixed
    return read_dataclass(b, EVA02Config, EVA02_DEFAULTS, required=())


def write_eva02(b: EVA02Config, pretrained: str) -> dict:
    """Every field, plus the fixed ones; the pretrain is the backbone's own ``pretrained``."""
    out = dict(type='EVA02', **{f.name: getattr(b, f.name) for f in dataclasses.fields(b)})
    out.update(residual_block_indexes=(), fpn_norm='LN', fpn_square_pad=EVA02_FPN_SQUARE_PAD)
    if pretrained:
        out['pretrained'] = pretrained
    return out


# ------------------------------------------------------------------------------ the table
@dataclass(frozen=True)
class OfficialBackbone:
    """One backbone in the official config format.

    type_name: ``img_backbone.type`` of the official config.
    read: the config dataclass from the ``img_backbone`` section (without ``type``,
        ``pretrained`` / ``init_cfg``, which :func:`read_backbone` handles).
    write: ``(config, pretrain file or '') -> img_backbone dict``.
    own_pretrain: the pretrain file is the backbone's ``pretrained`` key (EVA02), not the
        top-level ``load_from``.
    revise_keys: the official ``revise_keys`` that go with ``load_from`` (the nuImages
        detector files name the backbone ``backbone``).
    """
    type_name: str
    read: Callable[[Section], Any]
    write: Callable[[Any, str], dict]
    own_pretrain: bool = False
    revise_keys: tuple[tuple[str, str], ...] = ()


OFFICIAL_BACKBONES: dict[type, OfficialBackbone] = {
    ResNetConfig: OfficialBackbone('ResNet', read_resnet, write_resnet,
                                   revise_keys=(('backbone', 'img_backbone'),)),
    VoVNetConfig: OfficialBackbone('VoVNet', read_vovnet, write_vovnet),
    EVA02Config: OfficialBackbone('EVA02', read_eva02, write_eva02, own_pretrain=True),
}
_BY_TYPE_NAME = {row.type_name: row for row in OFFICIAL_BACKBONES.values()}


def official_backbone(backbone: BackboneConfig) -> OfficialBackbone:
    """The row of a backbone config (``TypeError`` for a type that has none)."""
    try:
        return OFFICIAL_BACKBONES[type(backbone)]
    except KeyError:
        raise TypeError(f'unknown backbone config {type(backbone).__name__}') from None


def read_backbone(b: Section) -> tuple[BackboneConfig, str | None]:
    """(backbone config, pretrained path or None) from an ``img_backbone`` section."""
    kind = b.raw('type')
    row = _BY_TYPE_NAME.get(kind)
    if row is None:
        raise OfficialConfigError(f'{b.where}.type = {kind!r}: supported backbones are ResNet, '
                                  f'VoVNet (V-99-eSE) and EVA02')
    cfg = row.read(b)
    pretrained = pretrained_of(b)
    b.finish()
    return cfg, pretrained
