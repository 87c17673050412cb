"""The ``export.json`` manifest of an ONNX export folder: names, and the checks at start-up.

:func:`read_manifest` is the one gate before any session is built: the folder and manifest
exist and parse, the manifest's model matches the one the caller expects (name, input size,
frames, cameras), and each ``.onnx`` file is present with the size and sha256 the manifest
recorded (a truncated or replaced file is caught here, naming the file). Every failure is an
``OnnxExportError`` (an ``InputError``) that says what to do.

The input and output names of the SparseBEV++ head graph live here too (``STATE_NAMES``,
``RECURRENT_OUTPUTS``): the exporter and ``OnnxRuntime`` build its inputs and read its next
state with the same two functions (:func:`recurrent_head_feed`, :func:`next_state_from`).
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..errors import InputError
from ..model.recurrent_state import EgoMotion, RecurrentState
from ..recipe.config import ModelConfig

FORMAT = 'sparsebev-onnx'
FORMAT_VERSION = 2                  # 2: the head takes valid_views
ENCODER_FILE = 'encoder.onnx'
HEAD_FILE = 'head.onnx'
MANIFEST_FILE = 'export.json'
ONNX_INSTALL_HINT = "pip install -e '.[onnx]' (onnx==1.23.2 onnxruntime==1.32.0 ml_dtypes==0.5.4)"


class OnnxExportError(InputError):
    """An ONNX export folder that cannot be used: missing, incomplete, foreign or damaged."""


# the recurrent head graph: the fixed-form state in the order of ``RecurrentState``'s fields,
# returned as next_<name>; the motion and gate; the outputs (the next state last)
STATE_NAMES = ('propagated_feat', 'propagated_bbox', 'memory_feat', 'memory_bbox', 'memory_rows')
NEXT_STATE_NAMES = tuple(f'next_{name}' for name in STATE_NAMES)
HEAD_OUTPUTS = ('cls_scores', 'bbox_preds', 'all_cls_scores', 'all_bbox_preds')
RECURRENT_OUTPUTS = (*HEAD_OUTPUTS, 'propagated_index', 'propagation_used', *NEXT_STATE_NAMES)


def recurrent_head_feed(levels: Sequence[torch.Tensor], lidar2img: torch.Tensor,
                        state: RecurrentState, motion: EgoMotion, propagate: torch.Tensor,
                        valid_views: torch.Tensor) -> dict[str, torch.Tensor]:
    """The recurrent head graph's inputs by name, in the graph's order: ``level0 ..`` ``[N, C,
    h_l, w_l]``, ``lidar2img [1, N, 4, 4]``, the fixed-form ``state`` (``RecurrentState``:
    ``STATE_NAMES``), ``elapsed [1]`` float32 (``motion.elapsed`` cast: it only moves boxes,
    in float32 in eager mode too), ``prev_to_current [1, 4, 4]``, ``propagate [1]`` bool,
    ``valid_views [1, N]`` bool."""
    feed = {f'level{i}': level for i, level in enumerate(levels)}
    feed['lidar2img'] = lidar2img
    feed.update(zip(STATE_NAMES, (*state.tensors(), state.memory_rows)))
    feed.update(elapsed=motion.elapsed.to(torch.float32), prev_to_current=motion.prev_to_current,
                propagate=propagate.to(torch.bool), valid_views=valid_views.to(torch.bool))
    return feed


def next_state_from(outputs: dict[str, np.ndarray]) -> RecurrentState:
    """The next state among the recurrent head graph's outputs by name (``NEXT_STATE_NAMES``),
    as tensors sharing the arrays' memory."""
    tensors = [torch.from_numpy(outputs[name]) for name in NEXT_STATE_NAMES]
    return RecurrentState(*tensors[:4], memory_rows=tensors[4])


def sha256_of_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(1 << 20), b''):
            digest.update(block)
    return digest.hexdigest()


def _redo(cfg: ModelConfig, onnx_dir: Path) -> str:
    return f'export it again: sparsebev export-onnx --preset {cfg.name} --out {onnx_dir} --force'


def read_manifest(onnx_dir: str | Path, cfg: ModelConfig, num_cameras: int | None = None) -> dict:
    """The checked manifest of ``onnx_dir`` for the model ``cfg`` (see the module doc)."""
    folder = Path(onnx_dir)
    path = folder / MANIFEST_FILE
    if not folder.is_dir():
        raise OnnxExportError(f'onnx_dir {folder} is not a folder; {_redo(cfg, folder)}')
    if not path.is_file():
        raise OnnxExportError(f'{path} is missing: {folder} is not a complete ONNX export; '
                              f'{_redo(cfg, folder)}')
    try:
        manifest = json.loads(path.read_text())
        if manifest.get('format') != FORMAT:
            raise ValueError(f"format {manifest.get('format')!r}, expected {FORMAT!r}")
        model, graphs = manifest['model'], manifest['graphs']
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise OnnxExportError(f'{path} is not a SparseBEV ONNX manifest ({err}); '
                              f'{_redo(cfg, folder)}') from err
    if manifest.get('format_version') != FORMAT_VERSION:
        raise OnnxExportError(f'{path} has format_version {manifest.get("format_version")!r}, '
                              f'this code reads {FORMAT_VERSION}; {_redo(cfg, folder)}')
    expected = {'model name': (model.get('name'), cfg.name),
                'input_hw': (manifest.get('input_hw'), list(cfg.input_size)),
                'num_frames': (manifest.get('num_frames'), cfg.num_frames)}
    if num_cameras is not None:
        expected['num_cameras'] = (manifest.get('num_cameras'), num_cameras)
    for what, (theirs, ours) in expected.items():
        if theirs != ours:
            raise OnnxExportError(
                f'{path} was exported for {what} {theirs!r}, but the detector is configured for '
                f'{ours!r} (preset {cfg.name!r}): set the preset to {model.get("name")!r} or '
                f'{_redo(cfg, folder)}')
    _check_recurrent(manifest.get('recurrent'), cfg, path, folder)
    for key in ('encoder', 'head'):
        _check_graph_file(folder, graphs.get(key), key, cfg)
    return manifest


def recurrent_entry(cfg: ModelConfig) -> dict | None:
    """The manifest's ``recurrent`` entry of a model (None: a v1 model, cache-reading head):
    the state sizes, the gate's interval, and each state input with the output that returns it."""
    memory = cfg.head.memory
    if memory is None:
        return None
    return {'num_propagated': memory.num_propagated, 'memory_len': memory.memory_len,
            'len_per_frame': memory.len_per_frame, 'embed_dims': cfg.head.embed_dims,
            'max_time_interval': memory.max_time_interval,
            'state': [{'input': name, 'output': out} for name, out in zip(STATE_NAMES, NEXT_STATE_NAMES)],
            'first_frame': 'state inputs all zeros (memory_rows 0), elapsed 0, prev_to_current '
                           'identity, propagate False',
            'propagate': 'memory_rows > 0 and abs(elapsed) <= max_time_interval, in float64 '
                         '(computed by the caller)'}


def _check_recurrent(entry, cfg: ModelConfig, path: Path, folder: Path) -> None:
    """The export's head kind (cache-reading or recurrent) and state sizes are the model's."""
    ours = recurrent_entry(cfg)
    if (entry is None) != (ours is None):
        kinds = ('a recurrent SparseBEV++ head', 'a feature-cache head')
        theirs_kind, ours_kind = (kinds[0], kinds[1]) if ours is None else (kinds[1], kinds[0])
        raise OnnxExportError(f'{path} holds {theirs_kind}, but preset {cfg.name!r} has '
                              f'{ours_kind}; {_redo(cfg, folder)}')
    if ours is None:
        return
    for key in ('num_propagated', 'memory_len', 'len_per_frame', 'embed_dims'):
        if entry.get(key) != ours[key]:
            raise OnnxExportError(f'{path} was exported for a recurrent state with {key} '
                                  f'{entry.get(key)!r}, but the detector is configured for '
                                  f'{ours[key]!r} (preset {cfg.name!r}); {_redo(cfg, folder)}')


def _check_graph_file(folder: Path, entry: dict | None, key: str, cfg: ModelConfig) -> None:
    """The graph file exists with the recorded size and sha256."""
    if not isinstance(entry, dict) or 'file' not in entry:
        raise OnnxExportError(f'{folder / MANIFEST_FILE} has no {key} graph; {_redo(cfg, folder)}')
    file = folder / entry['file']
    if not file.is_file():
        raise OnnxExportError(f'{file} is missing; {_redo(cfg, folder)}')
    size = file.stat().st_size
    if size != entry.get('bytes'):
        raise OnnxExportError(f'{file} has {size} bytes, the manifest recorded {entry.get("bytes")} '
                              f'(truncated or replaced); {_redo(cfg, folder)}')
    if sha256_of_file(file) != entry.get('sha256'):
        raise OnnxExportError(f'{file} does not match the sha256 in {folder / MANIFEST_FILE} '
                              f'(damaged or replaced); {_redo(cfg, folder)}')
