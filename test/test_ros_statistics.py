"""Bounded statistics (sparsebev_ros/statistics.py): memory stays flat however long the node
runs, the percentiles describe the recent past, and identical errors in a row are noticed."""
from __future__ import annotations

import tracemalloc

import pytest

from sparsebev_ros.statistics import ErrorStreak, LatencyWindow, PipelineStats, error_key


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


STAGES = ('assemble', 'detector', 'messages', 'total')


def run_frames(stats: PipelineStats, clock: FakeClock, n: int, ms: float = 10.0) -> None:
    for i in range(n):
        clock.now += 1 / 12                       # 12 Hz cameras
        stats.synced += 1
        stats.published += 1
        stats.add_latencies({stage: ms + (i % 7) for stage in STAGES})


def test_memory_stays_flat_over_many_frames():
    clock = FakeClock()
    stats = PipelineStats(max_samples=500, clock=clock)
    run_frames(stats, clock, 2000)                 # fill the windows first
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        run_frames(stats, clock, 20000)            # ~28 minutes of frames
        for stage in STAGES:
            stats.percentiles(stage)
        after, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert after - before < 20_000, f'statistics grew by {after - before} bytes'
    assert all(len(stats.latency[stage]) == 500 for stage in STAGES)
    assert stats.latency['total'].count == 22000 and stats.published == 22000


def test_window_is_bounded_by_count_and_by_age():
    clock = FakeClock()
    window = LatencyWindow(max_samples=3, max_age=10.0, clock=clock)
    for ms in (1.0, 2.0, 3.0, 4.0):
        window.add(ms)
        clock.now += 1.0
    assert window.values() == [2.0, 3.0, 4.0]
    clock.now += 7.5                               # now t=11.5: 2.0 (added at t=1) is too old
    assert window.values() == [3.0, 4.0]
    clock.now += 100.0
    assert window.values() == [] and window.percentiles() == {}
    assert window.count == 4


def test_percentiles_describe_the_recent_frames_not_the_whole_run():
    clock = FakeClock()
    stats = PipelineStats(max_age=30.0, clock=clock)
    run_frames(stats, clock, 600, ms=500.0)         # a slow start (warm-up) ...
    run_frames(stats, clock, 600, ms=20.0)          # ... then 50 s of fast frames
    p = stats.percentiles('total')
    assert 20.0 <= p[50] <= 27.0 and p[99] <= 27.0
    assert 'latency total (last 30 s)' in stats.summary()


def test_error_streak_fires_once_after_the_limit_and_ends_on_success_or_another_error():
    streak = ErrorStreak(limit=3)
    fired = [streak.record('ModuleNotFoundError: simplejpeg') for _ in range(5)]
    assert fired == [False, False, True, False, False] and streak.escalated
    streak.success()
    assert not streak.escalated
    assert [streak.record(k) for k in ('a', 'a', 'b', 'a', 'a', 'a')] == \
        [False, False, False, False, False, True]
    with pytest.raises(ValueError):
        ErrorStreak(limit=0)


def test_error_key_tells_identical_errors_from_different_ones():
    assert error_key(ValueError('x')) == error_key(ValueError('x'))
    assert error_key(ValueError('x')) != error_key(ValueError('y'))
    assert error_key(ValueError('x')) != error_key(TypeError('x'))
