"""Build our SparseBEV from mmdetection3d configs: registration into mmdet3d's ``MODELS``.

``register_sparsebev()`` puts builders for the names an official SparseBEV config uses into
mmdet3d's ``MODELS`` registry (``force=True``), so that ``MODELS.build(cfg.model)`` of an
official config returns our ``SparseBEV`` (the same module, weights and state-dict names as
``build_model(load_official_config(path))``), and ``load_checkpoint`` works on it:

| ``type=`` | builds | from |
|---|---|---|
| ``SparseBEV`` | the whole detector | the official ``model=dict(...)`` |
| ``SparseBEVHead`` | the head alone | ``model.pts_bbox_head`` |
| ``VoVNet``, ``EVA02`` | the backbones mmdet/mmdet3d do not have | ``model.img_backbone`` |

``ResNet`` and ``FPN`` are left to mmdet (the detector builder builds ours for its own
children, so the state dict is ours either way). Importing this module registers too, so a
config's ``custom_imports = dict(imports=['sparsebev_core.integrations.mmdet3d'])`` works;
without mmdet3d installed the import registers nothing and ``register_sparsebev()`` raises
``MissingDependencyError``. The field mapping is ``recipe.official.read_model_dict`` (one
rule, one place). See docs/mmdet3d.md.
"""
from __future__ import annotations

import logging
from typing import Any

import torch.nn as nn

from ..errors import MissingDependencyError
from ..recipe.official import read_backbone_dict, read_head_dict, read_model_dict

log = logging.getLogger(__name__)

REGISTERED_NAMES = ('SparseBEV', 'SparseBEVHead', 'VoVNet', 'EVA02')


def build_sparsebev_detector(**model: Any) -> nn.Module:
    """Our ``SparseBEV`` from the keyword arguments of an official ``model=dict(...)``."""
    from ..model.detector import build_model
    return build_model(read_model_dict(dict(type='SparseBEV', **model)))


def build_sparsebev_head(**head: Any) -> nn.Module:
    """Our ``SparseBEVHead`` from an official ``pts_bbox_head=dict(...)``."""
    from ..model.head import SparseBEVHead
    return SparseBEVHead(read_head_dict(dict(type='SparseBEVHead', **head)))


def _backbone_builder(kind: str):
    def build(**backbone: Any) -> nn.Module:
        from ..model.detector import build_backbone
        from ..recipe.config import ModelConfig
        cfg, _ = read_backbone_dict(dict(type=kind, **backbone))
        return build_backbone(ModelConfig(name=kind, backbone=cfg))
    build.__name__ = build.__qualname__ = f'build_{kind.lower()}_backbone'
    build.__doc__ = f'Our {kind} backbone from an official ``img_backbone=dict(type={kind!r}, ...)``.'
    return build


def mmdet3d_models_registry():
    """mmdet3d's ``MODELS`` registry; ``MissingDependencyError`` saying how to install it."""
    try:
        from mmdet3d.registry import MODELS
    except ImportError as err:
        raise MissingDependencyError(
            f'the mmdet3d integration needs mmdet3d >= 1.1 with mmengine ({err}); install them '
            f'with: pip install "sparsebev_ros[mmdet3d]" (see docs/mmdet3d.md)') from err
    return MODELS


def register_sparsebev(registry: Any = None) -> Any:
    """Register our builders under ``REGISTERED_NAMES`` (``force=True``); returns the registry.

    ``registry``: any mmengine ``Registry`` (default: mmdet3d's ``MODELS``).
    """
    registry = mmdet3d_models_registry() if registry is None else registry
    builders = dict(SparseBEV=build_sparsebev_detector, SparseBEVHead=build_sparsebev_head,
                    VoVNet=_backbone_builder('VoVNet'), EVA02=_backbone_builder('EVA02'))
    for name, builder in builders.items():
        registry.register_module(name=name, module=builder, force=True)
    return registry


try:                                  # on import: what a config's custom_imports relies on
    register_sparsebev()
except MissingDependencyError as _err:
    log.debug('mmdet3d not importable, nothing registered on import: %s', _err)
