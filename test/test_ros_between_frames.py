"""Changes asked for by the node's callbacks (parameters, ~/reset, a clock jump) are applied
between two frames and never make the callback wait for a frame (no ROS needed)."""
from __future__ import annotations

import threading
import time

from sparsebev_ros.between_frames import BetweenFrames


def test_a_change_is_applied_at_once_when_no_frame_runs():
    applied: list[str] = []
    changes = BetweenFrames(threading.Lock())
    assert changes.request(lambda: applied.append('a')) is True
    assert applied == ['a'] and not changes.waiting


def test_a_change_asked_for_during_a_frame_waits_for_it_without_blocking_the_caller():
    lock = threading.Lock()
    applied: list[str] = []
    changes = BetweenFrames(lock)
    with lock:                                  # the worker is inside a frame
        t0 = time.monotonic()
        assert changes.request(lambda: applied.append('threshold')) is False
        assert changes.request(lambda: applied.append('reset')) is False
        assert time.monotonic() - t0 < 0.5 and applied == []
    changes.settle()                            # the worker, after releasing the lock
    assert applied == ['threshold', 'reset']    # in the order asked for
    assert not changes.waiting


def test_the_worker_applies_waiting_changes_before_its_next_frame():
    lock = threading.Lock()
    applied: list[str] = []
    changes = BetweenFrames(lock)
    with lock:
        changes.request(lambda: applied.append('x'))
    with lock:                                  # the next frame, before processing
        changes.apply_waiting()
        assert applied == ['x']


def test_a_failing_change_is_reported_and_the_others_still_run():
    errors: list[Exception] = []
    applied: list[str] = []
    lock = threading.Lock()
    changes = BetweenFrames(lock, on_error=errors.append)

    def broken() -> None:
        raise RuntimeError('boom')
    with lock:
        changes.request(broken)
        changes.request(lambda: applied.append('after'))
    changes.settle()
    assert applied == ['after'] and [str(e) for e in errors] == ['boom']


def test_discarded_changes_never_run():
    lock = threading.Lock()
    applied: list[str] = []
    changes = BetweenFrames(lock)
    with lock:
        changes.request(lambda: applied.append('old pipeline'))
    changes.discard()
    changes.settle()
    assert applied == [] and not changes.waiting


def test_no_change_is_stranded_when_callbacks_race_a_busy_worker():
    """Callbacks on several threads ask while a worker takes the lock frame after frame: every
    change runs exactly once, and no callback ever waited for a frame."""
    lock = threading.Lock()
    changes = BetweenFrames(lock)
    applied: list[int] = []
    stop = threading.Event()
    slowest = [0.0]

    def worker() -> None:
        while not stop.is_set():
            with lock:
                changes.apply_waiting()
                time.sleep(0.002)               # a frame
            changes.settle()

    def callbacks(base: int) -> None:
        for i in range(200):
            t0 = time.monotonic()
            changes.request(lambda i=i: applied.append(base + i))
            slowest[0] = max(slowest[0], time.monotonic() - t0)

    work = threading.Thread(target=worker)
    work.start()
    callers = [threading.Thread(target=callbacks, args=(k * 1000,)) for k in range(3)]
    for c in callers:
        c.start()
    for c in callers:
        c.join()
    stop.set()
    work.join()
    changes.settle()
    assert sorted(applied) == sorted(k * 1000 + i for k in range(3) for i in range(200))
    assert slowest[0] < 1.0                     # never a wait for the lock
