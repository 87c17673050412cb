"""The recurrent state of one SparseBEV++ stream, and what a reset does to it.

A recurrent model (the ``*_memory`` presets) keeps no cache of past features: what it carries
from frame to frame is its ``RecurrentState`` (propagated queries, memory queue) plus the stamp
and the model-frame pose of the frame that produced it, from which the next frame's ego motion
and time gate follow. ``StreamingDetector`` holds one :class:`RecurrentMemory` per stream and
clears it by the same reset rules as v1's feature cache (``sparsebev_core.resets``); what a
reset does is ``StreamingOptions.recurrent_reset``:

* ``'clear'`` (ours, the default): everything is forgotten; the next frame starts like a
  stream's first frame (padding queries, no memory);
* ``'official'``: nothing is forgotten, as in the official code, whose head clears its memory
  only on the first test frame of the process (docs/official_model.md 13.7): the memory queue
  crosses scene boundaries and time gaps, moved by whatever motion the poses give, and only the
  2 s time gate replaces the propagated queries (docs/official_model.md, quirk 26).

The state is kept in the fixed form of the runtime seam (``RecurrentState.empty``: always
``memory_len`` rows and a valid-row count), so its size never changes: for
``r50_nuimg_704x256_memory`` (500 + 1024 rows of 256 features + 10 box values, float32) 1.6 MB
per stream (docs/streaming.md, "The recurrent state").
"""
from __future__ import annotations

import numpy as np
import torch

from ..model.recurrent_state import EgoMotion, RecurrentState, propagation_gate
from ..recipe.config import HeadConfig
from .options import RecurrentReset


class RecurrentMemory:
    """The state after the last frame of a stream, with that frame's stamp and pose.

    Args:
        head: the recurrent head's config (``HeadConfig.memory`` set).
        device: where the state lives (the runtime's device).
        rule: what :meth:`reset` does (``StreamingOptions.recurrent_reset``).
    """

    def __init__(self, head: HeadConfig, device: torch.device, rule: RecurrentReset = 'clear') -> None:
        if head.memory is None:
            raise ValueError('RecurrentMemory needs a recurrent head config (HeadConfig.memory)')
        self.head = head
        self.device = torch.device(device)
        self.rule = rule
        self.state = self._empty()
        self.stamp: float | None = None              # s, of the frame that produced the state
        self.pose: np.ndarray | None = None          # [4, 4] float64: that frame's model frame -> world

    @property
    def has_history(self) -> bool:
        """A frame has been stepped since the last clearing."""
        return self.stamp is not None

    @property
    def nbytes(self) -> int:
        """Bytes held between frames (the state's tensors; the pose and stamp are 136 bytes)."""
        return self.state.nbytes

    def motion_to(self, stamp: float, pose: np.ndarray) -> tuple[EgoMotion, torch.Tensor]:
        """The ego motion from the state's frame to the frame at ``stamp`` / ``pose`` (model
        frame -> world, float64) and the time gate ``[1]`` bool (``propagation_gate``: False
        before the first frame). Before the first frame the motion is the identity, 0 s."""
        if self.stamp is None:
            prev_stamp, prev_pose = stamp, pose
        else:
            prev_stamp, prev_pose = self.stamp, self.pose
        motion = EgoMotion.from_poses(prev_stamp, stamp, np.asarray(prev_pose, np.float64)[None],
                                      np.asarray(pose, np.float64)[None]).to(self.device)
        gate = propagation_gate(motion.elapsed, self.head.memory.max_time_interval,
                                self.state.has_previous_frame())
        return motion, gate

    def advance(self, state: RecurrentState, stamp: float, pose: np.ndarray) -> None:
        """The frame at ``stamp`` / ``pose`` produced ``state`` (fixed form)."""
        self.state = state
        self.stamp, self.pose = float(stamp), np.array(pose, dtype=np.float64)

    def reset(self) -> None:
        """A reset of the stream: by ``rule``, forget everything ('clear') or nothing ('official')."""
        if self.rule == 'clear':
            self.state = self._empty()
            self.stamp = self.pose = None

    def _empty(self) -> RecurrentState:
        memory = self.head.memory
        return RecurrentState.empty(1, memory.num_propagated, self.head.embed_dims,
                                    memory.memory_len, self.device)
