"""ApproximateTimeSynchronizer against the documented Python message_filters behaviour
(spec/ros2.md section 3e)."""
import random
from types import SimpleNamespace

import pytest

from sparsebev_ros.sync import ApproximateTimeSynchronizer

S = 1_000_000_000  # ns per second


def msg(stamp_ns: int, tag: str = ''):
    """A message with a header, like rclpy / rosbags messages (only the attribute paths)."""
    return SimpleNamespace(header=SimpleNamespace(stamp=SimpleNamespace(sec=stamp_ns // S,
                                                                        nanosec=stamp_ns % S)),
                           tag=tag, stamp=stamp_ns)


def collect(sync):
    out = []
    sync.register_callback(lambda *msgs: out.append(tuple(m.stamp for m in msgs)))
    return out


def test_pair_within_slop_is_emitted_in_input_order():
    sync = ApproximateTimeSynchronizer(2, queue_size=10, slop=0.05)
    out = collect(sync)
    sync.add(msg(10 * S + 20_000_000), 1)
    assert out == []
    sync.add(msg(10 * S), 0)
    assert out == [(10 * S, 10 * S + 20_000_000)]
    assert sync.queued() == [[], []]


def test_stamps_exactly_slop_apart_are_not_synced():
    """Candidates may lie at |dt| == slop, but a set needs max - min < slop (strict)."""
    sync = ApproximateTimeSynchronizer(2, queue_size=10, slop=0.05)
    out = collect(sync)
    sync.add(msg(S), 0)
    sync.add(msg(S + 50_000_000), 1)
    assert out == []
    sync.add(msg(S + 49_999_999), 1)
    assert out == [(S, S + 49_999_999)]
    assert sync.queued() == [[], [S + 50_000_000]]


def test_closest_stamp_is_chosen_first():
    sync = ApproximateTimeSynchronizer(2, queue_size=10, slop=0.05)
    out = collect(sync)
    sync.add(msg(S), 0)                      # no partner yet
    sync.add(msg(S + 40_000_000), 0)
    sync.add(msg(S + 30_000_000), 1)         # both queued stamps of input 0 are candidates
    assert out == [(S + 40_000_000, S + 30_000_000)]
    assert sync.queued() == [[S], []]        # the unmatched older message is not purged


def test_queue_evicts_smallest_stamp_not_oldest_arrival():
    sync = ApproximateTimeSynchronizer(2, queue_size=2, slop=0.01)
    out = collect(sync)
    sync.add(msg(5 * S), 0)
    sync.add(msg(3 * S), 0)                  # arrives later but has the smaller stamp
    sync.add(msg(4 * S), 0)                  # queue over 2: stamp 3 s goes, not 5 s
    assert sync.queued()[0] == [4 * S, 5 * S]
    sync.add(msg(3 * S), 1)
    assert out == []


def test_same_stamp_overwrites_the_queued_message():
    sync = ApproximateTimeSynchronizer(2, queue_size=10, slop=0.05)
    got = []
    sync.register_callback(lambda a, b: got.append((a.tag, b.tag)))
    sync.add(msg(S, 'first'), 0)
    sync.add(msg(S, 'second'), 0)
    sync.add(msg(S, 'x'), 1)
    assert got == [('second', 'x')]


def test_new_message_evicted_by_its_own_queue_cannot_sync():
    sync = ApproximateTimeSynchronizer(2, queue_size=1, slop=0.05)
    out = collect(sync)
    sync.add(msg(2 * S), 0)
    sync.add(msg(S), 0)                      # smaller stamp: evicted at once
    sync.add(msg(S + 1), 1)
    assert out == []


def test_headerless_messages_are_dropped_unless_allowed():
    sync = ApproximateTimeSynchronizer(2, queue_size=10, slop=0.05)
    out = collect(sync)
    sync.add(SimpleNamespace(stamp=None), 0)
    assert sync.dropped_headerless == 1 and sync.queued() == [[], []]
    clock = iter([7 * S])
    sync2 = ApproximateTimeSynchronizer(2, queue_size=10, slop=0.05, allow_headerless=True,
                                        clock=lambda: next(clock))
    out2 = collect(sync2)
    sync2.add(SimpleNamespace(stamp=7 * S), 0)
    sync2.add(msg(7 * S + 1), 1)
    assert out2 == [(7 * S, 7 * S + 1)] and out == []


@pytest.mark.parametrize('seed', range(5))
def test_six_cameras_with_jitter_give_one_set_per_frame_in_any_arrival_order(seed):
    rng = random.Random(seed)
    period, slop = 83_333_333, 0.06
    sync = ApproximateTimeSynchronizer(6, queue_size=10, slop=slop)
    out = collect(sync)
    truth = []
    arrivals = []
    for f in range(12):
        stamps = [10 * S + f * period + i * 8_000_000 + rng.randint(-3_000_000, 3_000_000)
                  for i in range(6)]
        truth.append(tuple(stamps))
        order = list(range(6))
        rng.shuffle(order)
        arrivals += [(stamps[i], i) for i in order]
    # deliver with a little cross-frame reordering, as separate subscriptions do
    for k in range(0, len(arrivals) - 1, 5):
        if rng.random() < 0.5:
            arrivals[k], arrivals[k + 1] = arrivals[k + 1], arrivals[k]
    for stamp, i in arrivals:
        sync.add(msg(stamp), i)
    assert sorted(out) == truth


@pytest.mark.parametrize('length', range(1, 10))
def test_shuffled_sequences_of_pairs_all_sync_whatever_the_arrival_order(length):
    """Pairs 100 ms apart, jitter 10 ms, slop 30 ms: every pair is found exactly once."""
    rng = random.Random(length)
    slop_ns = 30_000_000
    sync = ApproximateTimeSynchronizer(2, queue_size=length, slop=slop_ns / 1e9)
    out = collect(sync)
    truth = [(S + k * 100_000_000 + rng.randint(-10_000_000, 10_000_000),
              S + k * 100_000_000 + rng.randint(-10_000_000, 10_000_000)) for k in range(length)]
    events = [(pair[i], i) for pair in truth for i in (0, 1)]
    rng.shuffle(events)
    for stamp, i in events:
        sync.add(msg(stamp), i)
    assert sorted(out) == truth
    assert sync.queued() == [[], []]
