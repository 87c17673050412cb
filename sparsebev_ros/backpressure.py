"""Keeping up with the cameras without queueing or flooding: a one-slot newest-wins mailbox
between the camera callbacks and the inference thread (:class:`LatestMailbox`), and a logger
that says each kind of thing at most once per period (:class:`ThrottledLogger`). ROS-free."""
from __future__ import annotations

import threading
import time
from collections import Counter
from typing import Callable, Generic, TypeVar

T = TypeVar('T')


class LatestMailbox(Generic[T]):
    """A one-slot mailbox: ``put`` replaces what is waiting (counted in ``dropped``), ``take``
    blocks until something arrives. Inference always works on the newest synced frame."""

    def __init__(self) -> None:
        self._item: T | None = None
        self._closed = False
        self._cond = threading.Condition()
        self.dropped = 0

    def put(self, item: T) -> bool:
        """Leave ``item``; True when it replaced an item nobody had taken."""
        with self._cond:
            replaced = self._item is not None
            self.dropped += int(replaced)
            self._item = item
            self._cond.notify()
            return replaced

    def take(self, timeout: float | None = None) -> T | None:
        """The waiting item (emptying the slot), or None after ``timeout`` s or when closed."""
        with self._cond:
            if self._item is None and not self._closed:
                self._cond.wait(timeout)
            item, self._item = self._item, None
            return item

    def clear(self) -> None:
        with self._cond:
            self._item = None

    def close(self) -> None:
        """Wake every waiting ``take`` (it returns None from now on)."""
        with self._cond:
            self._closed = True
            self._item = None
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed


class ThrottledLogger:
    """``warn(key, text)`` logs each key at most once per ``period`` seconds (with a count of
    what was suppressed in between)."""

    def __init__(self, log: Callable[[str], None], period: float = 5.0,
                 clock: Callable[[], float] = time.monotonic):
        self.log, self.period, self.clock = log, period, clock
        self._last: dict[str, float] = {}
        self._suppressed: Counter = Counter()

    def __call__(self, key: str, text: str) -> None:
        now = self.clock()
        last = self._last.get(key)
        if last is not None and now - last < self.period:
            self._suppressed[key] += 1
            return
        self._last[key] = now
        n = self._suppressed.pop(key, 0)
        self.log(text + (f' (and {n} more like it)' if n else ''))
