"""The ROS layer's stable keys live in ``sparsebev_ros/reasons.py`` only, and the node's health
rule (``statistics.node_health``, a pure function) reports only those keys."""
from __future__ import annotations

import ast
from collections import Counter
from pathlib import Path

import pytest

from sparsebev_core import resets
from sparsebev_ros import reasons
from sparsebev_ros.statistics import (ERROR, OK, WARN, ErrorStreak, NodeActivity, PipelineStats,
                                      node_health)

ROOT = Path(__file__).resolve().parents[1]
DECLARED = {value for name, value in vars(reasons).items()
            if name.isupper() and isinstance(value, str)}


def test_each_key_is_declared_once_and_the_reset_keys_are_the_cores():
    assert len(reasons.SKIP_REASONS) == len(set(reasons.SKIP_REASONS))
    assert set(reasons.MISSING_REASONS) <= set(reasons.SKIP_REASONS)
    assert set(reasons.ROS_RESETS) <= set(resets.RESET_REASONS)
    assert reasons.CAMERA_TIME_SPREAD is resets.CAMERA_TIME_SPREAD       # re-exported, not copied
    assert set(reasons.SYNC_COUNTS) & set(reasons.SKIP_REASONS) == {reasons.ZERO_STAMP}


def test_no_other_module_spells_a_key_out():
    """A key written as a string anywhere else in the ROS layer is a second definition (the
    review found ``camera_time_spread`` and ``zero_stamp`` twice): use the name."""
    spelled = [f'{path.relative_to(ROOT)}:{node.lineno} {node.value!r}'
               for path in sorted((ROOT / 'sparsebev_ros').rglob('*.py'))
               if path.name != 'reasons.py'
               for node in ast.walk(ast.parse(path.read_text()))
               if isinstance(node, ast.Constant) and isinstance(node.value, str)
               and node.value in DECLARED]
    assert spelled == []


def activity(now=100.0, published=99.0, synced=99.5, subscribers=True, missing=None):
    return NodeActivity(now=now, last_publish=published, last_synced=synced,
                        has_subscribers=subscribers, skip_when_no_subscribers=True,
                        last_missing=missing or {})


def health(stats=None, streak=None, **kw):
    return node_health(stats or PipelineStats(), streak or ErrorStreak(3), activity(**kw),
                       counters=Counter(), dropped_by_mailbox=0, sync_counts=Counter())


@pytest.mark.parametrize('kw, level, words', [
    (dict(), OK, 'publishing detections'),
    (dict(missing={'CAM_BACK': reasons.LATE}), WARN,
     'DEGRADED detections: last frame without CAM_BACK (late)'),
    (dict(published=None, subscribers=False), OK, 'idle: nobody subscribes'),
    (dict(published=None), WARN, 'none was published in 5 s'),
    (dict(published=None, synced=None), WARN, 'no camera sets in 5 s'),
    (dict(published=90.0, synced=90.0), WARN, 'no camera sets in 5 s'),    # both too long ago
])
def test_health_levels_follow_what_the_node_saw_lately(kw, level, words):
    state = health(**kw)
    assert state.level == level and words in state.message


def test_a_streak_of_identical_errors_is_an_error_with_advice():
    streak = ErrorStreak(3)
    for _ in range(3):
        streak.record("ModuleNotFoundError: No module named 'simplejpeg'")
    state = health(streak=streak)
    assert state.level == ERROR and 'install it' in state.message
    assert state.values['error_streak'] == 3
    streak.success()
    assert health(streak=streak).level == OK


def test_diagnostics_values_name_only_declared_reasons():
    stats = PipelineStats()
    stats.synced, stats.published = 5, 3
    stats.skipped.update({reasons.DUPLICATE_FRAME: 1, reasons.TF_UNAVAILABLE: 1})
    stats.resets.update({reasons.CAMERA_TIME_SPREAD: 1, reasons.EXPLICIT: 2})
    stats.add_degraded({'CAM_BACK': reasons.LATE})
    values = node_health(stats, ErrorStreak(3), activity(),
                         counters=Counter({reasons.NO_SUBSCRIBERS: 4}), dropped_by_mailbox=2,
                         sync_counts=Counter({reasons.DUPLICATE: 1})).values
    assert values['skipped_no_subscribers'] == 4 and values['dropped_by_mailbox'] == 2
    for key in values:
        for prefix, allowed in (('skipped_', set(reasons.SKIP_REASONS) | set(reasons.NODE_COUNTS)),
                                ('resets_', set(resets.RESET_REASONS)),
                                ('sync_', set(reasons.SYNC_COUNTS))):
            if key.startswith(prefix):
                assert key[len(prefix):] in allowed, key
        if key.startswith('missing_'):
            assert key.split('/')[-1] in reasons.MISSING_REASONS, key
    assert {'skipped_duplicate_frame', 'resets_explicit', 'missing_CAM_BACK/late',
            'sync_duplicate', 'degraded'} <= set(values)
