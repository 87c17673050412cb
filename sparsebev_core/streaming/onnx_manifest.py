"""The ``export.json`` manifest of an ONNX export folder: names, and the checks at start-up.

:func:`read_manifest` is the one gate before any session is built: the folder and manifest
exist and parse, the manifest's model matches the one the caller expects (name, input size,
frames, cameras), and each ``.onnx`` file is present with the size and sha256 the manifest
recorded (a truncated or replaced file is caught here, naming the file). Every failure is an
``OnnxExportError`` (an ``InputError``) that says what to do.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from ..errors import InputError
from ..recipe.config import ModelConfig

FORMAT = 'sparsebev-onnx'
FORMAT_VERSION = 2                  # 2: the head takes valid_views
ENCODER_FILE = 'encoder.onnx'
HEAD_FILE = 'head.onnx'
MANIFEST_FILE = 'export.json'
ONNX_INSTALL_HINT = "pip install -e '.[onnx]' (onnx==1.23.2 onnxruntime==1.32.0 ml_dtypes==0.5.4)"


class OnnxExportError(InputError):
    """An ONNX export folder that cannot be used: missing, incomplete, foreign or damaged."""


def check_exportable(cfg: ModelConfig) -> None:
    """Raise ``OnnxExportError`` for a model the ONNX graphs do not cover yet: the recurrent
    SparseBEV++ head (its state as graph inputs and outputs is the next step; its contract is
    the runtime seam's ``run_recurrent_head``, docs/architecture.md)."""
    if cfg.head.memory is not None:
        raise OnnxExportError(f'preset {cfg.name!r} is a recurrent SparseBEV++ model: its ONNX '
                              "export is not implemented yet; run it with runtime 'torch'")


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
    for key in ('encoder', 'head'):
        _check_graph_file(folder, graphs.get(key), key, cfg)
    return manifest


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
