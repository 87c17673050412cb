"""The backbone dispatch table, written once: backbone config type -> how to build it and how
its pretrain files map onto it.

``model.detector.build_backbone`` builds from it and the pretrain loader
(``checkpoints.pretrain``) takes the key tables from it; a config type missing here is an
:class:`UnknownBackboneError` naming the type in both places (never a silent default). The
config types are in ``recipe.backbones``; the recipe side keeps its own row per backbone (the
official config's ``img_backbone`` mapping, ``recipe.official_backbones``), since the recipe
never imports torch.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from torch import nn

from . import eva02, resnet, vovnet
from ...errors import InputError
from ...recipe.backbones import EVA02Config, ResNetConfig, VoVNetConfig


class UnknownBackboneError(InputError, TypeError):
    """``ModelConfig.backbone`` is of a type no backbone module serves."""


@dataclass(frozen=True)
class BackboneKind:
    """One backbone module's entry points.

    build: plain constructor from the config.
    pretrain_key_map: (regex on a pretrain file's key, replacement) pairs, first match wins;
        keys that do not end up under ``img_backbone.`` are ignored and reported.
    derived_key_patterns: regexes of buffers computed from the config (skipped in pretrains).
    """
    build: Callable[[Any], nn.Module]
    pretrain_key_map: tuple[tuple[str, str], ...]
    derived_key_patterns: tuple[str, ...] = ()


BACKBONES: dict[type, BackboneKind] = {
    ResNetConfig: BackboneKind(resnet.build_resnet, resnet.PRETRAIN_KEY_MAP),
    VoVNetConfig: BackboneKind(vovnet.build_vovnet, vovnet.PRETRAIN_KEY_MAP),
    EVA02Config: BackboneKind(eva02.build_eva02, eva02.PRETRAIN_KEY_MAP, eva02.DERIVED_KEY_PATTERNS),
}


def backbone_kind(backbone_cfg: object) -> BackboneKind:
    """The table entry for a backbone config (``ModelConfig.backbone``)."""
    try:
        return BACKBONES[type(backbone_cfg)]
    except KeyError:
        known = ', '.join(t.__name__ for t in BACKBONES)
        raise UnknownBackboneError(f'unknown backbone config type {type(backbone_cfg).__name__}; '
                                   f'known: {known}') from None
