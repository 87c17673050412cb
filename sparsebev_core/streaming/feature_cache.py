"""Preallocated feature slots: each cached frame's FPN output is written once, read by index.

Per pyramid level one buffer ``[S, N, C, h_l, w_l]`` (S slots x N cameras), allocated on the
first store and grown by doubling up to ``max_slots`` (a 64-frame r50 cache is ~6 GB, so it
is never allocated up front). A frame owns one slot from :meth:`FeatureSlots.store` until
:meth:`FeatureSlots.release`; a head reads the T frames it needs by slot index
(``runtime.gather_slots`` or a kernel's frame-index table): nothing is concatenated per step.
Buffers keep their storage (and ``data_ptr``) between steps; only a growth reallocates them.

``channels_last=True`` lays each buffer out as ``[S, N, h_l, w_l, C]`` in memory (the logical
shape stays ``[S, N, C, h_l, w_l]``): the layout the CUDA sampling kernel reads, and what a
channels-last backbone produces, so the store is a straight copy. The values are the same
either way; on the CPU the torch sampling path reads the standard layout faster, so the
detector picks channels-last for CUDA devices only (``test_fast_path.py`` checks the outputs
are bit-identical on the CPU).
"""
from __future__ import annotations

from typing import Sequence

import torch

Tensor = torch.Tensor


class FeatureSlots:
    """Per-level buffers ``[S, N, C, h_l, w_l]`` with one slot per cached frame.

    Args:
        max_slots: the most frames held at once (the detector's ``max_cached_frames`` plus
            the frame being stepped).
        initial_slots: slots of the first allocation (then doubled as needed).
        channels_last: buffers with the channels innermost in memory (module docstring).
    """

    def __init__(self, max_slots: int, initial_slots: int = 1, channels_last: bool = False) -> None:
        if max_slots < 1 or initial_slots < 1:
            raise ValueError(f'max_slots and initial_slots must be >= 1, got {max_slots}, {initial_slots}')
        self.max_slots = int(max_slots)
        self.initial_slots = min(int(initial_slots), self.max_slots)
        self.channels_last = bool(channels_last)
        self._levels: list[Tensor] = []
        self._free: list[int] = []

    @property
    def levels(self) -> list[Tensor]:
        """The buffers, per level ``[S, N, C, h_l, w_l]`` (empty before the first store)."""
        return self._levels

    @property
    def capacity(self) -> int:
        """S, the slots allocated so far."""
        return int(self._levels[0].shape[0]) if self._levels else 0

    @property
    def num_used(self) -> int:
        return self.capacity - len(self._free)

    @property
    def nbytes(self) -> int:
        """Bytes of the allocated buffers (all S slots, used or free)."""
        return sum(level.numel() * level.element_size() for level in self._levels)

    @property
    def bytes_per_slot(self) -> int:
        """Bytes of one frame's features (0 before the first store)."""
        return self.nbytes // self.capacity if self._levels else 0

    def store(self, features: Sequence[Tensor]) -> int:
        """Copy one frame's features (per level ``[N, C, h_l, w_l]``) into a free slot; returns it.
        When every slot is free, features of another shape (another camera count) reallocate
        the buffers; otherwise they must fit the slots."""
        if self._levels and self.num_used == 0 and \
                [tuple(b.shape[1:]) for b in self._levels] != [tuple(f.shape) for f in features]:
            self._levels = []                          # a new rig (camera count) after a reset
        if not self._levels:
            self._levels = [self._empty(f, self.initial_slots, tuple(f.shape)) for f in features]
            self._free = list(range(self.initial_slots))
        self._check_shapes(features)
        if not self._free:
            self._grow()
        slot = self._free.pop(0)                                   # lowest free slot first
        for buffer, feature in zip(self._levels, features):
            buffer[slot].copy_(feature)                            # [N, C, h_l, w_l]
        return slot

    def release(self, slot: int) -> None:
        """Give a slot back (its frame left the cache)."""
        if not 0 <= slot < self.capacity or slot in self._free:
            raise ValueError(f'slot {slot} is not in use')
        self._free.append(slot)
        self._free.sort()

    def clear(self) -> None:
        """Every slot free again; the buffers are kept for the next frames."""
        self._free = list(range(self.capacity))

    def _grow(self) -> None:
        old = self.capacity
        if old >= self.max_slots:
            raise RuntimeError(f'all {self.max_slots} feature slots are in use: the cache holds '
                               'more frames than it was sized for')
        new = min(2 * old, self.max_slots)
        grown = []
        for buffer in self._levels:
            bigger = self._empty(buffer, new, tuple(buffer.shape[1:]))  # [S', N, C, h_l, w_l]
            bigger[:old].copy_(buffer)
            grown.append(bigger)
        self._levels = grown
        self._free.extend(range(old, new))

    def _empty(self, like: Tensor, slots: int, shape: tuple[int, ...]) -> Tensor:
        """An uninitialised buffer ``[slots, N, C, h, w]`` (channels innermost if asked)."""
        if not self.channels_last:
            return like.new_empty((slots, *shape))
        n, c, h, w = shape
        return like.new_empty((slots, n, h, w, c)).permute(0, 1, 4, 2, 3)   # [S, N, C, h, w] view

    def _check_shapes(self, features: Sequence[Tensor]) -> None:
        expected = [tuple(b.shape[1:]) for b in self._levels]
        got = [tuple(f.shape) for f in features]
        if got != expected:
            raise ValueError(f'features per level {got} do not fit the cache slots {expected}')
