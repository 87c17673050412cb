"""A baseline tracker: greedy centre-distance association of detections from frame to frame.

What the track IDs of a SparseBEV++ stream (``streaming.track_ids``) are measured against
(``bench/tracking.py``, docs/tracking.md): the same detections, associated without the model,
in the global frame, the way CenterPoint's tracker associates nuScenes detections:

* per class: a detection continues only a track of its own class;
* every live track's centre is predicted to the new stamp with its last velocity (x + v dt);
* pairs (detection, track) closer than the class's gate (CenterPoint's nuScenes gates, m)
  are taken nearest first, each detection and each track once;
* an unmatched detection starts a new track (a new ID; IDs are never reused); a track left
  unmatched for more than ``max_age`` frames ends; :meth:`GreedyTracker.reset` (a scene start)
  ends them all.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np

# CenterPoint's per-class association gates for nuScenes at 2 Hz (m)
CENTERPOINT_GATES: dict[str, float] = {
    'car': 4.0, 'truck': 4.0, 'bus': 5.5, 'trailer': 3.0, 'pedestrian': 1.0,
    'motorcycle': 13.0, 'bicycle': 3.0,
}


@dataclass(frozen=True)
class GreedyTrackerOptions:
    """gates: per-class distance gate (m); other classes use ``default_gate``; max_age: frames
    a track may go unmatched and still be continued."""
    gates: Mapping[str, float] = field(default_factory=lambda: dict(CENTERPOINT_GATES))
    default_gate: float = 2.0
    max_age: int = 3


@dataclass
class _Track:
    track_id: int
    name: str
    centre: np.ndarray        # [2] global x, y (m)
    velocity: np.ndarray      # [2] m/s
    stamp: float
    misses: int = 0


class GreedyTracker:
    """Track IDs for a stream of detections (global-frame centres and velocities)."""

    def __init__(self, options: GreedyTrackerOptions | None = None) -> None:
        self.options = options or GreedyTrackerOptions()
        self.tracks: list[_Track] = []
        self.next_id = 1

    def reset(self) -> None:
        """End every track (a scene start); IDs go on counting."""
        self.tracks = []

    def step(self, stamp: float, centres: np.ndarray, velocities: np.ndarray,
             names: Sequence[str]) -> np.ndarray:
        """One frame: centres ``[D, 2]`` and velocities ``[D, 2]`` (global frame), class names
        ``[D]`` -> ``[D]`` int64 track IDs."""
        centres = np.asarray(centres, np.float64).reshape(-1, 2)
        velocities = np.asarray(velocities, np.float64).reshape(-1, 2)
        ids = np.zeros(len(centres), dtype=np.int64)
        pairs = []                                   # (distance, detection, track)
        for t, track in enumerate(self.tracks):
            predicted = track.centre + track.velocity * (stamp - track.stamp)
            gate = self.options.gates.get(track.name, self.options.default_gate)
            for d in range(len(centres)):
                if names[d] != track.name:
                    continue
                distance = float(np.linalg.norm(centres[d] - predicted))
                if distance < gate:
                    pairs.append((distance, d, t))
        matched_det, matched_track = set(), set()
        for _, d, t in sorted(pairs):
            if d in matched_det or t in matched_track:
                continue
            matched_det.add(d)
            matched_track.add(t)
            track = self.tracks[t]
            track.centre, track.velocity, track.stamp, track.misses = \
                centres[d], velocities[d], float(stamp), 0
            ids[d] = track.track_id
        for t, track in enumerate(self.tracks):
            if t not in matched_track:
                track.misses += 1
        self.tracks = [t for t in self.tracks if t.misses <= self.options.max_age]
        for d in range(len(centres)):
            if d not in matched_det:
                self.tracks.append(_Track(self.next_id, names[d], centres[d], velocities[d],
                                          float(stamp)))
                ids[d] = self.next_id
                self.next_id += 1
        return ids
