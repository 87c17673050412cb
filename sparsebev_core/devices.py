"""Where the code runs: the device (``'auto'`` resolved here and nowhere else), torch CPU
threads, and the ``torchrun`` process group.

Every command, the ROS node and the demo take a device name from the user (``--device`` or the
``device`` parameter, default ``'auto'``) and pass it through :func:`resolve_device`; training
and evaluation join a ``torchrun`` job through :func:`init_distributed`.
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Iterator

from .errors import InputError

DEFAULT_DEVICE = 'auto'
DEVICE_HELP = "'auto' (CUDA when available, else CPU), 'cpu', 'cuda' or 'cuda:N' (default auto)"


class DeviceError(InputError):
    """A device name that does not exist here (e.g. 'cuda' without a CUDA device)."""


def cuda_available() -> bool:
    """Whether torch sees a CUDA device."""
    import torch
    return torch.cuda.is_available()


def resolve_device(name: str = DEFAULT_DEVICE, local_rank: int | None = None) -> str:
    """A concrete torch device string for ``name``.

    ``'auto'`` -> ``'cuda'`` when torch sees a CUDA device, else ``'cpu'``; a bare ``'cuda'``
    becomes ``'cuda:<local_rank>'`` when ``local_rank`` is given (one GPU per torchrun process).
    Raises :class:`DeviceError` for CUDA without a CUDA device, or a name torch does not know.
    """
    import torch
    if name == 'auto':
        name = 'cuda' if cuda_available() else 'cpu'
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError) as error:
        raise DeviceError(f"unknown device '{name}': {DEVICE_HELP}") from error
    if device.type == 'cuda':
        if not cuda_available():
            raise DeviceError(f"device '{name}' requested but torch sees no CUDA device; "
                              "use 'cpu' or 'auto'")
        if device.index is None and local_rank is not None:
            return f'cuda:{local_rank}'
    return name


def is_cuda(device: str) -> bool:
    """Whether a device string (resolved or 'auto') means a CUDA device here."""
    return device.startswith('cuda') or (device == 'auto' and cuda_available())


@contextlib.contextmanager
def cpu_threads(threads: int | None, device: str) -> Iterator[None]:
    """Run a block with ``threads`` torch intra-op threads when it runs on the CPU (None or
    0: leave torch's setting), then put the previous number back."""
    import torch
    previous = torch.get_num_threads()
    if threads and not is_cuda(device):
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


# ----------------------------------------------------------------------------- processes
@dataclass
class DistInfo:
    """This process's place in the job (world size 1 without torchrun)."""
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def dist_info_from_env() -> DistInfo:
    """RANK / WORLD_SIZE / LOCAL_RANK as torchrun sets them (a job of one without them)."""
    world_size = int(os.environ.get('WORLD_SIZE', '1'))
    if world_size <= 1:
        return DistInfo()
    rank = int(os.environ.get('RANK', '0'))
    return DistInfo(rank, world_size, int(os.environ.get('LOCAL_RANK', str(rank))))


def init_distributed(device: str = DEFAULT_DEVICE) -> DistInfo:
    """Join the torchrun job described by the environment (nccl for a CUDA device, gloo on
    the CPU); a plain process is a job of one and initialises nothing."""
    info = dist_info_from_env()
    if info.distributed:
        import torch.distributed as dist
        if not dist.is_initialized():
            dist.init_process_group(backend='nccl' if is_cuda(device) else 'gloo')
    return info


def finish_distributed(info: DistInfo) -> None:
    """Leave the process group :func:`init_distributed` joined (nothing for a job of one)."""
    if info.distributed:
        import torch.distributed as dist
        if dist.is_initialized():
            dist.destroy_process_group()
