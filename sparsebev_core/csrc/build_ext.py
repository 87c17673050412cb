"""setup.py hook: the CUDA extension ``sparsebev_core._msmv_sampling_cuda`` when it can be built.

``setup.py`` calls :func:`extension_kwargs` and passes the result to ``setup()``. The extension
is built when torch is importable with CUDA support (``torch.version.cuda``) and a CUDA toolkit
is found (``CUDA_HOME`` / ``nvcc``); otherwise a message (on stdout: it is information, and
colcon flags every package that writes to stderr) says why it was skipped and the package
installs without it (the torch backend is always there). Without a toolkit, torch is not even
imported. The Python that runs setup.py must see torch: pip's build isolation hides it
(``pip install --no-build-isolation -e .``); colcon runs setup.py with its own interpreter
(run the colcon of the environment that has torch, ``python -m colcon build``).

``TORCH_CUDA_ARCH_LIST`` picks the GPU architectures (default ``7.5+PTX;8.0;8.6;8.9;9.0``: machine
code for Turing, A100, RTX 30xx, RTX 40xx/L4/L40, H100/H200, plus Turing PTX that the driver
compiles just in time on any newer GPU without its own machine code, e.g. Jetson Orin (sm_87)
and Blackwell). ``SPARSEBEV_NO_CUDA=1`` skips the build on purpose.
"""
from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

CSRC_DIR = Path(__file__).resolve().parent
EXTENSION_NAME = 'sparsebev_core._msmv_sampling_cuda'
SOURCES = ('msmv_sampling.cpp', 'msmv_sampling_kernels.cu')
HEADERS = ('msmv_sampling.h', 'msmv_sampling_launch.h')
DEFAULT_ARCH_LIST = '7.5+PTX;8.0;8.6;8.9;9.0'
CXX_FLAGS = ['-O3', '-std=c++17']
NVCC_FLAGS = ['-O3', '-std=c++17', '-lineinfo']


def source_paths() -> list[Path]:
    """Absolute paths of the sources compiled into the extension."""
    return [CSRC_DIR / name for name in SOURCES]


def cuda_build_unavailable_reason() -> str | None:
    """Why the CUDA extension cannot be built here, or None when it can."""
    if os.environ.get('SPARSEBEV_NO_CUDA', '') not in ('', '0'):
        return 'SPARSEBEV_NO_CUDA is set'
    if not cuda_toolkit_may_exist():
        return 'no CUDA toolkit found (set CUDA_HOME or put nvcc on PATH)'
    try:
        import torch
        from torch.utils import cpp_extension
    except ImportError as error:
        return (f'torch is not importable by the Python running the build ({sys.executable}: '
                f'{error}); with pip use `pip install --no-build-isolation -e .`, with colcon '
                'run the colcon of the environment that has torch (`python -m colcon build`)')
    if torch.version.cuda is None:
        return f'torch {torch.__version__} is a CPU-only build'
    if cpp_extension.CUDA_HOME is None:
        return 'no CUDA toolkit found (set CUDA_HOME or put nvcc on PATH)'
    return None


def cuda_toolkit_may_exist() -> bool:
    """Where torch's ``cpp_extension`` looks for the toolkit (CUDA_HOME, CUDA_PATH, nvcc on
    PATH, /usr/local/cuda), checked without importing torch (seconds, on every setup.py call)."""
    return bool(os.environ.get('CUDA_HOME') or os.environ.get('CUDA_PATH')
                or shutil.which('nvcc') or Path('/usr/local/cuda').exists())


def extension_kwargs() -> dict:
    """``{'ext_modules': [...], 'cmdclass': {'build_ext': BuildExtension}}``, or ``{}`` with a message.

    Never raises: a CPU install must not break because of the optional CUDA op.
    """
    try:
        reason = cuda_build_unavailable_reason()
        if reason is not None:
            print(f'sparsebev_core: not building the CUDA sampling op ({reason}); the torch '
                  'backend will be used. Build it later with `python -m sparsebev_core.ops.build`.')
            return {}
        from torch.utils.cpp_extension import BuildExtension, CUDAExtension
        os.environ.setdefault('TORCH_CUDA_ARCH_LIST', DEFAULT_ARCH_LIST)
        extension = CUDAExtension(
            name=EXTENSION_NAME,
            sources=[os.path.relpath(path) for path in source_paths()],
            include_dirs=[str(CSRC_DIR)],
            extra_compile_args={'cxx': CXX_FLAGS, 'nvcc': NVCC_FLAGS},
        )
        print(f'sparsebev_core: building the CUDA sampling op for TORCH_CUDA_ARCH_LIST='
              f'{os.environ["TORCH_CUDA_ARCH_LIST"]}', file=sys.stderr)
        return {'ext_modules': [extension], 'cmdclass': {'build_ext': BuildExtension}}
    except Exception as error:  # noqa: BLE001 -- the CUDA op is optional, the install is not
        print(f'sparsebev_core: not building the CUDA sampling op ({type(error).__name__}: {error})',
              file=sys.stderr)
        return {}
