"""``ApproximateTimeSynchronizer`` with the exact semantics of Python ``message_filters``.

Re-implemented from the documented behaviour (docs/ros2.md section 3e) for the tier-2 stand-in of
``message_filters`` (the node and replay group images with ``camera_sync.AnchorSynchronizer``):

1. Stamps are integer nanoseconds from ``msg.header.stamp``. Each input keeps a dict
   ``{stamp: msg}`` (a repeated stamp overwrites); while it holds more than ``queue_size``
   entries, the *smallest stamp* is deleted (not the oldest arrival).
2. For every other input, candidate stamps are those with ``|s - t_new| <= slop``; when one
   input has none, nothing happens (the message stays queued).
3. Candidates are sorted by ``|s - t_new|`` and combined with ``itertools.product`` (closest
   first); the first combination with ``max - min < slop`` (strict) whose entries are all
   still queued is emitted in input order, and exactly those entries are deleted.
"""
from __future__ import annotations

import itertools
import threading
from typing import Any, Callable

from .codecs import stamp_to_ns


class ApproximateTimeSynchronizer:
    """Group messages of ``num_inputs`` inputs whose stamps lie within ``slop`` seconds.

    ``add(msg, input_index)`` feeds one message; registered callbacks receive the grouped
    messages in input order. ``allow_headerless`` messages get ``clock()`` nanoseconds (the
    ROS clock in message_filters); otherwise headerless messages are dropped.
    """

    def __init__(self, num_inputs: int, queue_size: int, slop: float,
                 allow_headerless: bool = False, clock: Callable[[], int] | None = None,
                 logger: Callable[[str], None] | None = None):
        if num_inputs < 1:
            raise ValueError('num_inputs must be >= 1')
        self.queue_size = int(queue_size)
        self.slop_ns = int(round(slop * 1e9))
        self.allow_headerless = allow_headerless
        self.clock = clock
        self.logger = logger
        self.queues: list[dict[int, Any]] = [{} for _ in range(num_inputs)]
        self.callbacks: list[Callable[..., None]] = []
        self.lock = threading.Lock()
        self.dropped_headerless = 0

    def register_callback(self, callback: Callable[..., None]) -> None:
        """Call ``callback(*msgs)`` with each emitted set (one message per input, input order)."""
        self.callbacks.append(callback)

    def clear(self) -> None:
        """Forget every queued message (e.g. after a bag loop)."""
        with self.lock:
            for q in self.queues:
                q.clear()

    def add(self, msg: Any, input_index: int, stamp_ns: int | None = None) -> None:
        """Feed one message of input ``input_index``; may emit one set to the callbacks."""
        if stamp_ns is None:
            header = getattr(msg, 'header', None)
            if header is None or not hasattr(header, 'stamp'):
                if not self.allow_headerless or self.clock is None:
                    self.dropped_headerless += 1
                    if self.logger:
                        self.logger('Cannot use message filters with non-stamped messages. Use '
                                    "the 'allow_headerless' constructor option to auto-assign "
                                    'ROS time to headerless messages.')
                    return
                stamp_ns = int(self.clock())
            else:
                stamp_ns = stamp_to_ns(header.stamp)
        emitted = None
        with self.lock:
            my_queue = self.queues[input_index]
            my_queue[stamp_ns] = msg
            while len(my_queue) > self.queue_size:
                del my_queue[min(my_queue)]
            search_queues = self.queues[:input_index] + self.queues[input_index + 1:]
            candidates: list[list[int]] = []
            for queue in search_queues:
                near = [(s, abs(s - stamp_ns)) for s in queue if abs(s - stamp_ns) <= self.slop_ns]
                if not near:
                    return
                near.sort(key=lambda sd: sd[1])                  # stable: ties keep queue order
                candidates.append([s for s, _ in near])
            for combo in itertools.product(*candidates):
                stamps = list(combo)
                stamps.insert(input_index, stamp_ns)
                if max(stamps) - min(stamps) < self.slop_ns and \
                        all(t in q for q, t in zip(self.queues, stamps)):
                    emitted = [q[t] for q, t in zip(self.queues, stamps)]
                    for q, t in zip(self.queues, stamps):
                        del q[t]
                    break
        # message_filters signals inside the lock; callbacks here run after it so that a
        # callback may feed this synchronizer again without deadlock. Order is the same.
        if emitted is not None:
            for callback in self.callbacks:
                callback(*emitted)

    def queued(self) -> list[list[int]]:
        """Queued stamps per input (sorted), for diagnostics."""
        with self.lock:
            return [sorted(q) for q in self.queues]
