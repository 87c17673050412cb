"""Checkpoint files written safely: through a temporary name (:func:`atomic_save`), never over
an existing file unless asked (:func:`refuse_existing`), leftovers of a killed save cleared
(:func:`remove_stale_temporaries`). Used by conversions, training state and the demo model.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

from .official import CheckpointError


def temporary_path(path: str | os.PathLike) -> Path:
    """The one temporary name ``atomic_save`` writes ``path`` under (``.NAME.tmp``)."""
    path = Path(path)
    return path.with_name(f'.{path.name}.tmp')


def atomic_save(obj: object, path: str | os.PathLike) -> Path:
    """``torch.save`` to ``path`` through :func:`temporary_path` + ``os.replace``.

    A failure (disk full) removes the temporary file and re-raises; ``path`` keeps its old
    content. A kill leaves at most the temporary file, which the next save overwrites."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_path(path)
    try:
        with open(tmp, 'wb') as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def remove_stale_temporaries(work_dir: str | os.PathLike) -> list[Path]:
    """Delete checkpoint temporaries a killed run left in ``work_dir`` (``.*.pth.tmp*``,
    including the pid-suffixed names of earlier versions); returns what was removed."""
    folder = Path(work_dir)
    stale = sorted(folder.glob('.*.pth.tmp*')) if folder.is_dir() else []
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def refuse_existing(out_path: str | Path, overwrite: bool) -> None:
    """``CheckpointError`` when ``out_path`` exists and ``overwrite`` is not set."""
    if Path(out_path).exists() and not overwrite:
        raise CheckpointError(f'{out_path} already exists; choose another name or pass --force '
                              '(overwrite=True) to replace it')
