"""``AnchorSynchronizer``: one camera set per anchor image, tolerant of a missing camera.

The nuScenes rig (and most car rigs) fire the cameras in a fixed cycle: every camera once per
period, each at its own phase relative to the others. An all-cameras approximate-time
synchroniser emits nothing when one camera is late or dead, and with a large ``slop`` it can
pair images from two different cycles. This synchroniser is keyed on one *anchor* camera and
has these exact semantics (stamps are integer nanoseconds, ``now`` is whatever clock the caller
uses: the bag's log time in replay, a steady clock in the node):

1. An image with an unset stamp (<= 0) is dropped and counted as ``zero_stamp``. Every
   camera keeps its recent images in a dict ``{stamp: msg}`` (a repeated stamp overwrites; a stamp already emitted is dropped and counted as ``duplicate``). An image older
   than that camera's newest stamp by more than ``jump_back`` seconds is a jump back in time
   (a bag loop): every queue and pending set is cleared, counted as ``time_backwards``, and the
   image starts the new run.
2. Each anchor image opens a *pending set* at its stamp ``t_a``, with a deadline
   ``now + max_wait``.
3. An image *belongs* to anchor ``t_a`` when ``|s - t_a| <= window`` and it is strictly nearer
   to ``t_a`` than to the newest emitted anchor. For a pending set, camera ``c``'s candidate is
   its queued image nearest to ``t_a`` among those that belong to it (ties go to the older
   image). Camera ``c`` is *settled* as soon as
   it has a candidate, or an image with ``s > t_a + window`` (nothing usable can come: images
   of one camera arrive in stamp order). With ``window`` below half the camera period a camera
   has at most one image within the window, so the first candidate is the nearest one.
4. A set is emitted when every camera is settled, or when ``now`` reaches its deadline; then it
   takes every camera's candidate. While the chosen stamps span more than ``window``, the camera
   furthest from ``t_a`` is dropped (reason ``out_of_window``): an emitted set never spans more
   than ``window`` (that image is spent: it is removed too). A camera without a candidate is
   missing, reason ``late`` if it had not settled at the deadline, else ``no_image``.
5. Sets are emitted in anchor-stamp order: a set that is complete waits for an older pending
   set to be emitted first. Images used by an emitted set are removed, and images older than
   ``t_a - window`` of the newest emitted set are pruned. An image that arrives with a stamp
   up to ``t_a + window`` of the newest emitted set, and that belongs to no pending set, came
   too late: it is dropped and counted as ``late_after_emit`` (an anchor image newer than
   the newest emitted anchor always opens its own set).

The window must also stay below the camera period minus the rig's own spread (0.083 - 0.043 s
for nuScenes), so that a camera's image of the next cycle is never taken as late.

With ``window`` below half the camera period, the nearest image of a camera within the window
always belongs to the anchor's cycle, and the spread rule drops any image from another cycle
that a missing camera would otherwise let in, so cycles are never mixed. The default 0.06 s fits
the nuScenes rig: 12 Hz, the six cameras within about 43 ms of each other, plus a few ms of
stamp jitter.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Sequence

from .codecs import seconds_to_ns
# why a camera is missing from an emitted set, what was dropped (``counts``): stable keys
from .reasons import (DUPLICATE, LATE, LATE_AFTER_EMIT, NO_IMAGE, OUT_OF_WINDOW, QUEUE_OVERFLOW,
                      TIME_BACKWARDS, ZERO_STAMP)


@dataclass
class CameraSet:
    """One emitted set: a message (or ``None``) per camera, in camera order.

    Attributes:
        anchor_stamp_ns: the anchor image's stamp.
        messages: per camera, the chosen message or ``None`` when missing.
        stamps_ns: per camera, the chosen stamp or ``None``.
        missing: camera index -> reason (``late``, ``no_image``, ``out_of_window``).
    """
    anchor_stamp_ns: int
    messages: list[Any]
    stamps_ns: list[int | None]
    missing: dict[int, str] = field(default_factory=dict)

    @property
    def spread_ns(self) -> int:
        """max - min of the present cameras' stamps (0 when none is present)."""
        present = [s for s in self.stamps_ns if s is not None]
        return max(present) - min(present) if present else 0


@dataclass
class _Pending:
    anchor_stamp_ns: int
    deadline_ns: int


class AnchorSynchronizer:
    """Group the images of ``num_cameras`` cameras around each image of the anchor camera.

    Args:
        num_cameras: cameras in the rig (input indices ``0 .. num_cameras - 1``).
        anchor: index of the anchor camera.
        window: largest ``|stamp - anchor stamp|`` and largest spread of a set (s).
        max_wait: how long a set waits for late cameras after its anchor arrived (s, caller's
            clock).
        queue_size: images kept per camera (the oldest stamps go first).
        jump_back: an image this much older than its camera's newest one is a bag loop (s).
    """

    def __init__(self, num_cameras: int, anchor: int = 0, window: float = 0.06,
                 max_wait: float = 0.1, queue_size: int = 10, jump_back: float = 1.0) -> None:
        if num_cameras < 1 or not 0 <= anchor < num_cameras:
            raise ValueError(f'need num_cameras >= 1 and 0 <= anchor < num_cameras, got '
                             f'{num_cameras}, {anchor}')
        if window <= 0 or max_wait < 0 or queue_size < 1 or jump_back <= 0:
            raise ValueError(f'window and jump_back must be > 0, max_wait >= 0 and queue_size '
                             f'>= 1 (got {window}, {jump_back}, {max_wait}, {queue_size})')
        self.num_cameras = num_cameras
        self.anchor = anchor
        self.window_ns = seconds_to_ns(window)
        self.max_wait_ns = seconds_to_ns(max_wait)
        self.queue_size = int(queue_size)
        self.jump_back_ns = seconds_to_ns(jump_back)
        self.counts: Counter = Counter()
        self.clear()

    def clear(self) -> None:
        """Forget every queued image and pending set."""
        self.queues: list[dict[int, Any]] = [{} for _ in range(self.num_cameras)]
        self.newest_ns: list[int | None] = [None] * self.num_cameras
        self.pending: list[_Pending] = []
        self.emitted_anchor_ns: int | None = None
        self._emitted: list[set[int]] = [set() for _ in range(self.num_cameras)]

    # ------------------------------------------------------------------ input
    def add(self, msg: Any, camera: int, stamp_ns: int, now_ns: int) -> list[CameraSet]:
        """Feed one image; returns the sets that became ready (oldest anchor first)."""
        stamp_ns, now_ns = int(stamp_ns), int(now_ns)
        if stamp_ns <= 0:               # unset: it belongs nowhere (and is no jump back in time)
            self.counts[ZERO_STAMP] += 1
            return self.poll(now_ns)
        newest = self.newest_ns[camera]
        if newest is not None and newest - stamp_ns > self.jump_back_ns:
            self.counts[TIME_BACKWARDS] += 1
            self.clear()
        if stamp_ns in self._emitted[camera]:
            self.counts[DUPLICATE] += 1
            return self.poll(now_ns)
        new_anchor = camera == self.anchor and (self.emitted_anchor_ns is None or
                                                stamp_ns > self.emitted_anchor_ns)
        if self.emitted_anchor_ns is not None and not new_anchor and \
                stamp_ns <= self.emitted_anchor_ns + self.window_ns and \
                not self._wanted(stamp_ns):
            self.counts[LATE_AFTER_EMIT] += 1
            return self.poll(now_ns)
        queue = self.queues[camera]
        queue[stamp_ns] = msg
        while len(queue) > self.queue_size:
            del queue[min(queue)]
            self.counts[QUEUE_OVERFLOW] += 1
        self.newest_ns[camera] = stamp_ns if newest is None else max(newest, stamp_ns)
        if camera == self.anchor and all(p.anchor_stamp_ns != stamp_ns for p in self.pending):
            self.pending.append(_Pending(stamp_ns, now_ns + self.max_wait_ns))
            self.pending.sort(key=lambda p: p.anchor_stamp_ns)
        return self.poll(now_ns)

    def poll(self, now_ns: int) -> list[CameraSet]:
        """Emit the sets that are complete or past their deadline (call it on a timer too)."""
        out: list[CameraSet] = []
        while self.pending:
            head = self.pending[0]
            settled = [self._settled(c, head.anchor_stamp_ns) for c in range(self.num_cameras)]
            if not all(settled) and now_ns < head.deadline_ns:
                break
            self.pending.pop(0)
            out.append(self._emit(head.anchor_stamp_ns, settled))
        return out

    def flush(self) -> list[CameraSet]:
        """Emit every pending set now, whatever arrived (the end of a bag)."""
        out: list[CameraSet] = []
        while self.pending:
            head = self.pending.pop(0)
            settled = [self._settled(c, head.anchor_stamp_ns) for c in range(self.num_cameras)]
            out.append(self._emit(head.anchor_stamp_ns, settled))
        return out

    def queued(self) -> list[list[int]]:
        """Queued stamps per camera (sorted), for diagnostics."""
        return [sorted(q) for q in self.queues]

    # ------------------------------------------------------------------ internals
    def _belongs(self, stamp_ns: int, anchor_ns: int) -> bool:
        """Within the window of ``anchor_ns`` and not nearer to the newest emitted anchor."""
        distance = abs(stamp_ns - anchor_ns)
        return distance <= self.window_ns and (
            self.emitted_anchor_ns is None or distance < abs(stamp_ns - self.emitted_anchor_ns))

    def _wanted(self, stamp_ns: int) -> bool:
        """True when a pending set could still use an image with this stamp."""
        return any(self._belongs(stamp_ns, p.anchor_stamp_ns) for p in self.pending)

    def _settled(self, camera: int, anchor_ns: int) -> bool:
        newest = self.newest_ns[camera]
        return newest is not None and (newest > anchor_ns + self.window_ns or
                                       self._candidate(camera, anchor_ns) is not None)

    def _candidate(self, camera: int, anchor_ns: int) -> int | None:
        near = [s for s in self.queues[camera] if self._belongs(s, anchor_ns)]
        if not near:
            return None
        return min(near, key=lambda s: (abs(s - anchor_ns), s))

    def _emit(self, anchor_ns: int, settled: Sequence[bool]) -> CameraSet:
        stamps: list[int | None] = [self._candidate(c, anchor_ns) for c in range(self.num_cameras)]
        missing = {c: (NO_IMAGE if settled[c] else LATE)
                   for c, s in enumerate(stamps) if s is None}
        while True:
            present: list[tuple[int, int]] = [(c, s) for c, s in enumerate(stamps) if s is not None]
            values = [s for _, s in present]
            if not values or max(values) - min(values) <= self.window_ns:
                break
            worst, worst_ns = max(present, key=lambda cs: abs(cs[1] - anchor_ns))
            self.queues[worst].pop(worst_ns)                      # spent: it was this cycle's
            stamps[worst] = None
            missing[worst] = OUT_OF_WINDOW
        messages = [None if s is None else self.queues[c].pop(s) for c, s in enumerate(stamps)]
        for c, s in enumerate(stamps):
            if s is not None:
                self._emitted[c].add(s)
        self._prune(anchor_ns)
        return CameraSet(anchor_ns, messages, stamps, dict(sorted(missing.items())))

    def _prune(self, anchor_ns: int) -> None:
        """Drop images no later set can use and forget emitted stamps that cannot recur."""
        self.emitted_anchor_ns = anchor_ns if self.emitted_anchor_ns is None \
            else max(self.emitted_anchor_ns, anchor_ns)
        horizon = self.emitted_anchor_ns - self.window_ns
        keep_from = min([horizon] + [p.anchor_stamp_ns - self.window_ns for p in self.pending])
        for c in range(self.num_cameras):
            for s in [s for s in self.queues[c] if s < keep_from]:
                del self.queues[c][s]
            self._emitted[c] = {s for s in self._emitted[c] if s >= horizon - self.jump_back_ns}


def synchronizer_for(params: Any) -> AnchorSynchronizer:
    """The synchroniser of the node and of replay from the parameters (``camera_names``,
    ``anchor_camera``, ``sync_window``, ``sync_max_wait``, ``queue_size``)."""
    return AnchorSynchronizer(len(params.camera_names), params.anchor_index,
                              window=params.sync_window, max_wait=params.sync_max_wait,
                              queue_size=params.queue_size)
