"""AnchorSynchronizer: the semantics in sparsebev_ros/camera_sync.py's docstring, rule by rule."""
import random

import pytest

from sparsebev_ros.camera_sync import AnchorSynchronizer
from sparsebev_ros.reasons import (DUPLICATE, LATE, LATE_AFTER_EMIT, NO_IMAGE, OUT_OF_WINDOW,
                                   TIME_BACKWARDS, ZERO_STAMP)

MS = 1_000_000
S = 1000 * MS
PERIOD = 83 * MS                                  # ~12 Hz
PHASES = [0, 8, -8, 25, 35, 15]                   # nuScenes-like offsets to CAM_FRONT (ms)


def feed_cycle(sync, k, skip=(), jitter=None, now_offset=0):
    """Feed cycle k of all cameras in stamp order; returns the emitted sets."""
    rng = jitter or (lambda: 0)
    shots = sorted((S + k * PERIOD + PHASES[c] * MS + rng(), c) for c in range(len(PHASES))
                   if c not in skip)
    out = []
    for stamp, c in shots:
        out += sync.add(('img', c, stamp), c, stamp, stamp + now_offset)
    return out


def test_full_cycle_is_emitted_once_all_cameras_settle():
    sync = AnchorSynchronizer(6, window=0.05, max_wait=0.1)
    out = feed_cycle(sync, 10)
    assert len(out) == 1
    s = out[0]
    assert s.anchor_stamp_ns == S + 10 * PERIOD
    assert s.missing == {}
    assert [m[1] for m in s.messages] == list(range(6))
    assert s.spread_ns == 43 * MS


def test_nearest_image_within_window_is_chosen():
    sync = AnchorSynchronizer(2, window=0.05, max_wait=1.0)
    assert sync.add('b-30', 1, S - 30 * MS, S) == []
    assert sync.add('b-10', 1, S - 10 * MS, S) == []
    out = sync.add('a', 0, S, S)                           # camera 1 has a candidate: settled
    assert [s.messages for s in out] == [['a', 'b-10']]


def test_set_waits_for_a_camera_without_candidate():
    sync = AnchorSynchronizer(2, window=0.05, max_wait=1.0)
    assert sync.add('b-80', 1, S - 80 * MS, S) == []
    assert sync.add('a', 0, S, S) == []                    # nothing within the window yet
    out = sync.add('b+12', 1, S + 12 * MS, S)
    assert [s.messages for s in out] == [['a', 'b+12']]


def test_tie_goes_to_the_older_image():
    sync = AnchorSynchronizer(3, window=0.05, max_wait=1.0)
    sync.add('a', 0, S, 0)                                 # camera 2 holds the set open
    sync.add('new', 1, S + 10 * MS, 0)
    sync.add('old', 1, S - 10 * MS, 0)                     # arrives out of order
    out = sync.add('c', 2, S, 0)
    assert out[0].messages == ['a', 'old', 'c']


def test_missing_camera_waits_at_most_max_wait_then_emits_degraded():
    sync = AnchorSynchronizer(6, window=0.05, max_wait=0.1)
    assert feed_cycle(sync, 10, skip={3}) == []            # camera 3 never came
    t_a = S + 10 * PERIOD
    assert sync.poll(t_a + 99 * MS) == []
    out = sync.poll(t_a + 100 * MS)
    assert len(out) == 1 and out[0].missing == {3: LATE}
    assert out[0].messages[3] is None


def test_camera_settled_without_candidate_is_no_image():
    sync = AnchorSynchronizer(2, window=0.05, max_wait=10.0)
    sync.add('a', 0, S, S)
    out = sync.add('b-far', 1, S + 60 * MS, S)             # settled (> t_a), outside window
    assert len(out) == 1 and out[0].missing == {1: NO_IMAGE}


def test_emitted_set_never_spans_more_than_the_window():
    sync = AnchorSynchronizer(3, window=0.05, max_wait=0.0)
    sync.add('b', 1, S - 45 * MS, S)
    sync.add('c', 2, S + 40 * MS, S)
    out = sync.add('a', 0, S, S)
    assert len(out) == 1
    assert out[0].spread_ns <= 50 * MS
    assert out[0].missing == {1: OUT_OF_WINDOW}            # furthest from the anchor dropped
    assert out[0].messages == ['a', None, 'c']


def test_cycles_are_never_mixed_when_a_camera_skips_a_cycle():
    sync = AnchorSynchronizer(6, window=0.05, max_wait=0.1)
    feed_cycle(sync, 9)
    out = feed_cycle(sync, 10, skip={4})                   # phase +35 ms: previous at -48 ms
    out += sync.poll(S + 10 * PERIOD + S)
    assert len(out) == 1
    assert out[0].missing == {4: LATE}


def test_sets_come_out_in_anchor_order_at_their_deadlines():
    sync = AnchorSynchronizer(3, window=0.02, max_wait=0.5)
    sync.add('a1', 0, 1 * S, 1 * S)
    sync.add('b1', 1, 1 * S, 1 * S)
    sync.add('a2', 0, 1 * S + 100 * MS, 1 * S + 100 * MS)
    sync.add('b2', 1, 1 * S + 100 * MS, 1 * S + 100 * MS)
    assert sync.poll(1 * S + 499 * MS) == []               # camera 2 is silent
    out = sync.poll(1 * S + 700 * MS)                      # both deadlines passed
    assert [s.anchor_stamp_ns for s in out] == [1 * S, 1 * S + 100 * MS]
    assert [s.missing for s in out] == [{2: LATE}, {2: LATE}]


def test_late_image_after_emission_is_dropped_and_counted():
    sync = AnchorSynchronizer(2, window=0.02, max_wait=0.1)
    sync.add('a1', 0, 1 * S, 1 * S)
    assert len(sync.poll(1 * S + 100 * MS)) == 1
    sync.add('a2', 0, 2 * S, 2 * S)
    sync.add('b1', 1, 1 * S + 5 * MS, 2 * S)               # belongs to an emitted set
    assert sync.counts[LATE_AFTER_EMIT] == 1
    out = sync.poll(2 * S + 100 * MS)
    assert out[0].messages == ['a2', None]


def test_duplicate_anchor_is_not_emitted_twice():
    sync = AnchorSynchronizer(2, window=0.02, max_wait=0.1)
    sync.add('b', 1, S, S)
    assert len(sync.add('a', 0, S, S)) == 1
    assert sync.add('a-again', 0, S, S + MS) == []
    assert sync.poll(S + S) == []
    assert sync.counts[DUPLICATE] == 1


def test_time_going_backwards_clears_and_restarts():
    sync = AnchorSynchronizer(2, window=0.02, max_wait=0.1)
    for k in range(1, 4):
        sync.add('b', 1, 10 * S + k * S, 0)
        sync.add('a', 0, 10 * S + k * S, 0)
    out = sync.add('a-loop', 0, 1 * S, 0)                  # bag loop: back 12 s
    assert sync.counts[TIME_BACKWARDS] == 1
    out += sync.add('b-loop', 1, 1 * S, 0)
    assert [s.messages for s in out] == [['a-loop', 'b-loop']]


def test_single_camera_rig_emits_every_image():
    sync = AnchorSynchronizer(1, window=0.05, max_wait=0.0)
    out = [s for k in range(5) for s in sync.add(k, 0, S + k * PERIOD, S + k * PERIOD)]
    assert [s.messages for s in out] == [[k] for k in range(5)]


def test_an_unset_stamp_is_dropped_and_counted_not_taken_as_a_jump_back():
    sync = AnchorSynchronizer(2, window=0.05, max_wait=1.0)
    assert sync.add('a', 0, 10 * S, 10 * S) == []
    assert sync.add('b0', 1, 0, 10 * S) == []
    assert sync.counts == {ZERO_STAMP: 1} and sync.pending
    out = sync.add('b', 1, 10 * S + MS, 10 * S)
    assert [s.messages for s in out] == [['a', 'b']]


@pytest.mark.parametrize('seed', [0, 1])
def test_lossy_jittery_stream_publishes_every_anchor_and_never_exceeds_window(seed):
    """One camera loses 20% of its images, stamps jitter +-5 ms: every anchor is emitted."""
    rng = random.Random(seed)
    sync = AnchorSynchronizer(6)                           # defaults: 0.06 s window, 0.1 s wait
    out, anchors, dropped = [], 0, 0
    for k in range(200):
        skip = {5} if rng.random() < 0.2 else set()
        dropped += bool(skip)
        anchors += 1
        out += feed_cycle(sync, k, skip=skip, jitter=lambda: rng.randint(-5 * MS, 5 * MS),
                          now_offset=3 * MS)
    out += sync.poll(10 ** 6 * S)
    assert len(out) == anchors
    assert all(s.spread_ns <= 60 * MS for s in out)
    degraded = [s for s in out if s.missing]
    assert len(degraded) == dropped
    assert all(set(s.missing) == {5} for s in degraded)
    assert sum(sync.counts.values()) == 0


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError):
        AnchorSynchronizer(0)
    with pytest.raises(ValueError):
        AnchorSynchronizer(3, anchor=3)
    with pytest.raises(ValueError):
        AnchorSynchronizer(3, window=0)
