"""The order of streaming-video training (SparseBEV++, docs/training.md "Streaming training").

The recurrent model learns from frames in time order, one frame per step, its state carried
from step to step. So the training data is not a shuffled set of samples but a set of
*segments*: each scene's keyframes in time order, cut into ``split_num`` consecutive pieces
(the official ``seq_split_num``; :func:`scene_segments`). Every slot of the global batch walks
one segment a frame per step and, when it ends, starts the next segment of its own infinite,
seeded list (:class:`SegmentWalk`, the official ``InfiniteGroupEachSampleInBatchSampler``):

* the segments are drawn as an endless sequence of seeded permutations of all segments, the
  same in every process; global slot ``s`` of a global batch of ``G`` takes the elements
  ``s, s + G, s + 2G, ...`` of it, so no two slots walk the same draw;
* shuffling changes which segment comes next, never the order inside a segment;
* there are no epochs: a run is a number of iterations (docs/official_model.md 13.5).

Where every slot is at iteration ``i`` follows from (segments, ``G``, seed) alone, so a resumed
run rebuilds its data order without reading anything (:meth:`SegmentWalk.steps`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator, Sequence

import torch

from ..errors import InputError


class SegmentError(InputError):
    """Segments that cannot feed a streaming run (too few for the batch, an empty one)."""


def scene_segments(infos: Sequence[dict], split_num: int) -> list[list[int]]:
    """Indices of ``infos`` grouped by ``scene_token``, each scene in time order
    (``timestamp``), cut into ``split_num`` consecutive segments of ``ceil(n / split_num)``
    frames (the last one shorter when ``n`` does not divide; a short scene gives fewer).

    Scenes keep the order of their first info; the official code finds scene starts by an empty
    ``sweeps`` list in time-sorted infos, which gives the same scenes for nuScenes.
    """
    if int(split_num) < 1:
        raise SegmentError(f'seq_split_num must be >= 1, got {split_num!r}')
    scenes: dict[str, list[int]] = {}
    for index, info in enumerate(infos):
        scenes.setdefault(info['scene_token'], []).append(index)
    segments = []
    for indices in scenes.values():
        indices = sorted(indices, key=lambda i: infos[i]['timestamp'])
        length = math.ceil(len(indices) / split_num)
        segments.extend(indices[start:start + length] for start in range(0, len(indices), length))
    return segments


@dataclass(frozen=True)
class StreamStep:
    """What one batch slot reads at one iteration: ``index`` into the dataset and whether it
    starts a segment (the slot's recurrent state is cleared before it)."""
    index: int
    segment_start: bool


class SegmentWalk:
    """Every global batch slot's walk through the segments (see the module docstring).

    segments: dataset indices per segment (:func:`scene_segments`); num_slots: the global batch
    ``G`` (total batch size over all processes); seed: the same in every process.
    """

    def __init__(self, segments: Sequence[Sequence[int]], num_slots: int, seed: int = 0):
        self.segments = [list(s) for s in segments]
        self.num_slots = int(num_slots)
        self.seed = int(seed)
        if any(not s for s in self.segments):
            raise SegmentError('a segment without frames')
        if len(self.segments) < self.num_slots:
            raise SegmentError(f'{len(self.segments)} segments cannot feed a global batch of '
                               f'{self.num_slots} slots (each slot walks its own segment): use a '
                               'smaller batch, more scenes or a larger seq_split_num')

    def segment_order(self, slot: int) -> Iterator[int]:
        """The segments slot ``slot`` walks, in order (endless)."""
        generator = torch.Generator().manual_seed(self.seed)
        position = 0                                     # index in the endless draw
        while True:
            for segment in torch.randperm(len(self.segments), generator=generator).tolist():
                if position % self.num_slots == slot:
                    yield segment
                position += 1

    def steps(self, slot: int, start: int = 0) -> Iterator[StreamStep]:
        """Slot ``slot``'s steps from iteration ``start`` on (endless). A walk resumed inside a
        segment continues it; ``segment_start`` marks only the first frame of a segment."""
        done = 0
        for segment in self.segment_order(slot):
            frames = self.segments[segment]
            if done + len(frames) <= start:              # finished before ``start``: skip
                done += len(frames)
                continue
            for k in range(max(start - done, 0), len(frames)):
                yield StreamStep(frames[k], k == 0)
            done += len(frames)

    def batches(self, slots: Sequence[int], start: int = 0) -> Iterator[list[StreamStep]]:
        """The steps of ``slots`` (this process's share of the global batch), one list per
        iteration from ``start`` on (endless)."""
        walks = [self.steps(slot, start) for slot in slots]
        while True:
            yield [next(walk) for walk in walks]


def process_slots(rank: int, per_process: int) -> range:
    """The global batch slots of process ``rank`` (``per_process`` each, in rank order)."""
    return range(rank * per_process, (rank + 1) * per_process)
