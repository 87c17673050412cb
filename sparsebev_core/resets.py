"""Temporal-memory resets: the one vocabulary of reason keys, and the time rules.

A streaming detector forgets its history (cached features of past frames) for a reason.
Every layer (``StreamingDetector.last_step``, ``Detections``, the ROS pipeline's counters,
the node's diagnostics, the replay summary, the tests) names that reason with one of the
stable keys below, plus a human-readable detail.

Who decides:

| key | rule | decided by |
|---|---|---|
| ``time_backwards`` | a frame stamp earlier than the previous step's (a bag loop) | the detector (:func:`time_reset`) |
| ``time_gap`` | more than ``max_time_gap`` seconds since the previous step | the detector (:func:`time_reset`) |
| ``rig_changed`` | the frame's camera names (or count) differ from the cached frames' | the detector (``StreamingDetector``) |
| ``explicit`` | ``reset()`` called (the node's ``~/reset`` service) | the caller |
| ``camera_time_spread`` | the six camera stamps spread more than allowed | the ROS pipeline |
| ``image_size_changed`` | a camera's image size changed | the ROS pipeline |
| ``invalid_frame`` | the detector refused a frame | the ROS pipeline |
| ``clock_jump`` | the node's ROS clock jumped back (``/clock`` of a bag played again or looped) | the ROS node |

The time rules live here and only here: ``StreamingDetector`` applies them (through
:class:`ResetPolicy`) to every frame it steps and reports the key in ``Detections.reset_reason``,
so a caller never checks stamps for them again.
"""
from __future__ import annotations

from dataclasses import dataclass

TIME_BACKWARDS = 'time_backwards'
TIME_GAP = 'time_gap'
EXPLICIT = 'explicit'
CAMERA_TIME_SPREAD = 'camera_time_spread'
IMAGE_SIZE_CHANGED = 'image_size_changed'
INVALID_FRAME = 'invalid_frame'
RIG_CHANGED = 'rig_changed'
CLOCK_JUMP = 'clock_jump'

DETECTOR_RESETS: tuple[str, ...] = (TIME_BACKWARDS, TIME_GAP, RIG_CHANGED)
"""Keys the detector decides itself from the frames (stamps, camera names)."""
CALLER_RESETS: tuple[str, ...] = (EXPLICIT, CAMERA_TIME_SPREAD, IMAGE_SIZE_CHANGED, INVALID_FRAME,
                                  CLOCK_JUMP)
"""Keys a caller passes to ``reset(reason)``."""
RESET_REASONS: tuple[str, ...] = DETECTOR_RESETS + CALLER_RESETS


@dataclass(frozen=True)
class Reset:
    """Why the memory was cleared: a stable ``key`` (one of ``RESET_REASONS`` for our own
    rules) and a human-readable ``detail``."""
    key: str
    detail: str = ''


def time_reset(last_stamp: float | None, stamp: float, max_time_gap: float) -> Reset | None:
    """The time rules: a reset when ``stamp`` is earlier than ``last_stamp`` or more than
    ``max_time_gap`` seconds after it; None otherwise (and for the first frame,
    ``last_stamp=None``). An equal stamp is no reset (the same frame stepped again)."""
    if last_stamp is None:
        return None
    if stamp < last_stamp:
        return Reset(TIME_BACKWARDS, f'time went backwards by {last_stamp - stamp:.3f} s '
                                     f'({stamp:.6f} s after {last_stamp:.6f} s; a bag loop?)')
    if stamp - last_stamp > max_time_gap:
        return Reset(TIME_GAP, f'gap of {stamp - last_stamp:.3f} s since the previous frame '
                               f'exceeds max_time_gap {max_time_gap:.3f} s')
    return None


class ResetPolicy:
    """The memory rules of one stream: a requested reset, else the time rules.

    ``request(reason)`` when the caller resets; ``due(stamp)`` before a step says why the
    memory must be cleared first (the requested reset, else :func:`time_reset`; None: keep
    it), without changing anything, so that a frame refused afterwards loses nothing;
    ``advance(stamp)`` once the frame is used.
    """

    def __init__(self, max_time_gap: float) -> None:
        if max_time_gap <= 0:
            raise ValueError(f'max_time_gap must be > 0, got {max_time_gap}')
        self.max_time_gap = float(max_time_gap)
        self.last_stamp: float | None = None
        self._requested: Reset | None = None

    def request(self, reason: str = EXPLICIT, detail: str = '') -> None:
        """A reset asked for by the caller: reported by the next step."""
        self._requested = Reset(reason, detail or f'reset({reason!r}) called')
        self.last_stamp = None

    def due(self, stamp: float) -> Reset | None:
        """Why the memory must be cleared before stepping ``stamp`` (None: it need not be)."""
        return self._requested or time_reset(self.last_stamp, stamp, self.max_time_gap)

    def advance(self, stamp: float) -> None:
        """``stamp`` was stepped: it is the reference of the time rules from now on."""
        self.last_stamp, self._requested = float(stamp), None
