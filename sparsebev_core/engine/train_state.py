"""Training checkpoints that survive being killed, and exact resumption.

A checkpoint holds everything that decides the rest of a run: model, optimiser, schedule and
loss-scaler states, the position (epoch, iteration within the epoch, global iteration), and
the random states of python, numpy and torch (CPU and CUDA), all as tensors and plain Python
values, so the file also loads with ``torch.load(weights_only=True)`` (``load_checkpoint``).
Files are written with ``checkpoints.files.atomic_save`` (a predictable temporary name,
``.latest.pth.tmp``, moved into place with ``os.replace``): a kill during the write leaves the
previous checkpoint intact, the next save replaces the leftover, and
``checkpoints.files.remove_stale_temporaries`` clears leftovers at start.
``SigtermFlag`` turns SIGTERM into a request to stop at the next iteration boundary, where the
loop writes a checkpoint and exits.
"""
from __future__ import annotations

import os
import random
import signal
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from ..checkpoints.files import atomic_save
from ..checkpoints.official import check_archive
from ..errors import InputError

LATEST = 'latest.pth'


class TrainingCheckpointError(InputError):
    """A file given to resume from is missing, not a training checkpoint, or from another run."""


@dataclass
class TrainPosition:
    """Where a run is: ``epoch`` (0-based) and ``iteration_in_epoch`` batches of it done, and
    ``global_iteration`` batches done in total."""
    epoch: int = 0
    iteration_in_epoch: int = 0
    global_iteration: int = 0


def rng_state() -> dict:
    """Random states of python, numpy and torch (CPU and every CUDA device), as tensors and
    plain Python values (the numpy key array as an int64 tensor)."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {'python': random.getstate(),
             'numpy': (str(name), torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss),
                       float(cached)),
             'torch': torch.get_rng_state()}
    if torch.cuda.is_available():
        state['cuda'] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore what ``rng_state`` returned."""
    random.setstate(state['python'])
    name, keys, pos, has_gauss, cached = state['numpy']
    if isinstance(keys, torch.Tensor):                 # files before: a uint32 numpy array
        keys = keys.numpy().astype(np.uint32)
    np.random.set_state((name, keys, pos, has_gauss, cached))
    torch.set_rng_state(state['torch'])
    if 'cuda' in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state['cuda'])


def save_training_state(work_dir: str | os.PathLike, model: torch.nn.Module,
                        optimizer: torch.optim.Optimizer, schedule, scaler,
                        position: TrainPosition, meta: dict | None = None,
                        name: str = LATEST, rng_states: list[dict] | None = None,
                        stream_states: list[dict] | None = None) -> Path:
    """Write ``work_dir/name`` (default ``latest.pth``) atomically and return its path.

    ``model`` is the bare model (not the DDP wrapper), so the ``state_dict`` keys are the
    official ones and the file loads with ``checkpoint.load_checkpoint``. ``rng_states``:
    one entry per process in rank order (default: this process's only); ``stream_states``:
    streaming training's carried recurrent state of every process, in rank order
    (``stream_state.SlotStates.state_dict``; None for the other presets).
    """
    state = {
        'state_dict': model.state_dict(),
        'optimizer': optimizer.state_dict(),
        'schedule': schedule.state_dict(),
        'scaler': scaler.state_dict(),
        'position': asdict(position),
        'rng': rng_states if rng_states is not None else [rng_state()],
        'meta': dict(meta or {}),
    }
    if stream_states is not None:
        state['stream'] = stream_states
    return atomic_save(state, Path(work_dir) / name)


def load_training_state(path: str | os.PathLike, model: torch.nn.Module,
                        optimizer: torch.optim.Optimizer, schedule, scaler,
                        restore_rng: bool = True, rank: int = 0,
                        stream_slots=None) -> tuple[TrainPosition, dict]:
    """Restore everything ``save_training_state`` wrote (the RNG states of process ``rank``,
    and its streaming state into ``stream_slots`` when given); returns (position, meta)."""
    path = Path(path)
    if not path.is_file():
        raise TrainingCheckpointError(f'no checkpoint to resume from at {path}: check --resume '
                                      'and --work-dir, or leave --resume out to start afresh')
    check_archive(path)                       # foreign or damaged files named, not unpickled
    state = torch.load(path, map_location='cpu', weights_only=False)
    missing = {'state_dict', 'optimizer', 'schedule', 'scaler', 'position', 'rng'} - set(state)
    if missing:
        raise TrainingCheckpointError(
            f'{path} is not a training checkpoint (missing {sorted(missing)}); to start from '
            'model weights only, use --pretrained or load_checkpoint')
    model.load_state_dict(state['state_dict'])
    optimizer.load_state_dict(state['optimizer'])
    schedule.load_state_dict(state['schedule'])
    scaler.load_state_dict(state['scaler'])
    if restore_rng:
        states = state['rng']
        if rank >= len(states):
            raise TrainingCheckpointError(f'{path} holds RNG states of {len(states)} processes; resuming '
                             f'rank {rank} needs the same number of processes as the saved run')
        set_rng_state(states[rank])
    if stream_slots is not None:
        streams = state.get('stream')
        if streams is None or rank >= len(streams):
            raise TrainingCheckpointError(
                f'{path} holds no streaming state for process {rank}: it was not written by a '
                'streaming (recurrent preset) run with as many processes')
        stream_slots.load_state_dict(streams[rank])
    return TrainPosition(**state['position']), state.get('meta', {})


class SigtermFlag:
    """Context manager: while active, SIGTERM sets ``.requested`` instead of killing the process.

    The training loop polls ``requested`` after each iteration, saves a checkpoint and stops.
    Only installed in the main thread (signal handlers cannot be set elsewhere).
    """

    def __init__(self) -> None:
        self.requested = False
        self._previous = None

    def _handle(self, signum, frame) -> None:
        self.requested = True

    def __enter__(self) -> 'SigtermFlag':
        try:
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        except ValueError:          # not the main thread
            self._previous = None
        return self

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
