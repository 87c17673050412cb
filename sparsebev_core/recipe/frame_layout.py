"""The frame layout rule, written once: which frame each of the T frame slots holds.

A sample (and the head's input) is T frames of six cameras, frame-major. Slot 0 is the
current frame; the others hold past frames (offset -k = k frame steps back) and, for the two
test-server presets, future frames (+k). ``ModelConfig.frame_layout`` names the order:

* ``past``: ``(0, -1, ..., -P)``;
* ``future_blocked`` (VoVNet-99 preset): ``(0, -1..-P, +1..+F)``;
* ``future_interleaved`` (EVA02 preset): ``(0, -1, +1, -2, +2, ...)``, as many past as future.

Slot 1 is always the newest past frame, so the velocity divisor (time to slot 1) stays
positive. The dataset orders its frames by :func:`frame_offsets`; the streaming detector and
online evaluation refuse configs for which :func:`needs_future_frames` holds, both through
:func:`check_streamable`.
"""
from __future__ import annotations

from ..errors import InputError
from .config import ModelConfig


class FrameLayoutError(InputError):
    """A config whose ``frame_layout`` does not fit its past / future frame counts."""


def frame_offsets(cfg: ModelConfig) -> tuple[int, ...]:
    """Frame slot -> frame offset from the current frame (0), in frame steps (-k past, +k future).

    Raises :class:`FrameLayoutError` for an unknown layout or one that does not fit
    ``cfg.num_past_frames`` / ``cfg.num_future_frames``.
    """
    past = [-k for k in range(1, cfg.num_past_frames + 1)]
    future = [k for k in range(1, cfg.num_future_frames + 1)]
    if cfg.frame_layout == 'past':
        if future:
            raise FrameLayoutError(
                f'{cfg.name}: frame_layout "past" with num_future_frames={cfg.num_future_frames}; '
                f'future frames need frame_layout future_blocked or future_interleaved')
        return (0, *past)
    if cfg.frame_layout == 'future_blocked':
        return (0, *past, *future)
    if cfg.frame_layout == 'future_interleaved':
        if len(past) != len(future):
            raise FrameLayoutError(f'{cfg.name}: future_interleaved needs as many past as future '
                                   f'frames (got {len(past)} and {len(future)})')
        return (0, *[o for pair in zip(past, future) for o in pair])
    raise FrameLayoutError(f'{cfg.name}: unknown frame_layout {cfg.frame_layout!r}; choose past, '
                           f'future_blocked or future_interleaved')


def needs_future_frames(cfg: ModelConfig) -> bool:
    """True when the config is not a past-only layout: a stream (feature cache) cannot run it."""
    return cfg.num_future_frames > 0 or cfg.frame_layout != 'past'


def check_streamable(cfg: ModelConfig) -> None:
    """The one "a stream cannot see the future" rule: :class:`FrameLayoutError` for a config
    that needs future frames (the ``*_future`` presets), which a feature cache fed frame by
    frame (``StreamingDetector``, online evaluation) cannot provide."""
    if needs_future_frames(cfg):
        raise FrameLayoutError(
            f'preset {cfg.name!r} uses {cfg.num_future_frames} future frames (frame layout '
            f'{cfg.frame_layout!r}); a stream cannot see the future. Run it offline on recorded '
            f'data instead: sparsebev eval --mode offline --preset {cfg.name} ...')
