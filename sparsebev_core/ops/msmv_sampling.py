"""Multi-scale multi-view sampling: the op the SparseBEV decoder spends its time in.

``msmv_sampling(features_per_level, locations, scale_weights)``:

* ``features_per_level``: one tensor per pyramid level, ``[BTG, C, N, H_l, W_l]`` (the
  grid_sample layout: BTG = batch * frames * groups rows, C channels of one group, N views).
* ``locations``: ``[BTG, Q, P, 3]`` = (u / W, v / H, view / (N - 1)), u, v in input-image
  pixels; (0, 0) is the first pixel centre and (1, 1) the last one (align_corners=True).
* ``scale_weights``: ``[BTG, Q, P, L]`` per-point weights of the L levels.
* returns ``[BTG, Q, C, P]``: sum over levels of weight * bilinear sample of the chosen view,
  zero outside the image (docs/official_model.md section 3).

Backends: ``torch`` (pure PyTorch, one 5-D ``grid_sample`` per level, differentiable, runs
everywhere), ``gather`` (``gather_sampling.py``: the four bilinear taps read with ``Gather``,
the formulation ONNX / TensorRT run without a plugin, differentiable) and ``cuda``
(``sparsebev_core/csrc``, when built). ``set_backend('auto' | 'torch' | 'gather' | 'cuda')`` is
the one global switch; ``auto`` picks CUDA for CUDA inputs when the extension is loaded, else
``torch``. :func:`prefers_channels_last` says which memory layout of the features each
backend reads fastest (docs/sampling_op.md).
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from ..errors import MissingDependencyError
from .gather_sampling import msmv_sampling_gather

BACKENDS = ('auto', 'torch', 'gather', 'cuda')
_backend = 'auto'

# name -> callable(features_per_level, locations, scale_weights) -> Tensor; filled below and
# by the CUDA extension loader (sparsebev_core.ops.cuda_backend) when it imports.
_implementations: dict[str, Callable[..., torch.Tensor]] = {}
_cuda_load_error: str | None = None     # why the CUDA backend did not load (None: not tried / loaded)


class BackendUnavailableError(MissingDependencyError, RuntimeError):
    """``set_backend('cuda')`` without a loadable CUDA extension; the message has the load error."""


def msmv_sampling_torch(features_per_level: Sequence[torch.Tensor], locations: torch.Tensor,
                        scale_weights: torch.Tensor) -> torch.Tensor:
    """Pure-PyTorch backend: one 5-D ``grid_sample`` per level (trilinear over views).

    The view coordinate ``view / (N - 1)`` maps exactly onto a view index, so the trilinear
    weight along the view axis is 1 for the chosen view (up to float rounding, docs/official_model.md 3.3).
    """
    btg, q, p, _ = locations.shape
    grid = (locations * 2.0 - 1.0).reshape(btg, q, p, 1, 3)               # [BTG, Q, P, 1, 3]
    out = None
    for level, feat in enumerate(features_per_level):                      # feat [BTG, C, N, H, W]
        sampled = F.grid_sample(feat, grid.to(feat.dtype), mode='bilinear',
                                padding_mode='zeros', align_corners=True)  # [BTG, C, Q, P, 1]
        weighted = sampled.squeeze(-1) * scale_weights[..., level].unsqueeze(1).to(feat.dtype)
        out = weighted if out is None else out + weighted                  # [BTG, C, Q, P]
    assert out is not None, 'msmv_sampling needs at least one feature level'
    return out.permute(0, 2, 1, 3).contiguous()                            # [BTG, Q, C, P]


_implementations['torch'] = msmv_sampling_torch
_implementations['gather'] = msmv_sampling_gather


def _try_load_cuda() -> None:
    """Register the CUDA backend if the compiled extension can be imported (never raises; the
    reason it did not load is kept for :func:`set_backend`'s message)."""
    global _cuda_load_error
    if 'cuda' in _implementations:
        return
    try:
        from . import cuda_backend  # (registers itself when the extension loads)
    except Exception as error:  # the extension is optional: missing, not built, or no CUDA runtime
        _cuda_load_error = (f'sparsebev_core.ops.cuda_backend does not import '
                            f'({type(error).__name__}: {error}); build the extension with '
                            '`python -m sparsebev_core.ops.build`')
        return
    if 'cuda' not in _implementations:
        _cuda_load_error = cuda_backend.LOAD_ERROR or 'the extension registered no backend'


def available_backends() -> list[str]:
    """Backends that can run here (``torch`` and ``gather`` always; ``cuda`` when the extension
    loaded)."""
    _try_load_cuda()
    return [name for name in ('torch', 'gather', 'cuda') if name in _implementations]


def register_backend(name: str, fn: Callable[..., torch.Tensor]) -> None:
    """Install an implementation for a backend name (used by the CUDA loader)."""
    if name not in BACKENDS or name == 'auto':
        raise ValueError(f'unknown msmv_sampling backend {name!r}')
    _implementations[name] = fn


def set_backend(name: str) -> None:
    """Choose the sampling backend globally: ``'auto'``, ``'torch'``, ``'gather'`` or ``'cuda'``."""
    global _backend
    if name not in BACKENDS:
        raise ValueError(f'unknown msmv_sampling backend {name!r}; choose one of {BACKENDS}')
    if name == 'cuda':
        _try_load_cuda()
        if 'cuda' not in _implementations:
            raise BackendUnavailableError(
                f'the CUDA msmv_sampling backend is not available: {_cuda_load_error}; use '
                "set_backend('torch') or 'auto' to run without it")
    _backend = name


def get_backend() -> str:
    """The backend name currently selected (may be ``'auto'``)."""
    return _backend


def resolve_backend(locations: torch.Tensor) -> str:
    """Concrete backend that ``msmv_sampling`` will use for inputs like ``locations``."""
    if _backend != 'auto':
        return _backend
    if locations.is_cuda:
        _try_load_cuda()
        if 'cuda' in _implementations:
            return 'cuda'
    return 'torch'


def prefers_channels_last(backend: str, device: torch.device) -> bool:
    """Whether ``backend`` reads features fastest with channels-last memory ``[R, N, H, W, C]``.

    ``cuda`` and ``gather`` read one pixel's channels together; the 5-D ``grid_sample`` on the
    CPU loops over channels innermost, so it is about 3x faster that way at the r50 shapes
    (bitwise the same result, docs/benchmarks.md); on a GPU it keeps the plain layout.
    """
    if backend in ('cuda', 'gather'):
        return True
    return backend == 'torch' and torch.device(device).type == 'cpu'


def msmv_sampling(features_per_level: Sequence[torch.Tensor], locations: torch.Tensor,
                  scale_weights: torch.Tensor) -> torch.Tensor:
    """Sample every (query, point) from its chosen view at all levels and sum the levels.

    Shapes in the module docstring. Dispatches to the selected backend.
    """
    return _implementations[resolve_backend(locations)](features_per_level, locations, scale_weights)
