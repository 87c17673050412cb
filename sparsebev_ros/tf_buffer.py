"""``TfBuffer``: a ROS-free transform buffer with the semantics of tf2 (docs/ros2.md 3e).

* Dynamic frames keep a time-sorted cache of ``cache_time`` seconds (10 s by default).
  Inserting prunes entries older than ``newest - cache_time`` and *rejects* data older than that
  (``TF_OLD_DATA``); an exact duplicate is ignored, the same stamp with another value is kept.
* A lookup at time 0 means "latest": for a chain, the latest time common to all its dynamic
  links. Otherwise: one entry -> only its exact stamp; exact hits on the newest/oldest entry;
  later than the newest -> extrapolation into the future; earlier than the oldest ->
  extrapolation into the past; in between: translation interpolated linearly, rotation by
  slerp (``(t - t0) / (t1 - t0)``); if the parent changed between the two, the older is used.
* Static frames (``/tf_static``) hold one value valid at every time; a newer one replaces it.
* ``lookup_transform(target, source, t)`` composes both branches through their common ancestor
  and raises :class:`LookupException`, :class:`ConnectivityException` or
  :class:`ExtrapolationException` as tf2 does.

Times are integer nanoseconds (no float rounding between a stamp and its lookup). Returned
transforms are 4x4 ``T_target_source`` (maps source coordinates into target coordinates).
"""
from __future__ import annotations

import bisect
import math
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

from sparsebev_core.errors import InputError
from sparsebev_core.geometry import invert_transform, make_transform, quat_to_rot

from .codecs import QUATERNION_TOLERANCE, seconds_to_ns, stamp_to_ns

DEFAULT_CACHE_TIME = 10.0


class TransformException(Exception):
    """Base of the tf2 lookup errors."""


class LookupException(TransformException):
    """A frame does not exist in the buffer."""


class ConnectivityException(TransformException):
    """The two frames are not connected by the tree."""


class ExtrapolationException(TransformException):
    """The requested time lies outside the buffered data of a link."""


class InvalidArgumentException(TransformException, InputError):
    """A transform that cannot be stored (NaN, bad quaternion, empty or equal frame ids).

    Like tf2's ``setTransform``, a caller feeding a stream (replay, the node's listener) logs
    it, counts it and carries on: one bad message never ends a run. ``reason`` is a short key
    ('nan_or_inf', 'quaternion_not_unit', 'bad_frame_ids', 'not_numbers') for summaries.
    """

    def __init__(self, message: str, reason: str = 'invalid'):
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class _Entry:
    stamp: int                 # ns
    parent: str
    translation: np.ndarray    # (3,)
    rotation: np.ndarray       # (4,) w, x, y, z, unit

    def same_value(self, other: '_Entry') -> bool:
        return (self.parent == other.parent and np.array_equal(self.translation, other.translation)
                and np.array_equal(self.rotation, other.rotation))

    def matrix(self) -> np.ndarray:
        return make_transform(quat_to_rot(self.rotation), self.translation)


def _fmt(ns: int) -> str:
    return f'{ns / 1e9:.9f}'


def slerp(q0: np.ndarray, q1: np.ndarray, ratio: float) -> np.ndarray:
    """Spherical linear interpolation of unit (w, x, y, z) quaternions along the shorter arc."""
    q0, q1 = np.asarray(q0, np.float64), np.asarray(q1, np.float64)
    dot = float(np.dot(q0, q1))
    if dot < 0.0:
        q1, dot = -q1, -dot
    if dot > 0.9995:                                   # nearly equal: lerp is exact enough
        q = q0 + ratio * (q1 - q0)
        return q / np.linalg.norm(q)
    theta = math.acos(min(1.0, dot))
    s = math.sin(theta)
    return (math.sin((1.0 - ratio) * theta) * q0 + math.sin(ratio * theta) * q1) / s


class _TimeCache:
    """Entries of one child frame, ascending by stamp (tf2 ``TimeCache``)."""

    def __init__(self, max_storage_ns: int):
        self.max_storage_ns = max_storage_ns
        self.entries: list[_Entry] = []
        self.stamps: list[int] = []

    def insert(self, entry: _Entry) -> bool:
        if self.entries and self.stamps[-1] > entry.stamp + self.max_storage_ns:
            return False                                       # TF_OLD_DATA
        i = bisect.bisect_right(self.stamps, entry.stamp)
        j = bisect.bisect_left(self.stamps, entry.stamp)
        if any(self.entries[k].same_value(entry) for k in range(j, i)):
            return True                                        # exact duplicate ignored
        self.entries.insert(i, entry)
        self.stamps.insert(i, entry.stamp)
        newest = self.stamps[-1]
        drop = 0
        while drop < len(self.stamps) and self.stamps[drop] + self.max_storage_ns < newest:
            drop += 1
        if drop:
            del self.entries[:drop], self.stamps[:drop]
        return True

    def latest(self) -> tuple[int, str]:
        e = self.entries[-1]
        return e.stamp, e.parent

    def get(self, t: int) -> tuple[str, np.ndarray]:
        """(parent, T_parent_child) at time t; raises ExtrapolationException (message w/o frames)."""
        if not self.entries:
            raise ExtrapolationException('Lookup would require extrapolation: the cache is empty')
        if t == 0:
            e = self.entries[-1]
            return e.parent, e.matrix()
        if len(self.entries) == 1:
            e = self.entries[0]
            if e.stamp == t:
                return e.parent, e.matrix()
            raise ExtrapolationException(f'Lookup would require extrapolation at time {_fmt(t)}, '
                                         f'but only time {_fmt(e.stamp)} is in the buffer')
        oldest, newest = self.stamps[0], self.stamps[-1]
        if t == newest:
            e = self.entries[-1]
            return e.parent, e.matrix()
        if t == oldest:
            e = self.entries[0]
            return e.parent, e.matrix()
        if t > newest:
            raise ExtrapolationException(
                f'Lookup would require extrapolation into the future.  Requested time {_fmt(t)} '
                f'but the latest data is at time {_fmt(newest)}')
        if t < oldest:
            raise ExtrapolationException(
                f'Lookup would require extrapolation into the past.  Requested time {_fmt(t)} '
                f'but the earliest data is at time {_fmt(oldest)}')
        i = bisect.bisect_right(self.stamps, t) - 1          # last entry with stamp <= t
        older, newer = self.entries[i], self.entries[i + 1]
        if older.parent != newer.parent or older.stamp == t:
            return older.parent, older.matrix()
        ratio = (t - older.stamp) / (newer.stamp - older.stamp)
        translation = older.translation + ratio * (newer.translation - older.translation)
        rotation = slerp(older.rotation, newer.rotation, ratio)
        return older.parent, make_transform(quat_to_rot(rotation), translation)


class _StaticCache:
    """One value valid at every time (tf2 ``StaticCache``)."""

    def __init__(self) -> None:
        self.entry: _Entry | None = None

    def insert(self, entry: _Entry) -> bool:
        self.entry = entry
        return True

    def latest(self) -> tuple[int, str]:
        assert self.entry is not None
        return 0, self.entry.parent

    def get(self, t: int) -> tuple[str, np.ndarray]:
        assert self.entry is not None
        return self.entry.parent, self.entry.matrix()


class TfBuffer:
    """Static and dynamic transforms with tf2 lookup semantics (times in integer ns)."""

    def __init__(self, cache_time: float = DEFAULT_CACHE_TIME):
        self.cache_time_ns = seconds_to_ns(cache_time)
        self._caches: dict[str, _TimeCache | _StaticCache] = {}
        self._frames: set[str] = set()
        self._lock = threading.RLock()
        self.rejected_old = 0
        self.rejected_invalid = 0

    # ---------------------------------------------------------------- insertion
    def set_transform(self, parent: str, child: str, stamp_ns: int, translation: Any,
                      rotation_xyzw: Any, static: bool = False) -> bool:
        """Store ``T_parent_child`` at ``stamp_ns``; False when rejected as TF_OLD_DATA.

        Raises InvalidArgumentException for values tf2 refuses (equal or empty frame ids,
        NaN, a quaternion whose norm is off by more than 1e-2).
        """
        parent, child = parent.lstrip('/'), child.lstrip('/')
        if not child or not parent:
            raise InvalidArgumentException(f"empty frame id (parent '{parent}', child '{child}')",
                                           'bad_frame_ids')
        if parent == child:
            raise InvalidArgumentException(f"frame_id and child_frame_id are both '{child}'",
                                           'bad_frame_ids')
        try:
            t = np.asarray(translation, np.float64).reshape(3)
            x, y, z, w = (float(v) for v in rotation_xyzw)
        except (TypeError, ValueError) as exc:
            raise InvalidArgumentException(f'transform {parent} <- {child} is not 3 + 4 numbers: '
                                           f'{exc}', 'not_numbers') from None
        q = np.array([w, x, y, z])
        if not (np.all(np.isfinite(t)) and np.all(np.isfinite(q))):
            raise InvalidArgumentException(f'NaN or inf in the transform {parent} <- {child}',
                                           'nan_or_inf')
        norm2 = float(np.linalg.norm(q)) ** 2             # no overflow for huge components
        if abs(norm2 - 1.0) > QUATERNION_TOLERANCE:              # tf2's, as the codecs'
            raise InvalidArgumentException(f'quaternion of {parent} <- {child} is not normalised '
                                           f'(norm {math.sqrt(norm2):.6g})', 'quaternion_not_unit')
        q = q / np.linalg.norm(q)
        entry = _Entry(int(stamp_ns), parent, t, q)
        with self._lock:
            cache = self._caches.get(child)
            if cache is None or isinstance(cache, _StaticCache) != static:
                cache = _StaticCache() if static else _TimeCache(self.cache_time_ns)
                self._caches[child] = cache
            ok = cache.insert(entry)
            if ok:
                self._frames.update((parent, child))
            else:
                self.rejected_old += 1
            return ok

    def set_transform_msg(self, msg: Any, static: bool = False) -> bool:
        """Store a ``geometry_msgs/TransformStamped`` (rclpy or rosbags)."""
        tr, rot = msg.transform.translation, msg.transform.rotation
        return self.set_transform(str(msg.header.frame_id), str(msg.child_frame_id),
                                  stamp_to_ns(msg.header.stamp),
                                  (tr.x, tr.y, tr.z), (rot.x, rot.y, rot.z, rot.w), static)

    def set_tf_message(self, msg: Any, static: bool = False) -> int:
        """Store every valid transform of a ``tf2_msgs/TFMessage``; returns how many were
        accepted. Invalid ones are rejected one by one (counted in ``rejected_invalid``), as
        tf2 does, so one bad entry does not cost the others."""
        accepted = 0
        for t in msg.transforms:
            try:
                accepted += bool(self.set_transform_msg(t, static))
            except InvalidArgumentException:
                self.rejected_invalid += 1
        return accepted

    def clear(self) -> None:
        """Forget every dynamic transform (static ones stay), as tf2 does on a time jump back."""
        with self._lock:
            for name in [n for n, c in self._caches.items() if isinstance(c, _TimeCache)]:
                del self._caches[name]
            self._frames = set(self._caches)
            for c in self._caches.values():
                assert isinstance(c, _StaticCache) and c.entry is not None
                self._frames.add(c.entry.parent)

    # ---------------------------------------------------------------- lookup
    def _check_frame(self, frame: str, role: str) -> str:
        frame = frame.lstrip('/')
        if frame not in self._frames:
            raise LookupException(f'"{frame}" passed to lookupTransform argument {role} does not '
                                  'exist. ')
        return frame

    def _walk_latest(self, frame: str) -> list[tuple[str, int]]:
        """[(frame, newest stamp of its link to the parent (0: static or root))] up to the root."""
        path: list[tuple[str, int]] = []
        seen = set()
        while frame not in seen:
            seen.add(frame)
            cache = self._caches.get(frame)
            if cache is None:
                path.append((frame, 0))
                break
            stamp, parent = cache.latest()
            path.append((frame, stamp))
            frame = parent
        return path

    def latest_common_time(self, target: str, source: str) -> int:
        """Newest time at which every dynamic link between the two frames has data (0: static)."""
        with self._lock:
            target, source = self._check_frame(target, 'target_frame'), self._check_frame(source, 'source_frame')
            if target == source:
                cache = self._caches.get(source)
                return cache.latest()[0] if cache is not None else 0
            src = self._walk_latest(source)
            src_index = {f: i for i, (f, _) in enumerate(src)}
            times: list[int] = []
            for f, stamp in self._walk_latest(target):
                if f in src_index:
                    times.extend(s for _, s in src[:src_index[f]])
                    break
                times.append(stamp)
            else:
                raise ConnectivityException(
                    f'Could not find a connection between \'{target}\' and \'{source}\' because '
                    'they are not part of the same tree.Tf has two or more unconnected trees.')
            times = [t for t in times if t != 0]
            return min(times) if times else 0

    def _walk(self, frame: str, t: int) -> tuple[list[tuple[str, np.ndarray]], str | None]:
        """[(frame, T_root_frame)] from ``frame`` up; the extrapolation error that stopped it."""
        chain = [(frame, np.eye(4))]
        T = np.eye(4)
        seen = {frame}
        while True:
            cache = self._caches.get(frame)
            if cache is None:
                return chain, None
            try:
                parent, T_parent_frame = cache.get(t)
            except ExtrapolationException as exc:
                return chain, str(exc)
            if parent in seen:
                return chain, None
            T = T_parent_frame @ T        # accumulates T_parent_source along the walk
            chain.append((parent, T))
            seen.add(parent)
            frame = parent

    def lookup_transform(self, target: str, source: str, time_ns: int = 0) -> np.ndarray:
        """4x4 ``T_target_source`` at ``time_ns`` (0 = latest common time)."""
        with self._lock:
            target = self._check_frame(target, 'target_frame')
            source = self._check_frame(source, 'source_frame')
            if target == source:
                return np.eye(4)
            t = int(time_ns)
            if t == 0:
                t = self.latest_common_time(target, source)
            src_chain, src_error = self._walk(source, t)      # (frame, T_frame_source)
            tgt_chain, tgt_error = self._walk(target, t)      # (frame, T_frame_target)
            src_index = {f: i for i, (f, _) in enumerate(src_chain)}
            for f, T_f_target in tgt_chain:
                if f in src_index:
                    T_f_source = src_chain[src_index[f]][1]
                    return invert_transform(T_f_target) @ T_f_source
            error = src_error or tgt_error
            if error:
                raise ExtrapolationException(f'{error}, when looking up transform from frame '
                                             f'[{source}] to frame [{target}]')
            raise ConnectivityException(
                f'Could not find a connection between \'{target}\' and \'{source}\' because they '
                'are not part of the same tree.Tf has two or more unconnected trees.')
