"""One way to get a ready detector: model recipe (a preset name or an official config file),
its weights (a checkpoint, else the bundled demo weights), the device.

``sparsebev demo``, ``replay``, ``eval``, ``timing``, ``viz``, ``train`` and the ROS node all
come through here, so the rules live once:

* ``--config FILE`` (an official SparseBEV config) wins over ``--preset``
  (:func:`model_config`);
* without a checkpoint, the weights shipped in ``sparsebev_core/weights/<preset>*.pth`` are
  used (:func:`bundled_checkpoint`); the ``tiny`` preset may run on random weights (with a
  warning), every other preset needs weights (:class:`MissingCheckpointError`);
* ``'auto'`` and every other device name go through ``runtime_env.resolve_device``.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from .config import ModelConfig
from .errors import UsageError

if TYPE_CHECKING:                       # torch-heavy modules, imported when a model is built
    from .model.detector import SparseBEV
    from .model.streaming import StreamingDetector

WEIGHTS_DIR = Path(__file__).with_name('weights')
RANDOM_WEIGHTS_PRESETS = ('tiny',)      # may run without weights (tests, plumbing checks)


class MissingCheckpointError(UsageError):
    """A preset other than ``tiny`` without a checkpoint and without bundled weights."""


def bundled_checkpoint(preset: str) -> str | None:
    """The weights shipped in ``sparsebev_core/weights`` for ``preset`` (None if there are none)."""
    files = sorted(WEIGHTS_DIR.glob(f'{preset}*.pth')) if WEIGHTS_DIR.is_dir() else []
    return str(files[0]) if files else None


def model_config(preset: str | None = None, config_file: str | None = None) -> ModelConfig:
    """The model recipe: the official config file ``config_file`` if given, else the preset.

    Exactly one of the two; raises ``UsageError`` otherwise, and ``presets.UnknownPresetError``
    (an ``InputError``) for an unknown preset name.
    """
    if preset and config_file:
        raise UsageError(f'give one model, --preset NAME or --config FILE, not both (got '
                         f'{preset!r} and {config_file!r})')
    if config_file:
        from .official_config import load_official_config   # only when a config file is given
        return load_official_config(config_file)
    if not preset:
        raise UsageError('give a model: --preset NAME or --config FILE')
    from .presets import get_preset
    return get_preset(preset)


@dataclass
class LoadedModel:
    """A built model with its weights loaded, the recipe it was built from and the weights used."""
    model: 'SparseBEV'
    cfg: ModelConfig
    checkpoint: str | None              # None: random weights (``tiny`` only)


def load_model(preset_or_config: str | ModelConfig, checkpoint: str | None = None, *,
               log: Callable[[str], None] = print, use_bundled: bool = True,
               random_weights_ok: bool = False) -> LoadedModel:
    """``build_model`` + strict ``load_checkpoint`` (the given file, else the bundled one).

    ``use_bundled=False``: no bundled weights; ``random_weights_ok=True``: any preset may run
    without weights (``sparsebev timing`` times random weights; the caller says so).
    """
    from .checkpoint import load_checkpoint
    from .model.detector import build_model

    cfg = model_config(preset_or_config) if isinstance(preset_or_config, str) else preset_or_config
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


def load_detector(preset_or_config: str | ModelConfig, checkpoint: str | None = None,
                  device: str = 'auto', *, log: Callable[[str], None] = print,
                  **streaming_options: Any) -> 'StreamingDetector':
    """A ``StreamingDetector`` on ``device`` for the preset (or config) and checkpoint.

    ``streaming_options`` go to ``StreamingDetector`` (``history_spacing``, ``max_time_gap``,
    ``score_threshold``, ``max_detections``, ``precision``, ...). The detector's ``cfg`` is
    the recipe; ``detector.model`` the loaded model.
    """
    from .model.streaming import StreamingDetector
    from .runtime_env import resolve_device

    device = resolve_device(device)
    loaded = load_model(preset_or_config, checkpoint, log=log)
    return StreamingDetector(loaded.model, loaded.cfg, device=device, **streaming_options)
