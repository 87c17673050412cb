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


# --------------------------------------------------------------------------------------------
# truncated MCAP: the intact part
# --------------------------------------------------------------------------------------------
_MCAP_MAGIC = b'\x89MCAP0\r\n'
_OP_SCHEMA, _OP_CHANNEL, _OP_MESSAGE, _OP_CHUNK = 0x03, 0x04, 0x05, 0x06


class _Cursor:
    """Little-endian MCAP field reader over one record; IndexError when the data ends."""

    def __init__(self, data: bytes):
        self.data, self.pos = data, 0

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise IndexError('truncated record')
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def u16(self) -> int:
        return int.from_bytes(self.take(2), 'little')

    def u32(self) -> int:
        return int.from_bytes(self.take(4), 'little')

    def u64(self) -> int:
        return int.from_bytes(self.take(8), 'little')

    def text(self) -> str:
        return self.take(self.u32()).decode('utf-8', 'replace')


def _mcap_records(data: bytes) -> Iterator[tuple[int, bytes]]:
    """(opcode, content) of every complete record, descending into uncompressed chunks
    (also a chunk cut short by the truncation); stops at the first incomplete record."""
    pos = 0
    while pos + 9 <= len(data):
        op, length = data[pos], int.from_bytes(data[pos + 1:pos + 9], 'little')
        body = data[pos + 9:pos + 9 + length]
        pos += 9 + length
        if op == _OP_CHUNK:
            c = _Cursor(body)
            try:
                c.take(28)                                    # times, size, crc
                compression = c.text()
                inner_length = c.u64()
            except IndexError:
                return
            if compression:                                   # compressed: only whole chunks
                if len(body) < c.pos + inner_length:
                    return
                continue                                      # (not decoded here)
            yield from _mcap_records(body[c.pos:c.pos + inner_length])
            if len(body) < length:
                return
        elif len(body) < length:
            return
        else:
            yield op, body


def salvage_mcap(path: str | Path, out_bag: str | Path, typestore: Any) -> int:
    """Copy every intact message of the (truncated) MCAP bag folder ``path`` into a new
    sqlite3 bag ``out_bag``; returns how many messages were saved. Channels whose type the
    typestore does not know are left out. Raises BagReadError when nothing is intact."""
    from rosbags.rosbag2 import StoragePlugin, Writer
    path = Path(path)
    files = sorted(path.glob('*.mcap')) if path.is_dir() else [path]
    schemas: dict[int, str] = {}
    channels: dict[int, tuple[str, str]] = {}
    conns: dict[int, Any] = {}
    saved = 0
    writer = Writer(Path(out_bag), version=9, storage_plugin=StoragePlugin.SQLITE3)
    writer.open()
    try:
        for f in files:
            data = f.read_bytes()
            if not data.startswith(_MCAP_MAGIC):
                continue
            for op, body in _mcap_records(data[len(_MCAP_MAGIC):]):
                c = _Cursor(body)
                try:
                    if op == _OP_SCHEMA:
                        sid = c.u16()
                        schemas[sid] = c.text()
                    elif op == _OP_CHANNEL:
                        cid, sid, topic = c.u16(), c.u16(), c.text()
                        channels[cid] = (topic, schemas.get(sid, ''))
                    elif op == _OP_MESSAGE:
                        cid, _, log_time = c.u16(), c.u32(), c.u64()        # channel, sequence, log time
                        c.u64()
                        if cid not in conns and cid in channels and channels[cid][1] in typestore.fielddefs:
                            topic, msgtype = channels[cid]
                            conns[cid] = writer.add_connection(topic, msgtype, typestore=typestore)
                        if cid in conns:
                            writer.write(conns[cid], log_time, body[c.pos:])
                            saved += 1
                except IndexError:
                    break
    finally:
        writer.close()
    if not saved:
        raise BagReadError(f'bag {path} has no intact messages to replay')
    return saved
