"""Just-in-time build of the CUDA sampling op: ``python -m sparsebev_core.ops.build``.

For installs where ``setup.py`` did not compile ``sparsebev_core._msmv_sampling_cuda`` (pip's
build isolation, a wheel built without CUDA, an editable install done before a GPU was there),
this compiles the same sources with ``torch.utils.cpp_extension.load`` into a cache directory::

    $SPARSEBEV_CACHE_DIR (default $XDG_CACHE_HOME/sparsebev or ~/.cache/sparsebev)
        /msmv_sampling_cuda/<key>/_msmv_sampling_cuda.so

where ``<key>`` names the torch and CUDA versions, the target architectures and a hash of the
sources, so a changed source or torch upgrade never loads a stale binary. The CUDA backend
(``sparsebev_core.ops.cuda_backend``) loads a build from there when the installed extension is
missing; ``SPARSEBEV_CUDA_JIT=1`` lets it compile on first use instead of failing.
"""
from __future__ import annotations

import argparse
import hashlib
import importlib.util
import os
import sys
import time
from pathlib import Path
from types import ModuleType

from ..csrc import build_ext

MODULE_NAME = '_msmv_sampling_cuda'


def cache_root() -> Path:
    """Root of the JIT build cache."""
    if os.environ.get('SPARSEBEV_CACHE_DIR'):
        return Path(os.environ['SPARSEBEV_CACHE_DIR']).expanduser()
    xdg = os.environ.get('XDG_CACHE_HOME')
    return (Path(xdg) if xdg else Path.home() / '.cache') / 'sparsebev'


def arch_list() -> str:
    """Target architectures: ``TORCH_CUDA_ARCH_LIST``, else the visible GPU's, else the default."""
    if os.environ.get('TORCH_CUDA_ARCH_LIST'):
        return os.environ['TORCH_CUDA_ARCH_LIST']
    import torch
    if torch.cuda.is_available():
        major, minor = torch.cuda.get_device_capability()
        return f'{major}.{minor}'
    return build_ext.DEFAULT_ARCH_LIST


def build_key() -> str:
    """Cache key: torch/CUDA versions, architectures, sources and flags."""
    import torch
    digest = hashlib.sha256()
    for name in build_ext.SOURCES + build_ext.HEADERS:
        digest.update(name.encode())
        digest.update((build_ext.CSRC_DIR / name).read_bytes())
    digest.update(repr((build_ext.CXX_FLAGS, build_ext.NVCC_FLAGS)).encode())
    arches = arch_list().replace(';', '_').replace(' ', '_').replace('+', 'p')
    return f'torch{torch.__version__}-cu{torch.version.cuda}-sm{arches}-{digest.hexdigest()[:12]}'


def build_dir() -> Path:
    """The cache directory of the build that matches the current sources and torch."""
    return cache_root() / 'msmv_sampling_cuda' / build_key()


def load_cached() -> ModuleType | None:
    """Import a finished JIT build for the current sources, or return None when there is none."""
    directory = build_dir()
    loaded = sys.modules.get(MODULE_NAME)  # torch.utils.cpp_extension.load registers it there
    if loaded is not None and Path(getattr(loaded, '__file__', '')).parent == directory:
        return loaded
    candidates = sorted(directory.glob(f'{MODULE_NAME}*.so')) + sorted(directory.glob(f'{MODULE_NAME}*.pyd'))
    if not candidates:
        return None
    spec = importlib.util.spec_from_file_location(MODULE_NAME, candidates[0])
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def build(verbose: bool = True) -> ModuleType:
    """Compile (or reuse) the extension in the cache and return the loaded module.

    Raises RuntimeError with what is missing when torch has no CUDA or no toolkit is found.
    """
    reason = build_ext.cuda_build_unavailable_reason()
    if reason is not None:
        raise RuntimeError(f'cannot build the CUDA sampling op: {reason}. It needs a CUDA-enabled '
                           'torch and the CUDA toolkit (nvcc); the torch backend works without it.')
    from torch.utils.cpp_extension import load
    directory = build_dir()
    directory.mkdir(parents=True, exist_ok=True)
    os.environ['TORCH_CUDA_ARCH_LIST'] = arch_list()
    return load(name=MODULE_NAME,
                sources=[str(path) for path in build_ext.source_paths()],
                extra_include_paths=[str(build_ext.CSRC_DIR)],
                extra_cflags=build_ext.CXX_FLAGS,
                extra_cuda_cflags=build_ext.NVCC_FLAGS,
                build_directory=str(directory),
                verbose=verbose)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Command-line options of ``python -m sparsebev_core.ops.build``."""
    parser.add_argument('--quiet', action='store_true', help='hide the compiler output')
    parser.add_argument('--print-dir', action='store_true',
                        help='only print the cache directory for the current sources and exit')


def main(args: argparse.Namespace) -> int:
    """Build the op into the cache, then check that the backend registers."""
    if args.print_dir:
        print(build_dir())
        return 0
    start = time.perf_counter()
    try:
        build(verbose=not args.quiet)
    except RuntimeError as error:
        print(f'error: {error}', file=sys.stderr)
        return 1
    print(f'built the CUDA sampling op in {time.perf_counter() - start:.0f} s: {build_dir()}')
    from . import available_backends
    backends = available_backends()
    print(f'available msmv_sampling backends: {", ".join(backends)}')
    return 0 if 'cuda' in backends else 1


if __name__ == '__main__':
    parser = argparse.ArgumentParser(prog='python -m sparsebev_core.ops.build',
                                     description=__doc__.splitlines()[0])
    add_arguments(parser)
    sys.exit(main(parser.parse_args()))
