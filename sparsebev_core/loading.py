"""One way to get a ready detector: a model recipe (``ModelConfig``), its weights (a checkpoint,
else the bundled demo weights), the device and the streaming options.

``sparsebev demo``, ``replay``, ``eval``, ``timing``, ``viz``, ``export-onnx`` and the ROS node
all come through here, so the rules live once:

* names are resolved at the edge: ``--preset`` / ``--config FILE`` (an official SparseBEV
  config) -> ``ModelConfig`` by ``recipe.presets.model_config``; everything here takes the
  ``ModelConfig``;
* without a checkpoint, the weights shipped in ``sparsebev_core/weights/<preset>_*.pth`` are
  used (:func:`bundled_checkpoint`); the ``tiny`` and ``tiny_memory`` presets may run on random
  weights (with a warning), every other preset needs weights (:class:`MissingCheckpointError`);
* ``'auto'`` and every other device name go through ``devices.resolve_device``;
* the runtime is ``'torch'`` (eager) or ``'onnxruntime'`` (an export folder).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

from .errors import UsageError
from .recipe.config import ModelConfig
from .recipe.frame_layout import check_streamable
from .streaming.options import StreamingOptions

if TYPE_CHECKING:                       # torch-heavy modules, imported when a model is built
    from .model.detector import SparseBEV
    from .streaming.detector import StreamingDetector
    from .streaming.onnx_runtime import OnnxRuntime

WEIGHTS_DIR = Path(__file__).with_name('weights')
RANDOM_WEIGHTS_PRESETS = ('tiny', 'tiny_memory')   # may run without weights (tests, plumbing checks)
RUNTIMES = ('torch', 'onnxruntime')


class MissingCheckpointError(UsageError):
    """A preset other than ``tiny`` without a checkpoint and without bundled weights."""


def bundled_checkpoint(preset: str) -> str | None:
    """The weights shipped in ``sparsebev_core/weights`` for ``preset`` (None if there are none):
    ``<preset>.pth`` or ``<preset>_<anything>.pth``, a file belonging to the longest preset name
    its name starts with (``tiny_memory_synthetic.pth`` is ``tiny_memory``'s, not ``tiny``'s)."""
    files = sorted(WEIGHTS_DIR.glob('*.pth')) if WEIGHTS_DIR.is_dir() else []
    return next((str(f) for f in files if _weights_owner(f.stem) == preset), None)


def _weights_owner(stem: str) -> str | None:
    """The preset a bundled file's name (without ``.pth``) belongs to."""
    from .recipe.presets import PRESET_NAMES
    owners = [p for p in PRESET_NAMES if stem == p or stem.startswith(p + '_')]
    return max(owners, key=len, default=None)


@dataclass
class LoadedModel:
    """A built model with its weights loaded, the recipe it was built from and the weights used."""
    model: 'SparseBEV'
    cfg: ModelConfig
    checkpoint: str | None              # None: random weights (``tiny`` only)


def load_model(cfg: ModelConfig, checkpoint: str | None = None, *,
               log: Callable[[str], None] = print, use_bundled: bool = True,
               random_weights_ok: bool = False) -> LoadedModel:
    """``build_model(cfg)`` + strict ``load_checkpoint`` (the given file, else the bundled one).

    ``use_bundled=False``: no bundled weights; ``random_weights_ok=True``: any preset may run
    without weights (``sparsebev timing`` times random weights; the caller says so).
    """
    from .checkpoints.official import load_checkpoint
    from .model.detector import build_model

    checkpoint = checkpoint or (bundled_checkpoint(cfg.name) if use_bundled else None)
    if not checkpoint and not random_weights_ok:
        if cfg.name not in RANDOM_WEIGHTS_PRESETS:
            raise MissingCheckpointError(
                f"a checkpoint is required for preset '{cfg.name}' (--checkpoint, or the node's "
                "'checkpoint' parameter): an official SparseBEV .pth or one converted with "
                '`sparsebev convert-checkpoint`')
        log(f"no checkpoint and no bundled weights in {WEIGHTS_DIR} for preset '{cfg.name}': "
            'the model has random weights and its boxes mean nothing')
    model = build_model(cfg)
    if checkpoint:
        load_checkpoint(model, checkpoint)
    return LoadedModel(model, cfg, checkpoint)


def load_detector(cfg: ModelConfig, checkpoint: str | None = None, device: str = 'auto',
                  options: StreamingOptions | None = None, *,
                  log: Callable[[str], None] = print, runtime: str = 'torch',
                  onnx_dir: str | None = None,
                  onnx_providers: Sequence[str] = ('CPUExecutionProvider',)
                  ) -> 'StreamingDetector':
    """A ``StreamingDetector`` for ``cfg`` with its weights on ``device``, streaming by ``options``
    (default ``StreamingOptions()``, the official way). The detector's ``cfg`` is the recipe.

    ``runtime='torch'``: the model in torch eager mode (``detector.runtime.model`` is the
    loaded model). ``runtime='onnxruntime'``: the export in ``onnx_dir`` (``sparsebev
    export-onnx``) on ``onnx_providers`` (``streaming.onnx_runtime.OnnxRuntime``), no torch
    model is built; a ``checkpoint`` given then must be the one exported (sha256 in
    ``export.json``), and the precision is the export's.
    """
    from .devices import resolve_device
    from .streaming.detector import StreamingDetector

    options = StreamingOptions() if options is None else options
    check_streamable(cfg)                       # before any weights are read
    if runtime not in RUNTIMES:
        raise UsageError(f'runtime must be one of {RUNTIMES}, got {runtime!r}')
    if runtime == 'onnxruntime':
        if options.precision != 'fp32':
            raise UsageError("with runtime 'onnxruntime' the precision is the export's "
                             '(sparsebev export-onnx --precision); leave precision at fp32')
        return StreamingDetector(_onnx_runtime(cfg, checkpoint, onnx_dir, onnx_providers), cfg,
                                 options=options)
    device = resolve_device(device)
    loaded = load_model(cfg, checkpoint, log=log)
    return StreamingDetector(loaded.model, loaded.cfg, device=device, options=options)


def _onnx_runtime(cfg: ModelConfig, checkpoint: str | None, onnx_dir: str | None,
                  providers: Sequence[str]) -> 'OnnxRuntime':
    """``OnnxRuntime`` of ``onnx_dir`` for the model; the checkpoint, if given, must match."""
    from .streaming.onnx_manifest import OnnxExportError, sha256_of_file
    from .streaming.onnx_runtime import OnnxRuntime

    if not onnx_dir:
        raise UsageError("runtime 'onnxruntime' needs an export folder (onnx_dir / --onnx-dir): "
                         f'make one with sparsebev export-onnx --preset {cfg.name} --out DIR')
    onnx = OnnxRuntime(onnx_dir, cfg, providers)
    exported = onnx.manifest['model'].get('checkpoint_sha256')
    if checkpoint and not Path(checkpoint).is_file():
        raise OnnxExportError(f'checkpoint {checkpoint} not found (with runtime onnxruntime it '
                              'is only compared with the exported weights; leave it empty to skip)')
    if checkpoint and sha256_of_file(checkpoint) != exported:
        raise OnnxExportError(f'{onnx_dir} was exported from other weights than {checkpoint} '
                              '(sha256 in export.json differs): export this checkpoint again '
                              f'(sparsebev export-onnx --preset {cfg.name} --checkpoint '
                              f'{checkpoint} --out {onnx_dir} --force) or leave the checkpoint empty')
    return onnx
