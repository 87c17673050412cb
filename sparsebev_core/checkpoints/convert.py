"""Conversions of detector checkpoints, both ways, and ``sparsebev convert-checkpoint``.

``convert_official_checkpoint``: an official (mmcv) checkpoint -> our format, verified by a
strict load; ``export_official_checkpoint``: ours -> the mmcv wrapper the official code
loads; ``guess_preset`` names the official preset a state dict belongs to. Backbone pretrain
files convert with ``pretrain.convert_pretrained_backbone`` (``--backbone-only``).
"""
from __future__ import annotations

import argparse
import sys
from collections import OrderedDict
from pathlib import Path
from typing import Any, Mapping

import torch

from ..errors import UsageError
from ..recipe.config import ModelConfig
from ..recipe.presets import get_preset, model_config
from .files import atomic_save, refuse_existing
from .official import (FORMAT_NAME, LEGACY_VERSION, CheckpointError, check_finite, load_checkpoint,
                       read_checkpoint, split_checkpoint)
from .pretrain import convert_pretrained_backbone


def guess_preset(state: Mapping[str, torch.Tensor]) -> str:
    """The official preset whose architecture fits an official state dict (official key names)."""
    queries_key = 'pts_bbox_head.init_query_bbox.weight'
    if queries_key not in state:
        raise CheckpointError(f'cannot guess the preset: no {queries_key} (is this a SparseBEV checkpoint?)')
    queries = state[queries_key].shape[0]
    if 'pts_bbox_head.padding_bbox.weight' in state:                  # SparseBEV++ (official v2)
        return 'r50_nuimg_704x256_memory'
    if any(k.startswith('img_backbone.layer4.') for k in state):
        depth = 101 if 'img_backbone.layer3.22.conv1.weight' in state else 50
        if depth == 101:
            return 'r101_nuimg_1408x512'
        return 'r50_nuimg_704x256_400q_36ep' if queries == 400 else 'r50_nuimg_704x256'
    if any(k.startswith('img_backbone.stem.') for k in state):
        return 'vov99_dd3d_1600x640_trainval_future'
    if any(k.startswith('img_backbone.backbone.net.') for k in state):
        return 'vit_eva02_1600x640_trainval_future'
    raise CheckpointError('cannot guess the preset from the backbone keys; pass --preset')


def convert_official_checkpoint(in_path: str | Path, out_path: str | Path,
                                preset: 'str | ModelConfig | None' = None,
                                allow_pickle: bool = False, verify: bool = True,
                                overwrite: bool = False) -> dict:
    """Read an official checkpoint, map its keys to ours, write our format, verify it loads.

    Our format: ``{'state_dict': ..., 'version': box convention, 'meta': {'format', 'source',
    'box_convention', 'preset'}}`` (plain tensors and strings: loads with weights_only=True,
    and the official tools read it too since the key names are the official ones for R50/R101).
    With ``verify`` the preset's model is built and the weights loaded strictly. NaN/Inf
    weights are refused either way; an existing ``out_path`` is refused unless ``overwrite``.
    ``report['preset_guessed']`` says whether the preset came from :func:`guess_preset`.
    """
    refuse_existing(out_path, overwrite)
    obj = read_checkpoint(in_path, allow_pickle)
    state, info = split_checkpoint(obj)
    check_finite(state, str(in_path))
    guessed = preset is None
    if preset is None:
        preset = guess_preset(state)
    cfg = get_preset(preset) if isinstance(preset, str) else preset
    preset = cfg.name
    state = OrderedDict((k, v.detach().cpu().contiguous()) for k, v in state.items())
    report = dict(preset=preset, box_convention=info['box_convention'], num_keys=len(state),
                  num_elements=sum(v.numel() for v in state.values()), verified=False,
                  preset_guessed=guessed)
    if verify:
        from ..model.detector import build_model
        model = build_model(cfg)
        load_checkpoint(model, dict(state_dict=state, version=info['box_convention']))
        report['verified'] = True
    out = dict(state_dict=state, version=info['box_convention'],
               meta=dict(format=FORMAT_NAME, source=str(in_path), box_convention=info['box_convention'],
                         preset=preset))
    atomic_save(out, out_path)
    return report


def export_official_checkpoint(in_path: str | Path, out_path: str | Path,
                               preset: 'str | ModelConfig | None' = None,
                               allow_pickle: bool = False, overwrite: bool = False) -> dict:
    """Write a checkpoint the official SparseBEV code loads: the mmcv wrapper ``{meta, state_dict}``.

    ``in_path``: our converted file or an official one. The weights are loaded strictly into
    the model of ``preset`` (a name or a ``ModelConfig``; default: guessed from the shapes),
    then written with the official key names. ``meta`` holds ``config`` (the model's config
    in the official format), ``CLASSES`` and ``box_convention``; a v0.17.1 source keeps its
    top-level ``version`` (the official tools read it there).
    """
    from ..model.detector import build_model
    from ..recipe.official_write import export_official_config
    refuse_existing(out_path, overwrite)
    obj = read_checkpoint(in_path, allow_pickle)
    state, info = split_checkpoint(obj)
    if preset is None:
        preset = guess_preset(state)
    cfg = get_preset(preset) if isinstance(preset, str) else preset
    model = build_model(cfg)
    load_checkpoint(model, dict(state_dict=state, version=info['box_convention']))
    # our state-dict names are the official ones: the strictly loaded model's own state dict
    official = OrderedDict((k, v.detach().cpu().contiguous()) for k, v in model.state_dict().items())
    out: dict[str, Any] = dict(
        meta=dict(config=export_official_config(cfg), CLASSES=list(cfg.class_names),
                  box_convention=info['box_convention'], source=str(in_path), preset=cfg.name),
        state_dict=official)
    if info['box_convention'] == LEGACY_VERSION:
        out['version'] = LEGACY_VERSION
    atomic_save(out, out_path)
    return dict(preset=cfg.name, box_convention=info['box_convention'], num_keys=len(official),
                num_elements=sum(v.numel() for v in official.values()), verified=True)


# ---------------------------------------------------------------------------- command line
def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``sparsebev convert-checkpoint``."""
    from ..cli_common import add_model_arguments
    parser.add_argument('input', help='official SparseBEV checkpoint (.pth)')
    parser.add_argument('output', help='where to write the converted checkpoint')
    add_model_arguments(parser, None, checkpoint='none',
                        preset_help='preset the checkpoint belongs to (default: guessed from its '
                                    'shapes)')
    parser.add_argument('--to', choices=('ours', 'official'), default='ours',
                        help="'ours' (default): our format; 'official': the mmcv wrapper "
                             '{meta, state_dict} with official key names, for the official code')
    parser.add_argument('--allow-pickle', action='store_true',
                        help='allow arbitrary pickled objects (only for files you trust)')
    parser.add_argument('--force', action='store_true', help='replace OUTPUT if it exists')
    parser.add_argument('--no-verify', action='store_true',
                        help='skip building the model and loading the converted weights')
    parser.add_argument('--backbone-only', action='store_true',
                        help='INPUT is a backbone pretrain file (nuImages Cascade Mask R-CNN, DD3D, '
                             'EVA02); needs --preset')


def main(args: argparse.Namespace) -> int:
    """Convert, verify, print a one-paragraph summary (errors: ``CheckpointError``, exit 1)."""
    force = getattr(args, 'force', False)
    if args.config:
        args.preset = model_config(args.preset, args.config)
    if args.to == 'official':
        report = export_official_checkpoint(args.input, args.output, args.preset,
                                            allow_pickle=args.allow_pickle, overwrite=force)
        print(f'wrote {args.output} for the official code: preset {report["preset"]}, '
              f'{report["num_keys"]} tensors ({report["num_elements"]:,} values), box convention '
              f'{report["box_convention"]}, verified: loads strictly into the model first')
        return 0
    if args.backbone_only:
        if not args.preset:
            raise UsageError('--backbone-only needs --preset (the backbone to map the file onto)')
        report = convert_pretrained_backbone(args.input, args.output, args.preset,
                                             allow_pickle=args.allow_pickle, overwrite=force)
        print(f'converted backbone {args.input} -> {args.output}: preset {report["preset"]}, '
              f'{report["num_keys"]} backbone tensors loaded strictly, {len(report["ignored"])} other '
              f'keys ignored' + (f' (e.g. {", ".join(report["ignored"][:3])})' if report['ignored'] else ''))
        return 0
    report = convert_official_checkpoint(args.input, args.output, args.preset,
                                         allow_pickle=args.allow_pickle, verify=not args.no_verify,
                                         overwrite=force)
    if report['preset_guessed']:
        print(f"preset guessed from the checkpoint's shapes: {report['preset']} "
              '(pass --preset to choose another)', file=sys.stderr)
    print(f'converted {args.input} -> {args.output}: preset {report["preset"]}, '
          f'{report["num_keys"]} tensors ({report["num_elements"]:,} values), '
          f'box convention {report["box_convention"]}'
          + (' (legacy yaw: handled by the head)' if report['box_convention'] == LEGACY_VERSION else '')
          + (', verified: loads strictly into the preset model' if report['verified'] else ''))
    return 0
