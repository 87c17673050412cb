"""Reading and writing rosbag2 folders so that a bad file or a failed run leaves nothing behind.

* :func:`atomic_output_dir`: a bag is written inside a temporary sibling folder
  (``.<name>.partial/<name>``, so the storage file keeps its name) and moved to its real
  name only when complete; a run that fails
  removes what it wrote and says so in the error, and a leftover of a killed run (same
  predictable name) is removed by the next run. A half-written output never blocks a rerun.
* :func:`open_bag_reader`: ``rosbags.highlevel.AnyReader`` whose failures (a missing, empty,
  corrupt or truncated bag, a bad ``metadata.yaml``) become one :class:`BagReadError` naming
  the file; :func:`read_errors` does the same while messages are read.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
from pathlib import Path
from typing import Any, Iterator

from sparsebev_core.errors import InputError


class BagReadError(InputError):
    """An input bag cannot be read (missing, empty, corrupt, truncated); names the file."""


class BagWriteError(InputError):
    """An output bag cannot be written (exists, read-only target, disk full); names the path."""


def partial_path(path: str | Path) -> Path:
    """The temporary folder an output bag is written in until it is complete."""
    path = Path(path)
    return path.with_name(f'.{path.name}.partial')


@contextlib.contextmanager
def atomic_output_dir(path: str | Path) -> Iterator[Path]:
    """Yield the temporary folder name to write the bag ``path`` under; rename it on success.

    Raises:
        BagWriteError: ``path`` exists, its parent is not a folder or cannot be created, or
            the body failed with an ``OSError`` (disk full, read-only): the partial output is
            removed first, and the message says so.
    """
    path = Path(path)
    if path.exists():
        raise BagWriteError(f'output bag {path} already exists; remove it or choose another name')
    if path.parent.exists() and not path.parent.is_dir():
        raise BagWriteError(f'cannot write {path}: {path.parent} is a file, not a folder')
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BagWriteError(f'cannot create the folder of {path}: {exc.strerror or exc}') from None
    tmp = partial_path(path)
    if tmp.exists():                                  # left by a killed run: ours to replace
        shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir()
        yield tmp / path.name
        os.replace(tmp / path.name, path)
        tmp.rmdir()
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise BagWriteError(f'writing {path} failed ({exc.strerror or exc}); the partial output '
                            'was removed, nothing was written') from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


_READ_ERRORS: tuple[type[BaseException], ...] = (OSError, EOFError, ValueError, KeyError,
                                                 IndexError, sqlite3.Error)


def _rosbags_errors() -> tuple[type[BaseException], ...]:
    errors: list[type[BaseException]] = []
    with contextlib.suppress(ImportError):
        from rosbags.highlevel import AnyReaderError
        errors.append(AnyReaderError)
    with contextlib.suppress(ImportError):
        from rosbags.rosbag2 import ReaderError
        errors.append(ReaderError)
    with contextlib.suppress(ImportError):
        from rosbags.serde import SerdeError
        errors.append(SerdeError)
    return tuple(errors)


def read_error_types() -> tuple[type[BaseException], ...]:
    """The exception types a corrupt bag makes rosbags (and sqlite3, mcap parsing) raise."""
    return _READ_ERRORS + _rosbags_errors()


@contextlib.contextmanager
def read_errors(path: str | Path, doing: str = 'reading') -> Iterator[None]:
    """Turn a reader failure inside the block into :class:`BagReadError` naming ``path``."""
    try:
        yield
    except BagReadError:
        raise
    except read_error_types() as exc:
        text = str(exc).strip() or type(exc).__name__
        raise BagReadError(f'cannot read bag {path} ({doing}): {text}; is it a complete rosbag2 '
                           'folder (metadata.yaml + .db3 or .mcap)?') from None


def iter_messages(reader: Any, path: str | Path) -> Iterator[tuple[Any, int, bytes]]:
    """``reader.messages()`` whose read failures become :class:`BagReadError` (only the
    reading: errors of the caller's loop body pass through unchanged)."""
    it = iter(reader.messages())
    while True:
        with read_errors(path, 'reading messages'):
            try:
                item = next(it)
            except StopIteration:
                return
        yield item


@contextlib.contextmanager
def open_bag_reader(path: str | Path, typestore: Any) -> Iterator[Any]:
    """Context manager: an opened ``AnyReader`` over the bag folder ``path``, closed after.

    Raises:
        BagReadError: missing path, empty folder, bad metadata.yaml, corrupt or truncated file.
    """
    from rosbags.highlevel import AnyReader
    path = Path(path)
    if not path.exists():
        raise BagReadError(f'input bag {path} does not exist')
    if path.is_dir() and not any(path.iterdir()):
        raise BagReadError(f'input bag {path} is an empty folder (no metadata.yaml, no bag file)')
    reader = AnyReader([path], default_typestore=typestore)
    with read_errors(path, 'opening'):
        reader.open()
    try:
        yield reader
    finally:
        with contextlib.suppress(Exception):
            reader.close()
