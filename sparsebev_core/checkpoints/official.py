"""Official SparseBEV checkpoints: strict loading, conversion, pretrained backbones.

Official checkpoints are mmcv ``.pth`` files: ``{'meta', 'state_dict', ['optimizer'],
['version']}`` with the state-dict names of ``sparsebev_core.model.detector.SparseBEV``
(``img_backbone.*``, ``img_neck.*``, ``pts_bbox_head.*``; docs/official_model.md section 10).
A ``version`` of ``'v0.17.1'`` marks weights trained with the old mmdet3d box convention
(docs/official_model.md 2.7): loading such a file switches ``model.pts_bbox_head.legacy_yaw_convention`` on.

Loading is always strict unless asked otherwise: a mismatch raises
``CheckpointMismatchError`` naming every missing, unexpected and wrongly-shaped key, and
nothing is copied into the model. Files are read with ``torch.load(weights_only=True)``;
a file that needs arbitrary pickles is refused with a message saying how to allow it.

Official detector checkpoints use our key names for every backbone. Pretrain files are
mapped by each backbone's ``PRETRAIN_KEY_MAP`` (beside the backbone, timm's
``checkpoint_filter_fn`` habit), found through ``model.backbones.dispatch.BACKBONES``.
"""
from __future__ import annotations

import argparse
import logging
import pickle
import re
import sys
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Any, Mapping

import torch
import torch.nn as nn

from ..errors import InputError, UsageError
from ..model.backbones.dispatch import backbone_kind
from ..recipe.config import ModelConfig

log = logging.getLogger(__name__)

LEGACY_VERSION = 'v0.17.1'          # official VERSION string of the old box convention
CURRENT_VERSION = 'v1.0.0'
FORMAT_NAME = 'sparsebev_ros.checkpoint/1'


class CheckpointError(InputError, RuntimeError):
    """A checkpoint file cannot be read or does not describe a SparseBEV model."""


class CheckpointMismatchError(CheckpointError):
    """The checkpoint's keys or shapes do not match the model; lists all differences."""

    def __init__(self, missing: list[str], unexpected: list[str],
                 mismatched: list[tuple[str, tuple, tuple]], source: str = '', limit: int = 40):
        self.missing, self.unexpected, self.mismatched = list(missing), list(unexpected), list(mismatched)
        lines = [f'checkpoint {source or "(state dict)"} does not match the model: '
                 f'{len(self.missing)} missing, {len(self.unexpected)} unexpected, '
                 f'{len(self.mismatched)} wrongly shaped keys (nothing was loaded)']

        def section(title: str, items: list[str]) -> None:
            if items:
                lines.append(f'{title} ({len(items)}):')
                lines.extend(f'  {item}' for item in items[:limit])
                if len(items) > limit:
                    lines.append(f'  ... and {len(items) - limit} more')

        section('missing keys', self.missing)
        section('unexpected keys', self.unexpected)
        section('wrongly shaped keys (checkpoint vs model)',
                [f'{k}: {list(a)} vs {list(b)}' for k, a, b in self.mismatched])
        lines.append('hint: check the preset (--preset) matches the checkpoint; '
                     'strict=False loads the matching part only and returns these lists')
        super().__init__('\n'.join(lines))


# ---------------------------------------------------------------------------- integrity
_MAGIC = ((b'\xff\xd8\xff', 'a JPEG image'), (b'\x89PNG\r\n\x1a\n', 'a PNG image'),
          (b'\x1f\x8b', 'a gzip archive'), (b'\x89HDF', 'an HDF5 file (Keras/TensorFlow?)'),
          (b'SQLite format 3', 'an SQLite database (a rosbag2 .db3?)'), (b'%PDF', 'a PDF document'),
          (b'\x1c\x8d\xe8\xeb', 'a tar archive'), (b'\x89MCAP', 'an MCAP file (a rosbag2?)'),
          (b'\x7fELF', 'an executable (ELF)'))


def describe_file(path: str | Path) -> str:
    """What a file looks like from its first bytes ('a JPEG image', 'a text file', ...)."""
    with open(path, 'rb') as f:
        head = f.read(4096)
    if not head:
        return 'an empty file (0 bytes)'
    for magic, what in _MAGIC:
        if head.startswith(magic):
            return what
    if head.startswith(b'PK'):
        return 'a zip archive'
    if head[:1] == b'\x80':
        return 'a pickle'
    try:
        text = head.decode('utf-8')
    except UnicodeDecodeError:
        return f'binary data starting with {head[:8]!r}'
    first = text.strip().splitlines()[0][:60] if text.strip() else ''
    kind = 'a YAML/JSON text file' if first[:1] in '{[' or ':' in first else 'a text file'
    return f'{kind} (starting {first!r})'


def check_archive(path: str | Path) -> None:
    """Refuse a file that is not a PyTorch checkpoint, or whose zip members fail their CRC.

    ``torch.save`` writes a zip archive (or, before PyTorch 1.6, a raw pickle); each zip
    member carries a CRC-32 that ``torch.load`` does not check, so a file with damaged bytes
    would load silently. Raises CheckpointError saying what the file is or which member is
    damaged.
    """
    path = Path(path)
    what = describe_file(path)
    if what == 'a pickle':                       # legacy torch.save format: no checksums
        return
    if what != 'a zip archive':
        raise CheckpointError(f'{path} is {what}, not a PyTorch checkpoint (.pth written by '
                              'torch.save); check the path')
    try:
        with zipfile.ZipFile(path) as archive:
            damaged = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as err:
        raise CheckpointError(f'{path} is a damaged or truncated checkpoint (zip: {err}); '
                              'download or copy it again') from None
    if damaged is not None:
        raise CheckpointError(f'{path} is damaged: member {damaged} fails its CRC check (bytes '
                              'changed on disk or in transfer); download or copy it again')


def check_finite(state: Mapping[str, torch.Tensor], source: str = '') -> None:
    """Refuse a state dict with NaN or Inf in a floating-point tensor, naming the tensors."""
    bad = [k for k, v in state.items()
           if isinstance(v, torch.Tensor) and v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        shown = ', '.join(bad[:5]) + (f' and {len(bad) - 5} more' if len(bad) > 5 else '')
        raise CheckpointError(f'checkpoint {source or "(state dict)"} has NaN or Inf values in '
                              f'{len(bad)} tensor(s): {shown}; the weights are broken (a diverged '
                              'training run?), use an earlier checkpoint')


# ---------------------------------------------------------------------------- reading
def read_checkpoint(path: str | Path, allow_pickle: bool = False) -> dict:
    """``torch.load`` a checkpoint on CPU; ``weights_only=True`` unless ``allow_pickle``.

    The file is checked first (:func:`check_archive`): a file that is not a checkpoint is
    named for what it is, and a damaged zip member is refused before anything is unpickled.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f'checkpoint file not found: {path}')
    check_archive(path)
    try:
        obj = torch.load(path, map_location='cpu', weights_only=not allow_pickle)
    except pickle.UnpicklingError as err:
        raise CheckpointError(
            f'{path} contains pickled Python objects that torch.load(weights_only=True) refuses '
            f'({str(err).splitlines()[0]}). If you trust the file, load it with '
            f'allow_pickle=True, or convert it once into a safe file with `sparsebev '
            f'convert-checkpoint --allow-pickle {path} OUT.pth` (both run code from the file) '
            'and use OUT.pth.') from err
    except (RuntimeError, EOFError, OSError, ValueError, IndexError, KeyError) as err:
        raise CheckpointError(f'cannot read checkpoint {path} ({describe_file(path)}): '
                              f'{str(err).strip() or type(err).__name__}') from err
    if not isinstance(obj, Mapping):
        raise CheckpointError(f'{path} holds a {type(obj).__name__}, not a checkpoint dict')
    return dict(obj)


def split_checkpoint(obj: Mapping[str, Any]) -> tuple['OrderedDict[str, torch.Tensor]', dict]:
    """(state dict with ``module.`` prefixes removed, info) from a checkpoint object.

    Accepts an mmcv checkpoint (``state_dict`` wrapper), a detectron2 one (``model``), our
    converted format, or a bare state dict. ``info`` has ``box_convention`` ('v1.0.0' or
    'v0.17.1'), ``version`` (as found, or None) and ``meta``.
    """
    if isinstance(obj.get('state_dict'), Mapping):
        state = obj['state_dict']
    elif isinstance(obj.get('model'), Mapping):
        state = obj['model']
    else:
        state = obj
    non_tensors = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if non_tensors:
        raise CheckpointError(f'not a state dict: entries {non_tensors[:5]} are not tensors '
                              f'(top-level keys: {sorted(obj)[:10]})')
    if state and all(k.startswith('module.') for k in state):
        state = {k[len('module.'):]: v for k, v in state.items()}   # DataParallel / DDP wrapper
    meta = obj.get('meta') if isinstance(obj.get('meta'), Mapping) else {}
    version = obj.get('version')
    convention = version if isinstance(version, str) else meta.get('box_convention', CURRENT_VERSION)
    if convention not in (LEGACY_VERSION, CURRENT_VERSION):
        log.warning('unknown checkpoint version %r: assuming the mmdet3d >= 1.0 box convention',
                    convention)
        convention = CURRENT_VERSION
    return OrderedDict(state), dict(box_convention=convention, version=version, meta=dict(meta))


# ---------------------------------------------------------------------------- key mapping
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


# ---------------------------------------------------------------------------- loading
def compare_state_dicts(expected: Mapping[str, torch.Tensor], given: Mapping[str, torch.Tensor]
                        ) -> tuple[list[str], list[str], list[tuple[str, tuple, tuple]]]:
    """(missing, unexpected, [(key, given shape, expected shape)]) between two state dicts."""
    missing = [k for k in expected if k not in given]
    unexpected = [k for k in given if k not in expected]
    mismatched = [(k, tuple(given[k].shape), tuple(v.shape)) for k, v in expected.items()
                  if k in given and tuple(given[k].shape) != tuple(v.shape)]
    return missing, unexpected, mismatched


def load_checkpoint(model: nn.Module, path_or_state_dict: str | Path | Mapping[str, Any],
                    strict: bool = True, allow_pickle: bool = False) -> dict:
    """Load an official (or converted) SparseBEV checkpoint into ``model``.

    ``path_or_state_dict``: a ``.pth`` path, a checkpoint dict (``state_dict`` wrapper or
    not, ``module.`` prefixes or not) or a bare state dict. Strict by default: any missing,
    unexpected or wrongly-shaped key raises ``CheckpointMismatchError`` before anything is
    copied. With ``strict=False`` the matching keys load and the returned report lists the
    rest (also logged as a warning). A ``version`` of 'v0.17.1' switches
    ``model.pts_bbox_head.legacy_yaw_convention`` on (off otherwise).

    Returns ``dict(missing, unexpected, mismatched, box_convention, version, meta)``.
    """
    source = str(path_or_state_dict) if isinstance(path_or_state_dict, (str, Path)) else ''
    obj = read_checkpoint(path_or_state_dict, allow_pickle) if source else path_or_state_dict
    state, info = split_checkpoint(obj)
    check_finite(state, source)
    missing, unexpected, mismatched = compare_state_dicts(model.state_dict(), state)
    if strict and (missing or unexpected or mismatched):
        raise CheckpointMismatchError(missing, unexpected, mismatched, source)
    if missing or unexpected or mismatched:
        log.warning('%s', CheckpointMismatchError(missing, unexpected, mismatched, source))
    bad = set(unexpected) | {k for k, _, _ in mismatched}
    model.load_state_dict({k: v for k, v in state.items() if k not in bad}, strict=strict)
    legacy = info['box_convention'] == LEGACY_VERSION
    head = getattr(model, 'pts_bbox_head', None)
    if head is not None:
        head.legacy_yaw_convention = legacy
    elif legacy:
        log.warning('checkpoint uses the v0.17.1 box convention but the model has no head to tell')
    return dict(missing=missing, unexpected=unexpected, mismatched=mismatched, **info)


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


# ---------------------------------------------------------------------------- conversion
def guess_preset(state: Mapping[str, torch.Tensor]) -> str:
    """The official preset whose architecture fits an official state dict (official key names)."""
    queries_key = 'pts_bbox_head.init_query_bbox.weight'
    if queries_key not in state:
        raise CheckpointError(f'cannot guess the preset: no {queries_key} (is this a SparseBEV checkpoint?)')
    queries = state[queries_key].shape[0]
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


def _refuse_existing(out_path: str | Path, overwrite: bool) -> None:
    if Path(out_path).exists() and not overwrite:
        raise CheckpointError(f'{out_path} already exists; choose another name or pass --force '
                              '(overwrite=True) to replace it')


def _save(obj: dict, out_path: str | Path) -> None:
    """Write through a temporary name + rename: a failed write leaves no half file."""
    from ..engine.train_state import atomic_save
    atomic_save(obj, out_path)


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
    from ..recipe.presets import get_preset
    _refuse_existing(out_path, overwrite)
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
    _save(out, out_path)
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
    from ..recipe.presets import get_preset
    _refuse_existing(out_path, overwrite)
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
    _save(out, out_path)
    return dict(preset=cfg.name, box_convention=info['box_convention'], num_keys=len(official),
                num_elements=sum(v.numel() for v in official.values()), verified=True)


def convert_pretrained_backbone(in_path: str | Path, out_path: str | Path,
                                preset: 'str | ModelConfig', allow_pickle: bool = False,
                                overwrite: bool = False) -> dict:
    """Map a backbone pretrain file (nuImages / DD3D / EVA02) to ``img_backbone.*`` names.

    The keys go through the backbone's ``PRETRAIN_KEY_MAP`` and are checked strictly against
    the preset's backbone (``load_pretrained_backbone``); the written file holds only
    ``img_backbone.*`` tensors and loads again with ``load_pretrained_backbone``.
    """
    from ..model.detector import SparseBEV, build_backbone
    from ..recipe.presets import get_preset
    _refuse_existing(out_path, overwrite)
    cfg = get_preset(preset) if isinstance(preset, str) else preset
    model = SparseBEV(cfg, build_backbone(cfg), None, None)
    report = load_pretrained_backbone(model, read_checkpoint(in_path, allow_pickle))
    state = OrderedDict(('img_backbone.' + k, v.detach().cpu().contiguous())
                        for k, v in model.img_backbone.state_dict().items())
    out = dict(state_dict=state, meta=dict(format=FORMAT_NAME, source=str(in_path), kind='backbone',
                                           preset=cfg.name))
    _save(out, out_path)
    return dict(preset=cfg.name, num_keys=len(report['loaded']), ignored=report['ignored'])


# ---------------------------------------------------------------------------- CLI
def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``sparsebev convert-checkpoint``."""
    parser.add_argument('input', help='official SparseBEV checkpoint (.pth)')
    parser.add_argument('output', help='where to write the converted checkpoint')
    parser.add_argument('--preset', default=None,
                        help='preset the checkpoint belongs to (default: guessed from its shapes)')
    parser.add_argument('--config', default=None, metavar='FILE',
                        help='official-style SparseBEV config file the checkpoint belongs to '
                             '(instead of --preset)')
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
        from ..recipe.presets import model_config
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
