"""CUDA backend of ``msmv_sampling``: loads the compiled op and registers it with the front end.

Importing this module registers ``'cuda'`` with :func:`sparsebev_core.ops.register_backend` when
a build is found; otherwise it registers nothing and ``LOAD_ERROR`` says how to build. Where the
op comes from, in order: the extension installed by setup.py
(``sparsebev_core._msmv_sampling_cuda``), a finished just-in-time build in the cache
(``python -m sparsebev_core.ops.build``), or, with ``SPARSEBEV_CUDA_JIT=1``, a build made now.

Layout: the kernels read each level channels-last, ``[R, N, H, W, C]`` in memory. The front-end
shape ``[R, C, N, H, W]`` stays; features are converted with
``.contiguous(memory_format=torch.channels_last_3d)``, which is free when they already are.
Callers that sample the same features several times (the six decoder layers) should convert once
and pass the channels-last tensors: see :func:`to_kernel_layout`.

Precision: features and output in the input dtype (float32, float64, float16, bfloat16);
locations and level weights are used in float32 (float64 for float64 features), all arithmetic
accumulates in float32 (float64), feature gradients are accumulated in float32 and cast at the end.
The location gradient of the view coordinate is zero (it is an index, as in the official op).
"""
from __future__ import annotations

import os
import warnings
from types import ModuleType
from typing import Callable, Sequence

import torch
from torch.autograd.function import once_differentiable

from .msmv_sampling import register_backend

HOW_TO_BUILD = ('the CUDA msmv_sampling extension is not built: install with '
                '`pip install --no-build-isolation -e .` on a machine with nvcc and a CUDA-enabled '
                'torch, or run `python -m sparsebev_core.ops.build` (just-in-time build into a '
                'cache), or set SPARSEBEV_CUDA_JIT=1 to build on first use')


def load_extension() -> ModuleType:
    """The compiled op: installed extension, else a finished JIT build (ImportError if none)."""
    try:
        from .. import _msmv_sampling_cuda  # type: ignore[attr-defined]  (built by setup.py)
        return _msmv_sampling_cuda
    except ImportError:
        pass
    if torch.version.cuda is None:
        raise ImportError(f'{HOW_TO_BUILD} (torch {torch.__version__} has no CUDA support)')
    from . import build
    module = build.load_cached()
    if module is None and os.environ.get('SPARSEBEV_CUDA_JIT', '') not in ('', '0'):
        module = build.build(verbose=False)
    if module is None:
        raise ImportError(HOW_TO_BUILD)
    return module


def to_kernel_layout(feature: torch.Tensor) -> torch.Tensor:
    """``[R, C, N, H, W]`` -> the same tensor with channels-last memory (a no-op when it is)."""
    return feature.contiguous(memory_format=torch.channels_last_3d)


def accumulation_dtype(feature_dtype: torch.dtype) -> torch.dtype:
    """dtype of locations, level weights and arithmetic for features of ``feature_dtype``."""
    return torch.float64 if feature_dtype == torch.float64 else torch.float32


class MSMVSamplingFunction(torch.autograd.Function):
    """autograd wrapper around the extension's forward/backward (inputs already in kernel
    layout and dtypes, see :func:`make_backend`)."""

    @staticmethod
    def forward(ctx, extension: ModuleType, locations: torch.Tensor, scale_weights: torch.Tensor,
                *features: torch.Tensor) -> torch.Tensor:
        ctx.extension = extension
        ctx.save_for_backward(locations, scale_weights, *features)
        return extension.forward(list(features), locations, scale_weights)    # [R, Q, C, P]

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: torch.Tensor):
        locations, scale_weights, *features = ctx.saved_tensors
        need_feature_grad = any(ctx.needs_input_grad[3:])
        *grad_features, grad_loc, grad_weights = ctx.extension.backward(
            grad_out, features, locations, scale_weights, need_feature_grad)
        return (None,
                grad_loc if ctx.needs_input_grad[1] else None,
                grad_weights if ctx.needs_input_grad[2] else None,
                *grad_features)


def make_backend(extension: ModuleType) -> Callable[..., torch.Tensor]:
    """The backend callable for a compiled extension (``forward``/``backward`` as in csrc)."""

    def msmv_sampling_cuda(features_per_level: Sequence[torch.Tensor], locations: torch.Tensor,
                           scale_weights: torch.Tensor) -> torch.Tensor:
        """CUDA backend with the front end's contract (shapes in ``msmv_sampling``'s docstring).

        features ``[R, C, N, H_l, W_l]`` (any memory layout; channels-last is used as is),
        locations ``[R, Q, P, 3]``, scale_weights ``[R, Q, P, L]`` -> ``[R, Q, C, P]``
        contiguous, in the features' dtype.
        """
        if len(features_per_level) == 0:
            raise ValueError('msmv_sampling needs at least one feature level')
        acc = accumulation_dtype(features_per_level[0].dtype)
        features = [to_kernel_layout(f) for f in features_per_level]          # [R, C, N, H, W] (NDHWC memory)
        loc = locations.to(acc).contiguous()                                   # [R, Q, P, 3]
        weights = scale_weights.to(acc).contiguous()                           # [R, Q, P, L]
        return MSMVSamplingFunction.apply(extension, loc, weights, *features)

    return msmv_sampling_cuda


# what CUDA reports when the extension has no kernel for this GPU (built for other archs, no PTX)
KERNEL_IMAGE_ERRORS = ('no kernel image is available', 'invalid device function',
                       'unsupported toolchain', 'cudaErrorNoKernelImageForDevice')


def with_fallback(kernel: Callable[..., torch.Tensor], fallback: Callable[..., torch.Tensor]
                  ) -> Callable[..., torch.Tensor]:
    """``kernel``, but when its first call fails because the build has no kernel for the
    present GPU (``KERNEL_IMAGE_ERRORS``), warn once and run ``fallback`` from then on.

    Any other error is raised as it is; once the first call succeeded, the guard is gone.
    """
    state = {'checked': False, 'fallen_back': False}

    def guarded(*args, **kwargs) -> torch.Tensor:
        if state['fallen_back']:
            return fallback(*args, **kwargs)
        if state['checked']:
            return kernel(*args, **kwargs)
        try:
            out = kernel(*args, **kwargs)
        except RuntimeError as error:
            if not any(text in str(error) for text in KERNEL_IMAGE_ERRORS):
                raise
            state['fallen_back'] = True
            warnings.warn(f'the CUDA msmv_sampling kernel cannot run on this GPU ({error}); '
                          'using the torch backend from now on. Rebuild the extension for this '
                          'GPU (TORCH_CUDA_ARCH_LIST="<arch>+PTX" pip install --no-build-isolation '
                          '-e .)', RuntimeWarning, stacklevel=2)
            return fallback(*args, **kwargs)
        state['checked'] = True
        return out

    guarded.fallback_state = state         # type: ignore[attr-defined]  (for tests/diagnostics)
    return guarded


try:
    _C: ModuleType | None = load_extension()
    LOAD_ERROR: str | None = None
except (ImportError, OSError, RuntimeError) as error:  # not built / not loadable / JIT failed:
    # the front end then reports 'cuda' as unavailable and set_backend('cuda') says how to build
    _C, LOAD_ERROR = None, str(error)

msmv_sampling_cuda: Callable[..., torch.Tensor] | None = None
if _C is not None:
    from .msmv_sampling import msmv_sampling_torch
    msmv_sampling_cuda = with_fallback(make_backend(_C), msmv_sampling_torch)
    register_backend('cuda', msmv_sampling_cuda)
