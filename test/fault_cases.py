"""Bad inputs for the fault tests: image files whose header lies, and bag rewriting.

``png_claiming`` / ``jpeg_claiming`` build tiny files whose header declares a huge size (the
"decompression bomb" shape a corrupt or malicious camera stream can take). ``rewrite_bag``
copies a rosbag2 through a mutation of its deserialised messages, the way the fault probe
made its cases.
"""
from __future__ import annotations

import struct
import zlib
from pathlib import Path
from typing import Callable

import numpy as np


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack('>I', len(payload)) + kind + payload + struct.pack('>I', zlib.crc32(kind + payload))


def png_claiming(width: int, height: int, payload: bytes = b'\x00' * 32) -> bytes:
    """A valid-looking PNG (correct CRCs) whose IHDR declares ``width`` x ``height`` RGB."""
    ihdr = struct.pack('>IIBBBBB', width, height, 8, 2, 0, 0, 0)
    return (b'\x89PNG\r\n\x1a\n' + _png_chunk(b'IHDR', ihdr)
            + _png_chunk(b'IDAT', zlib.compress(payload)) + _png_chunk(b'IEND', b''))


def real_png(width: int = 16, height: int = 8, seed: int = 0) -> bytes:
    import cv2
    img = np.random.default_rng(seed).integers(0, 255, (height, width, 3), dtype=np.uint8)
    ok, buf = cv2.imencode('.png', img)
    assert ok
    return buf.tobytes()


def real_jpeg(width: int = 16, height: int = 16, seed: int = 0) -> bytes:
    import simplejpeg
    img = np.random.default_rng(seed).integers(0, 255, (height, width, 3), dtype=np.uint8)
    return simplejpeg.encode_jpeg(np.ascontiguousarray(img), quality=80, colorspace='RGB')


def jpeg_claiming(width: int, height: int) -> bytes:
    """A small real JPEG whose SOF header is patched to declare ``width`` x ``height``."""
    data = bytearray(real_jpeg())
    i = 2
    while i < len(data) - 9:
        assert data[i] == 0xFF
        marker, length = data[i + 1], int.from_bytes(data[i + 2:i + 4], 'big')
        if marker in (0xC0, 0xC1, 0xC2):
            data[i + 5:i + 7] = height.to_bytes(2, 'big')
            data[i + 7:i + 9] = width.to_bytes(2, 'big')
            return bytes(data)
        i += 2 + length
    raise AssertionError('no SOF marker in the encoded JPEG')


Item = list          # [topic, msgtype, log_ns, message]


def read_items(bag: str | Path, distro: str = 'humble') -> list[Item]:
    """Every message of a bag, deserialised, in log-time order."""
    from rosbags.highlevel import AnyReader
    from sparsebev_ros.messages import ros2_typestore
    store = ros2_typestore(distro)
    with AnyReader([Path(bag)], default_typestore=store) as reader:
        return [[c.topic, c.msgtype, t, reader.deserialize(raw, c.msgtype)]
                for c, t, raw in reader.messages()]


def write_items(bag: str | Path, items: list[Item], storage: str = 'sqlite3',
                distro: str = 'humble') -> str:
    """Write ``items`` (see :func:`read_items`) as a new bag; returns its path. A message
    given as ``bytes`` is written as it is (a corrupt CDR payload)."""
    from sparsebev_ros.bags.from_nuscenes import _qos, open_writer
    from sparsebev_ros.messages import ros2_typestore
    store = ros2_typestore(distro)
    writer = open_writer(bag, storage)
    conns = {}
    try:
        for topic, msgtype, log_ns, msg in items:
            if topic not in conns:
                qos = {'offered_qos_profiles': [_qos('transient_local', 1)]} if topic == '/tf_static' else {}
                conns[topic] = writer.add_connection(topic, msgtype, typestore=store, **qos)
            data = msg if isinstance(msg, bytes) else store.serialize_cdr(msg, msgtype)
            writer.write(conns[topic], int(log_ns), data)
    finally:
        writer.close()
    return str(bag)


def rewrite_bag(src: str | Path, dst: str | Path, mutate: Callable[[list[Item]], list[Item]],
                storage: str = 'sqlite3') -> str:
    """A copy of ``src`` at ``dst`` with ``mutate`` applied to its message list."""
    return write_items(dst, mutate(read_items(src)), storage)


def stamp_ns(msg) -> int:
    return int(msg.header.stamp.sec) * 10**9 + int(msg.header.stamp.nanosec)


def with_stamp(msg, ns: int):
    """``msg`` with its header stamp set to ``ns`` (rosbags dataclasses are replaced)."""
    import dataclasses as dc
    h = msg.header
    return dc.replace(msg, header=dc.replace(h, stamp=dc.replace(h.stamp, sec=ns // 10**9,
                                                                 nanosec=ns % 10**9)))
