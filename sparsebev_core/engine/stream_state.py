"""The recurrent state each batch slot carries through streaming-video training (SparseBEV++).

Between two training steps a slot keeps what its previous frame left: the model's
``RecurrentState`` (fixed form: every slot has ``memory_len`` rows and its own count of valid
ones, so slots at different points of their segments share one batch) and that frame's stamp
and model -> world pose. Before a step (:meth:`SlotStates.before_step`):

* a slot whose frame starts a segment is cleared (no memory rows, no previous frame: the
  head uses its padding queries and the no-memory path of docs/official_model.md, quirk 29),
  so nothing crosses from one segment to the next (the official code clears nothing in
  training and lets the time gate drop the propagated queries only: docs/official_model.md
  13.8);
* the ego motion is formed from the two poses (``EgoMotion.from_poses``: the augmented frames,
  since each pose carries its frame's BEV augmentation).

After it (:meth:`SlotStates.after_step`) the next state is kept *detached*: no gradient flows
from one step into the previous one (no back-propagation through time, as the official
``update_memory``). :meth:`state_dict` / :meth:`load_state_dict` put it in the training
checkpoint, so that a resumed run continues every slot exactly where it stopped (the state
cannot be rebuilt: it was computed by weights that no longer exist).
"""
from __future__ import annotations

import torch

from ..model.recurrent_state import EgoMotion, RecurrentState, RecurrentStateError
from ..recipe.config import HeadConfig
from .train_state import TrainingCheckpointError

Tensor = torch.Tensor


class SlotStates:
    """The carried state of this process's ``batch`` slots (see the module docstring)."""

    def __init__(self, head: HeadConfig, batch: int, device: torch.device | str = 'cpu'):
        memory = head.memory
        self.device = torch.device(device)
        self.state = RecurrentState.empty(batch, memory.num_propagated, head.embed_dims,
                                          memory.memory_len, device=self.device)
        self.stamp = torch.zeros(batch, dtype=torch.float64)                    # [B] s
        self.pose = torch.eye(4, dtype=torch.float64).repeat(batch, 1, 1)      # [B, 4, 4]

    @property
    def batch(self) -> int:
        return self.state.batch_size

    def before_step(self, segment_start: Tensor, stamp: Tensor, pose: Tensor
                    ) -> tuple[RecurrentState, EgoMotion]:
        """The state and motion the model starts this step from.

        segment_start ``[B]`` bool, stamp ``[B]`` float64 s, pose ``[B, 4, 4]`` float64 (this
        frame's augmented model frame -> world). A starting slot gets an empty state and a
        still motion (stamp and pose of its own frame)."""
        start = torch.as_tensor(segment_start, dtype=torch.bool).reshape(self.batch)        # [B]
        stamp = torch.as_tensor(stamp, dtype=torch.float64).reshape(self.batch)
        pose = torch.as_tensor(pose, dtype=torch.float64).reshape(self.batch, 4, 4)
        on_device = start.to(self.device)
        keep = ~on_device[:, None, None]                                                  # [B, 1, 1]
        state = RecurrentState(*(torch.where(keep, t, 0.0) for t in self.state.tensors()),
                               memory_rows=torch.where(on_device, 0, self.state.memory_rows))
        prev_stamp = torch.where(start, stamp, self.stamp)
        prev_pose = torch.where(start[:, None, None], pose, self.pose)
        return state, EgoMotion.from_poses(prev_stamp, stamp, prev_pose, pose)

    def after_step(self, next_state: RecurrentState, stamp: Tensor, pose: Tensor) -> None:
        """Keep the state this step returned (detached) with its frame's stamp and pose."""
        self.state = RecurrentState(*(t.detach() for t in next_state.tensors()),
                                    memory_rows=next_state.memory_rows.detach())
        self.stamp = torch.as_tensor(stamp, dtype=torch.float64).reshape(self.batch).clone()
        self.pose = torch.as_tensor(pose, dtype=torch.float64).reshape(self.batch, 4, 4).clone()

    def state_dict(self) -> dict:
        """Plain CPU tensors (a ``weights_only`` checkpoint loads them)."""
        names = ('propagated_feat', 'propagated_bbox', 'memory_feat', 'memory_bbox')
        out = {name: t.detach().cpu() for name, t in zip(names, self.state.tensors())}
        out.update(memory_rows=self.state.memory_rows.cpu(), stamp=self.stamp, pose=self.pose)
        return out

    def load_state_dict(self, saved: dict) -> None:
        """Restore :meth:`state_dict`; a different batch or model size is a typed error."""
        try:
            state = RecurrentState(saved['propagated_feat'], saved['propagated_bbox'],
                                   saved['memory_feat'], saved['memory_bbox'],
                                   memory_rows=saved['memory_rows'])
            mine = self.state
            state.check(mine.batch_size, mine.propagated_feat.shape[-1],
                        mine.propagated_feat.shape[1], mine.memory_rows_allocated)
        except (KeyError, TypeError, ValueError, RecurrentStateError) as error:
            raise TrainingCheckpointError(f'the saved streaming state does not fit this run: '
                                          f'{error}') from None
        self.state = state.to(self.device)
        self.stamp = saved['stamp'].to(torch.float64)
        self.pose = saved['pose'].to(torch.float64)
