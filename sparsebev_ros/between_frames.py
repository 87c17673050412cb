"""Changes to the pipeline that a ROS callback asks for (a parameter set, ``~/reset``, a clock
jump), applied between two frames without the callback ever waiting for a frame. ROS-free.

The inference worker holds the pipeline lock for a whole frame (inference plus up to
``tf_timeout`` per TF lookup). A callback that waited for that lock would hold its callback
group, and the parameter and lifecycle services share the node's default group: ``ros2 param
set`` and ``ros2 lifecycle get`` would hang behind a slow frame. :class:`BetweenFrames`
applies a change at once when no frame runs, and otherwise leaves it for the worker, which
applies what is waiting before and after each frame.
"""
from __future__ import annotations

import threading
from typing import Callable

Change = Callable[[], None]


class BetweenFrames:
    """Changes queued by callbacks, applied in order under ``lock`` (the pipeline lock).

    Args:
        lock: the lock the worker holds while it processes a frame.
        on_error: receives a change's exception (a change must not fail; if one does, the
            others still run and nothing is raised into the callback or the worker).
    """

    def __init__(self, lock: threading.Lock,
                 on_error: Callable[[Exception], None] = lambda exc: None) -> None:
        self._lock = lock
        self._on_error = on_error
        self._guard = threading.Lock()            # protects _waiting only, never held long
        self._waiting: list[Change] = []

    def request(self, change: Change) -> bool:
        """Queue ``change`` and apply it now if no frame runs; never blocks. True when it
        was applied before returning, False when the lock's holder applies it on release."""
        with self._guard:
            self._waiting.append(change)
        self.settle()
        with self._guard:
            return all(waiting is not change for waiting in self._waiting)

    def apply_waiting(self) -> None:
        """Apply every waiting change, oldest first; the caller holds the lock."""
        with self._guard:
            changes, self._waiting = self._waiting, []
        for change in changes:
            try:
                change()
            except Exception as exc:   # a change must not end the worker or fail a callback
                self._on_error(exc)

    def settle(self) -> None:
        """Apply the waiting changes if the lock is free; never blocks. Whoever holds the
        lock calls this after releasing it, so a change queued meanwhile (whose own attempt
        found the lock taken) is applied then."""
        while self.waiting and self._lock.acquire(blocking=False):
            try:
                self.apply_waiting()
            finally:
                self._lock.release()

    def discard(self) -> None:
        """Forget the waiting changes (the pipeline they were meant for is gone)."""
        with self._guard:
            self._waiting = []

    @property
    def waiting(self) -> bool:
        with self._guard:
            return bool(self._waiting)
