"""Bounded run-time statistics of the pipeline: counters, recent latency percentiles and
streaks of identical errors, and the node's health rule over them (:func:`node_health`: the
OK / WARN / ERROR of its diagnostics, a pure function the node only wraps into a message).

Everything here has a fixed memory footprint however long the node runs: latency samples live
in a window bounded by count (``max_samples``) and by age (``max_age`` seconds), so the
percentiles in diagnostics describe the last minute or so, not the whole run.
"""
from __future__ import annotations

import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from .reasons import NO_SUBSCRIBERS

DEFAULT_MAX_SAMPLES = 1000
"""Latency samples kept per stage (about 80 s of 12 Hz cameras)."""
DEFAULT_MAX_AGE = 60.0
"""Seconds after which a latency sample no longer counts."""
DEFAULT_ERROR_STREAK = 20
"""Identical errors in a row after which the node escalates to an ERROR diagnostic."""


class LatencyWindow:
    """The most recent latency samples (ms) of one stage, bounded by count and by age.

    Args:
        max_samples: at most this many samples are kept (the oldest go first).
        max_age: samples older than this many seconds are dropped.
        clock: monotonic seconds (injectable for tests).
    """

    def __init__(self, max_samples: int = DEFAULT_MAX_SAMPLES, max_age: float = DEFAULT_MAX_AGE,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if max_samples < 1 or not max_age > 0:
            raise ValueError('LatencyWindow needs max_samples >= 1 and max_age > 0')
        self.max_age = max_age
        self.clock = clock
        self._samples: deque[tuple[float, float]] = deque(maxlen=max_samples)   # (time, ms)
        self.count = 0                    # every sample ever added (a counter, not a list)

    def add(self, ms: float) -> None:
        """Record one sample now."""
        self._samples.append((self.clock(), float(ms)))
        self.count += 1

    def values(self) -> list[float]:
        """The samples still inside the window, oldest first."""
        horizon = self.clock() - self.max_age
        while self._samples and self._samples[0][0] < horizon:
            self._samples.popleft()
        return [ms for _, ms in self._samples]

    def __len__(self) -> int:
        return len(self.values())

    def percentiles(self, qs: Sequence[float] = (50, 90, 99)) -> dict[int, float]:
        """``{50: p50_ms, ...}`` over the window; empty when it holds no sample."""
        values = self.values()
        return {int(q): float(np.percentile(values, q)) for q in qs} if values else {}


@dataclass
class PipelineStats:
    """Counters and recent latencies (ms) for summaries and diagnostics."""
    synced: int = 0
    published: int = 0
    skipped: Counter = field(default_factory=Counter)
    resets: Counter = field(default_factory=Counter)
    degraded: int = 0                                      # published without some cameras
    missing_cameras: Counter = field(default_factory=Counter)   # 'CAMERA/reason' -> frames
    max_samples: int = DEFAULT_MAX_SAMPLES
    max_age: float = DEFAULT_MAX_AGE
    clock: Callable[[], float] = time.monotonic
    latency: dict[str, LatencyWindow] = field(default_factory=dict)

    def add_degraded(self, missing: dict[str, str]) -> None:
        """One published frame that ran without the cameras ``missing`` (name -> reason)."""
        if missing:
            self.degraded += 1
            self.missing_cameras.update(f'{name}/{why}' for name, why in missing.items())

    def add_latencies(self, timings_ms: dict[str, float]) -> None:
        """One frame's ms per stage."""
        for stage, ms in timings_ms.items():
            window = self.latency.get(stage)
            if window is None:
                window = self.latency[stage] = LatencyWindow(self.max_samples, self.max_age,
                                                             self.clock)
            window.add(ms)

    def percentiles(self, stage: str, qs: Sequence[float] = (50, 90, 99)) -> dict[int, float]:
        """Recent percentiles of one stage (empty when no recent sample)."""
        window = self.latency.get(stage)
        return window.percentiles(qs) if window is not None else {}

    def summary(self) -> str:
        """Multi-line human summary."""
        lines = [f'synced frames: {self.synced}', f'published: {self.published}',
                 f'skipped: {sum(self.skipped.values())}'
                 + ''.join(f'\n  {k}: {v}' for k, v in sorted(self.skipped.items())),
                 f'memory resets: {sum(self.resets.values())}'
                 + ''.join(f'\n  {k}: {v}' for k, v in sorted(self.resets.items()))]
        if self.degraded:
            lines.append(f'degraded frames (published without some cameras): {self.degraded}'
                         + ''.join(f'\n  {k}: {v}' for k, v in sorted(self.missing_cameras.items())))
        for stage in self.latency:
            p = self.percentiles(stage)
            if p:
                lines.append(f'latency {stage} (last {self.max_age:g} s): p50 {p[50]:.1f} ms, '
                             f'p90 {p[90]:.1f} ms, p99 {p[99]:.1f} ms')
        return '\n'.join(lines)


class ErrorStreak:
    """Counts identical failures in a row (same key, e.g. the exception type and message).

    ``record(key)`` returns True exactly once per streak: when the same key has been seen
    ``limit`` times in a row. Any other outcome (``success()`` or another key) ends the streak.
    """

    def __init__(self, limit: int = DEFAULT_ERROR_STREAK) -> None:
        if limit < 1:
            raise ValueError('ErrorStreak needs limit >= 1')
        self.limit = limit
        self.key: str | None = None
        self.length = 0

    def record(self, key: str) -> bool:
        """One failure with ``key``; True when this one makes the streak reach ``limit``."""
        if key == self.key:
            self.length += 1
        else:
            self.key, self.length = key, 1
        return self.length == self.limit

    def success(self) -> None:
        """A frame went through: the streak is over."""
        self.key, self.length = None, 0

    @property
    def escalated(self) -> bool:
        """The current streak has reached ``limit``."""
        return self.length >= self.limit


def error_key(exc: BaseException) -> str:
    """What makes two failures 'identical': the exception type and its message."""
    return f'{type(exc).__name__}: {exc}'


def streak_advice(key: str) -> str:
    """What to do about an error that fails every frame."""
    if key.startswith(('ModuleNotFoundError', 'ImportError')):
        return ('a Python package is missing: install it (README, "Build with colcon") and '
                'restart the node')
    if 'CUDA' in key or 'out of memory' in key:
        return "the GPU fails: check the 'device' and 'precision' parameters and nvidia-smi"
    return 'every frame fails the same way: see the message above, fix its cause, restart'


# ----------------------------------------------------------------------------- health
OK, WARN, ERROR = 'OK', 'WARN', 'ERROR'
RECENT = 5.0
"""Seconds within which a camera set or a publication counts as "lately"."""


@dataclass(frozen=True)
class NodeActivity:
    """What the node saw lately (``now``, ``last_publish`` and ``last_synced`` on one monotonic
    clock, None: never) and its subscription state."""
    now: float
    last_publish: float | None
    last_synced: float | None
    has_subscribers: bool
    skip_when_no_subscribers: bool
    last_missing: Mapping[str, str] = field(default_factory=dict)   # the last frame's, name -> why


@dataclass(frozen=True)
class Health:
    """The node's state: ``level`` (OK, WARN, ERROR), a sentence, and the diagnostics values."""
    level: str
    message: str
    values: dict[str, Any]


def node_health(stats: PipelineStats, streak: ErrorStreak, activity: NodeActivity,
                counters: Mapping[str, int], dropped_by_mailbox: int,
                sync_counts: Mapping[str, int] | None) -> Health:
    """The health rule, in order: ERROR while the same error failed the last ``streak.limit``
    frames; WARN when the last published frame was degraded (cameras missing); OK while
    publishing; OK when idle because nobody subscribes (``skip_when_no_subscribers``); WARN
    when camera sets arrive but nothing was published lately, or when none arrive at all.

    ``values``: ``synced``, ``published``, ``dropped_by_mailbox``, ``skipped_<reason>``,
    ``resets_<reason>``, ``degraded``, ``missing_<camera>/<reason>``, ``sync_<count>``,
    ``latency_<stage>_p<q>_ms``, ``errors``, ``error_streak`` (keys: ``sparsebev_ros.reasons``).
    """
    values: dict[str, Any] = {'synced': stats.synced, 'published': stats.published,
                              'dropped_by_mailbox': dropped_by_mailbox,
                              'skipped_no_subscribers': counters.get(NO_SUBSCRIBERS, 0),
                              'errors': counters.get('error', 0)}
    values.update({f'skipped_{k}': v for k, v in sorted(stats.skipped.items())})
    values.update({f'resets_{k}': v for k, v in sorted(stats.resets.items())})
    values['degraded'] = stats.degraded
    values.update({f'missing_{k}': v for k, v in sorted(stats.missing_cameras.items())})
    values.update({f'sync_{k}': v for k, v in sorted(sync_counts.items())}
                  if sync_counts is not None else {})
    for stage in ('assemble', 'detector', 'total'):
        for q, ms in stats.percentiles(stage).items():
            values[f'latency_{stage}_p{q}_ms'] = round(ms, 2)
    a = activity
    published_lately = a.last_publish is not None and a.now - a.last_publish < RECENT
    arrived_lately = a.last_synced is not None and a.now - a.last_synced < RECENT
    if streak.escalated and streak.key is not None:
        values['error_streak'] = streak.length
        level, message = ERROR, (f'the last {streak.length} frames failed with {streak.key}; '
                                 f'{streak_advice(streak.key)}')
    elif published_lately and a.last_missing:
        level, message = WARN, 'publishing DEGRADED detections: last frame without ' + ', '.join(
            f'{n} ({why})' for n, why in a.last_missing.items())
    elif published_lately:
        level, message = OK, 'publishing detections'
    elif arrived_lately and not a.has_subscribers and a.skip_when_no_subscribers:
        level, message = OK, 'idle: nobody subscribes to the outputs'
    elif arrived_lately:
        level, message = WARN, ('camera frames arrive but none was published in 5 s (skipped so '
                                f'far: {dict(stats.skipped) or "none"})')
    else:
        level, message = WARN, ('no camera sets in 5 s (check the image topics, the anchor '
                                'camera, their stamps and sync_window)')
    return Health(level, message, values)
