"""sparsebev_core: SparseBEV (ICCV 2023) in plain PyTorch, with no ROS dependency.

The names a user needs, importable from the package itself; they are imported lazily, so that
``import sparsebev_core`` stays cheap (no torch until a model or a detector is used)::

    from sparsebev_core import CameraView, Frame, get_preset, load_detector
    detector = load_detector(get_preset('tiny'))          # bundled demo weights, device 'auto'
    detections = detector.step(Frame(cameras, stamp, T_world_ego, T_ego_model))

The rooms behind them (``recipe/``, ``streaming/``, ``checkpoints/``, ``model/`` ...) are in
docs/architecture.md.
"""
from __future__ import annotations

import importlib
from typing import Any

__version__ = '0.1.0'

PUBLIC_NAMES: dict[str, str] = {
    # the data that goes in and comes out
    'Frame': 'sparsebev_core.frame',
    'CameraView': 'sparsebev_core.frame',
    'Detections': 'sparsebev_core.frame',
    # what a model is
    'ModelConfig': 'sparsebev_core.recipe.config',
    'get_preset': 'sparsebev_core.recipe.presets',
    'model_config': 'sparsebev_core.recipe.presets',
    # a ready detector
    'load_detector': 'sparsebev_core.loading',
    'StreamingDetector': 'sparsebev_core.streaming.detector',
    'StreamingOptions': 'sparsebev_core.streaming.options',
}
"""Public name -> the module that owns it (imported on first use)."""

__all__ = ['__version__', *PUBLIC_NAMES]


def __getattr__(name: str) -> Any:
    module = PUBLIC_NAMES.get(name)
    if module is None:
        raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value                     # the next access is a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(PUBLIC_NAMES))
