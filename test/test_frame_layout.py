"""The frame layout rule (``sparsebev_core.recipe.frame_layout``): slot offsets and the layout checks."""
from __future__ import annotations

import dataclasses

import pytest

from sparsebev_core.errors import InputError
from sparsebev_core.recipe.frame_layout import FrameLayoutError, frame_offsets, needs_future_frames
from sparsebev_core.recipe.presets import FUTURE_PRESET_NAMES, PRESET_NAMES, get_preset


def with_frames(cfg, layout: str, past: int, future: int):
    """``cfg`` with another frame layout and counts (the head's T following them)."""
    return dataclasses.replace(cfg, frame_layout=layout, num_past_frames=past,
                               num_future_frames=future,
                               head=dataclasses.replace(cfg.head, num_frames=1 + past + future))


def test_offsets_of_each_layout():
    cfg = get_preset('tiny')
    assert frame_offsets(cfg) == (0, -1, -2, -3)
    blocked = with_frames(cfg, 'future_blocked', past=3, future=2)
    assert frame_offsets(blocked) == (0, -1, -2, -3, 1, 2)
    mixed = with_frames(cfg, 'future_interleaved', past=2, future=2)
    assert frame_offsets(mixed) == (0, -1, 1, -2, 2)


@pytest.mark.parametrize('name', PRESET_NAMES)
def test_every_preset_has_one_slot_per_frame_and_the_newest_past_frame_in_slot_1(name):
    cfg = get_preset(name)
    offsets = frame_offsets(cfg)
    assert len(offsets) == cfg.num_frames == cfg.head.num_frames
    assert sorted(offsets) == list(range(-cfg.num_past_frames, cfg.num_future_frames + 1))
    if cfg.head.memory is not None:                   # SparseBEV++: the current frame only
        assert offsets == (0,)
        return
    assert offsets[:2] == (0, -1)                     # velocity divisor: time to slot 1 > 0


@pytest.mark.parametrize('layout, past, future, match', [
    ('past', 3, 1, 'future frames need frame_layout'),
    ('future_interleaved', 3, 2, 'as many past as future'),
    ('sideways', 3, 0, "unknown frame_layout 'sideways'"),
])
def test_layouts_that_do_not_fit_their_frame_counts_are_typed_input_errors(layout, past, future,
                                                                           match):
    cfg = with_frames(get_preset('tiny'), layout, past, future)
    with pytest.raises(FrameLayoutError, match=match) as info:
        frame_offsets(cfg)
    assert isinstance(info.value, InputError)


def test_needs_future_frames_names_exactly_the_future_presets():
    assert {n for n in PRESET_NAMES if needs_future_frames(get_preset(n))} == set(FUTURE_PRESET_NAMES)
    assert set(FUTURE_PRESET_NAMES) == {'vov99_dd3d_1600x640_trainval_future',
                                        'vit_eva02_1600x640_trainval_future'}
    # a non-past layout is refused by a stream even without future frames
    assert needs_future_frames(dataclasses.replace(get_preset('tiny'), frame_layout='future_blocked'))
