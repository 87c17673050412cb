"""The history rule, written once: which cached frames fill the T-1 history slots."""
from __future__ import annotations

from typing import Sequence

import numpy as np


def select_history(past_stamps: Sequence[float], current_stamp: float, num_slots: int,
                   spacing: float) -> list[int | None]:
    """Choose the cached frames for the history slots 1..T-1.

    Rule (chained nearest neighbour): slot k takes, among the frames strictly older than the
    frame chosen for slot k-1 (slot 0 = the current frame), the one whose stamp is nearest to
    ``stamp(slot k-1) - spacing`` (ties go to the newer frame). When no older frame is left,
    the slot repeats the previous slot's frame, i.e. the oldest available frame is duplicated;
    with no history at all every slot is the current frame (official scene-start behaviour).

    This equals the official test-time selection (the previous T-1 keyframes, clamped to the
    first keyframe of the scene) whenever consecutive frames are at least 2/3 of ``spacing``
    apart, e.g. 2 Hz keyframes with the nuScenes jitter; on a 12 Hz stream it takes every
    sixth frame. A slot never holds a frame newer than the slot before it. Because the choice
    only moves forward as time advances, frames older than the oldest chosen one will never
    be chosen again (the cache evicts them).

    Args:
        past_stamps: stamps (s) of the cached frames, any order.
        current_stamp: stamp of the current frame.
        num_slots: T - 1.
        spacing: target time between consecutive slots (s).
    Returns:
        per slot, an index into ``past_stamps`` or None for the current frame.
    """
    stamps = np.asarray(past_stamps, dtype=np.float64)
    chosen: list[int | None] = []
    previous: int | None = None
    previous_stamp = float(current_stamp)
    for _ in range(num_slots):
        older = np.nonzero(stamps < previous_stamp)[0]
        if len(older):
            distance = np.abs(stamps[older] - (previous_stamp - spacing))
            best = distance.min()
            ties = older[distance <= best + 1e-9]
            previous = int(ties[np.argmax(stamps[ties])])       # the newer one of equals
            previous_stamp = float(stamps[previous])
        chosen.append(previous)
    return chosen
