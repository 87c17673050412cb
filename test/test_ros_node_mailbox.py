"""The node's one-slot mailbox between the executor and the inference thread (no ROS needed):
a slow consumer always gets the newest frame, older ones are dropped, never queued."""
from __future__ import annotations

import threading
import time

from sparsebev_ros.backpressure import LatestMailbox


def test_put_replaces_the_waiting_item_and_counts_the_drop():
    box: LatestMailbox[int] = LatestMailbox()
    assert box.put(1) is False
    assert box.put(2) is True
    assert box.put(3) is True
    assert box.dropped == 2
    assert box.take(timeout=0) == 3
    assert box.take(timeout=0) is None          # taking empties the slot


def test_slow_consumer_sees_only_the_latest_of_a_burst():
    box: LatestMailbox[int] = LatestMailbox()
    seen: list[int] = []
    started = threading.Event()

    def consumer() -> None:
        while not box.closed:
            item = box.take(timeout=0.5)
            if item is not None:
                started.set()
                seen.append(item)
                time.sleep(0.2)                 # "inference"

    thread = threading.Thread(target=consumer)
    thread.start()
    box.put(0)
    assert started.wait(5.0)
    for i in range(1, 11):                      # a burst while the consumer is busy
        box.put(i)
    deadline = time.monotonic() + 5.0
    while (not seen or seen[-1] != 10) and time.monotonic() < deadline:
        time.sleep(0.01)
    box.close()
    thread.join(5.0)
    assert seen == [0, 10]
    assert box.dropped == 9


def test_close_wakes_a_waiting_take():
    box: LatestMailbox[int] = LatestMailbox()
    result: list[object] = []
    thread = threading.Thread(target=lambda: result.append(box.take(timeout=30.0)))
    thread.start()
    time.sleep(0.05)
    t0 = time.monotonic()
    box.close()
    thread.join(5.0)
    assert result == [None] and time.monotonic() - t0 < 2.0
