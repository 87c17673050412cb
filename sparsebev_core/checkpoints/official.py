"""Official SparseBEV checkpoints: the file format, its integrity checks and strict loading.

Official checkpoints are mmcv ``.pth`` files: ``{'meta', 'state_dict', ['optimizer'],
['version']}`` with the state-dict names of ``sparsebev_core.model.detector.SparseBEV``
(``img_backbone.*``, ``img_neck.*``, ``pts_bbox_head.*``; docs/official_model.md section 10).
A ``version`` of ``'v0.17.1'`` marks weights trained with the old mmdet3d box convention
(docs/official_model.md 2.7): loading such a file switches ``model.pts_bbox_head.legacy_yaw_convention`` on.

Loading is always strict unless asked otherwise: a mismatch raises
``CheckpointMismatchError`` naming every missing, unexpected and wrongly-shaped key, and
nothing is copied into the model. Files are read with ``torch.load(weights_only=True)``;
a file that needs arbitrary pickles is refused with a message saying how to allow it.

Official detector checkpoints use our key names for every backbone. Backbone pretrain files
are ``pretrain.py``'s; conversions both ways and ``sparsebev convert-checkpoint`` are
``convert.py``'s; writing files safely is ``files.py``'s.
"""
from __future__ import annotations

import logging
import pickle
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Any, Mapping

import torch
import torch.nn as nn

from ..errors import InputError

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
