"""Backbone pretrain files (nuImages Cascade Mask R-CNN, DD3D, EVA02) onto ``img_backbone``.

Each backbone's file layout is mapped by its ``PRETRAIN_KEY_MAP`` (beside the backbone, timm's
``checkpoint_filter_fn`` habit), found through ``model.backbones.dispatch.BACKBONES``; within
the backbone the load is strict.
"""
from __future__ import annotations

import logging
import re
from collections import OrderedDict
from pathlib import Path
from typing import Any, Mapping

import torch
import torch.nn as nn

from ..model.backbones.dispatch import backbone_kind
from ..recipe.config import ModelConfig
from ..recipe.presets import get_preset
from .files import atomic_save, refuse_existing
from .official import (FORMAT_NAME, CheckpointMismatchError, compare_state_dicts, read_checkpoint,
                       split_checkpoint)

log = logging.getLogger(__name__)


def rename_keys(state: Mapping[str, torch.Tensor], table: tuple[tuple[str, str], ...]
                ) -> 'OrderedDict[str, torch.Tensor]':
    """Apply a (pattern, replacement) regex table to every key, first match wins."""
    out: OrderedDict[str, torch.Tensor] = OrderedDict()
    compiled = [(re.compile(p), r) for p, r in table]
    for key, value in state.items():
        for pattern, repl in compiled:
            if pattern.match(key):
                key = pattern.sub(repl, key, count=1)
                break
        out[key] = value
    return out


def load_pretrained_backbone(model: nn.Module, path: str | Path | Mapping[str, Any],
                             allow_pickle: bool = False) -> dict:
    """Initialise ``model.img_backbone`` from an official pretrain file.

    nuImages Cascade Mask R-CNN files (r50/r101 presets): keys ``backbone.*`` become
    ``img_backbone.*`` (the official ``revise_keys=[('backbone', 'img_backbone')]``); the
    detector's ``neck.*``, ``rpn_head.*``, ``roi_head.*`` keys are ignored and reported, so
    the FPN keeps its own Xavier init exactly as in the official training (docs/official_model.md, quirk 21). The
    table for each backbone is its ``backbones.dispatch.BACKBONES`` entry's
    ``pretrain_key_map``. Within the backbone the load is strict: a missing or wrongly-shaped
    backbone key raises ``CheckpointMismatchError``.

    Returns ``dict(loaded=[keys], ignored=[keys])``.
    """
    source = str(path) if isinstance(path, (str, Path)) else ''
    obj = read_checkpoint(path, allow_pickle) if source else path
    state, _ = split_checkpoint(obj)
    kind = backbone_kind(model.cfg.backbone)          # UnknownBackboneError for a foreign config
    renamed = rename_keys(state, kind.pretrain_key_map)
    derived = [re.compile(p) for p in kind.derived_key_patterns]

    def is_derived(key: str) -> bool:                 # buffers computed from the config
        return any(p.search(key) for p in derived)

    prefix = 'img_backbone.'
    backbone_state = OrderedDict((k[len(prefix):], v) for k, v in renamed.items()
                                 if k.startswith(prefix) and not is_derived(k))
    ignored = [k for k, k2 in zip(state, renamed) if not k2.startswith(prefix) or is_derived(k2)]
    expected = OrderedDict((k, v) for k, v in model.img_backbone.state_dict().items() if not is_derived(k))
    missing, unexpected, mismatched = compare_state_dicts(expected, backbone_state)
    if missing or unexpected or mismatched:
        raise CheckpointMismatchError([prefix + k for k in missing], [prefix + k for k in unexpected],
                                      [(prefix + k, a, b) for k, a, b in mismatched], source)
    model.img_backbone.load_state_dict(backbone_state, strict=not derived)
    if ignored:
        log.info('pretrained backbone %s: %d keys loaded, %d ignored (e.g. %s)', source,
                 len(backbone_state), len(ignored), ', '.join(ignored[:3]))
    return dict(loaded=[prefix + k for k in backbone_state], ignored=ignored)


def convert_pretrained_backbone(in_path: str | Path, out_path: str | Path,
                                preset: 'str | ModelConfig', allow_pickle: bool = False,
                                overwrite: bool = False) -> dict:
    """Map a backbone pretrain file (nuImages / DD3D / EVA02) to ``img_backbone.*`` names.

    The keys go through the backbone's ``PRETRAIN_KEY_MAP`` and are checked strictly against
    the preset's backbone (``load_pretrained_backbone``); the written file holds only
    ``img_backbone.*`` tensors and loads again with ``load_pretrained_backbone``.
    """
    from ..model.detector import SparseBEV, build_backbone
    refuse_existing(out_path, overwrite)
    cfg = get_preset(preset) if isinstance(preset, str) else preset
    model = SparseBEV(cfg, build_backbone(cfg), None, None)
    report = load_pretrained_backbone(model, read_checkpoint(in_path, allow_pickle))
    state = OrderedDict(('img_backbone.' + k, v.detach().cpu().contiguous())
                        for k, v in model.img_backbone.state_dict().items())
    out = dict(state_dict=state, meta=dict(format=FORMAT_NAME, source=str(in_path), kind='backbone',
                                           preset=cfg.name))
    atomic_save(out, out_path)
    return dict(preset=cfg.name, num_keys=len(report['loaded']), ignored=report['ignored'])
