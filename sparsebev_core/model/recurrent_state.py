"""What SparseBEV++ carries from one frame to the next, and how it moves with the ego vehicle.

docs/official_model.md section 13, docs/head.md "The recurrent head". The official code keeps
this state inside the head module (``propagate_*``, ``memory_*``, ``metas``); here it is an
explicit value: ``RecurrentSparseBEVHead.forward(..., state, motion)`` takes the state after the
previous frame and returns the state after this one, so that streaming, teacher forcing and an
exported graph (state as inputs and outputs) make the same call.

Shapes: ``B`` batch, ``K`` propagated queries (500), ``M`` memory rows (a multiple of the
rows pushed per frame, at most the memory length, 1024), ``C`` embedding channels (256).
Boxes are in the query layout ``[x^, y^, z^, log dx, log dy, log dz, sin, cos, vx, vy]``
(centres normalised over ``pc_range``, velocity in m/s).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from ..errors import InputError

Tensor = torch.Tensor


class RecurrentStateError(InputError):
    """A recurrent state or ego motion whose shapes or types do not fit the head."""


@dataclass(frozen=True)
class RecurrentState:
    """The recurrent state after a frame, all in that frame's model (lidar) frame.

    propagated_feat ``[B, K, C]`` float32 (the model's dtype): last-layer features of the K queries with the
    highest class logit, best first; propagated_bbox ``[B, K, 10]`` their boxes (query layout,
    not yet moved to the next frame); memory_feat ``[B, M, C]`` / memory_bbox ``[B, M, 10]``:
    the memory queue, newest frame's rows first (row j is ``1 + j // len_per_frame`` frames
    old when the next frame reads it). A stream starts from ``None`` (no history).
    """
    propagated_feat: Tensor
    propagated_bbox: Tensor
    memory_feat: Tensor
    memory_bbox: Tensor

    @property
    def batch_size(self) -> int:
        return int(self.propagated_feat.shape[0])

    @property
    def memory_rows(self) -> int:
        """M, the rows in the memory queue."""
        return int(self.memory_feat.shape[1])

    def to(self, device: torch.device | str) -> 'RecurrentState':
        """The same state on ``device``."""
        return RecurrentState(*(t.to(device) for t in self.tensors()))

    def tensors(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(propagated_feat, propagated_bbox, memory_feat, memory_bbox): the order of the fields."""
        return self.propagated_feat, self.propagated_bbox, self.memory_feat, self.memory_bbox

    def check(self, batch: int, embed_dims: int, num_propagated: int, memory_len: int) -> None:
        """Raise ``RecurrentStateError`` unless the shapes fit a head with these sizes."""
        expected = dict(propagated_feat=(batch, num_propagated, embed_dims),
                        propagated_bbox=(batch, num_propagated, 10))
        rows = self.memory_rows
        expected.update(memory_feat=(batch, rows, embed_dims), memory_bbox=(batch, rows, 10))
        for name, shape in expected.items():
            value = getattr(self, name)
            if not isinstance(value, Tensor) or tuple(value.shape) != shape:
                got = list(value.shape) if isinstance(value, Tensor) else type(value).__name__
                raise RecurrentStateError(f'recurrent state: {name} must be {list(shape)}, got {got}')
            if value.dtype != self.propagated_feat.dtype or not value.is_floating_point():
                raise RecurrentStateError(f'recurrent state: {name} must be floating point like '
                                          f'propagated_feat ({self.propagated_feat.dtype}), got {value.dtype}')
        if not 0 < rows <= memory_len:
            raise RecurrentStateError(f'recurrent state: the memory must hold 1..{memory_len} rows, '
                                      f'got {rows}')


@dataclass(frozen=True)
class EgoMotion:
    """How the model frame moved between the previous frame and this one.

    elapsed ``[B]`` float64 seconds (this frame's stamp minus the previous one's);
    prev_to_current ``[B, 4, 4]`` float32: previous model frame -> current model frame.
    """
    elapsed: Tensor
    prev_to_current: Tensor

    @classmethod
    def from_poses(cls, prev_stamp: float | Sequence[float] | Tensor | np.ndarray,
                   stamp: float | Sequence[float] | Tensor | np.ndarray,
                   prev_pose: Tensor | np.ndarray, pose: Tensor | np.ndarray) -> 'EgoMotion':
        """From two model-frame -> world poses ``[B, 4, 4]`` (or ``[4, 4]``) and stamps (s).

        The relative transform ``inv(pose) @ prev_pose`` is formed in float64 and only then
        cast to float32, so that world coordinates of 1e5 m (UTM) lose nothing; the official
        code multiplies float32 world poses instead (:meth:`official`; docs/official_model.md, quirk 25).
        """
        prev_pose = torch.as_tensor(prev_pose, dtype=torch.float64)
        pose = torch.as_tensor(pose, dtype=torch.float64)
        prev_to_current = torch.linalg.solve(pose, prev_pose)                 # [B, 4, 4] float64
        return cls._build(prev_stamp, stamp, prev_to_current.to(torch.float32))

    @classmethod
    def official(cls, prev_stamp: float | Sequence[float] | Tensor | np.ndarray,
                 stamp: float | Sequence[float] | Tensor | np.ndarray,
                 prev_ego_pose: Tensor | np.ndarray, ego_pose_inv: Tensor | np.ndarray
                 ) -> 'EgoMotion':
        """The official product (docs/official_model.md, quirk 25): the float32 world poses
        ``ego_pose_inv(current) @ ego_pose(previous)`` (lidar -> global and its inverse, as the
        official dataset gives them), multiplied in float32."""
        prev_ego_pose = torch.as_tensor(prev_ego_pose, dtype=torch.float32)
        ego_pose_inv = torch.as_tensor(ego_pose_inv, dtype=torch.float32)
        return cls._build(prev_stamp, stamp, ego_pose_inv @ prev_ego_pose)    # [B, 4, 4] float32

    @classmethod
    def _build(cls, prev_stamp, stamp, prev_to_current: Tensor) -> 'EgoMotion':
        elapsed = (torch.as_tensor(stamp, dtype=torch.float64).reshape(-1)
                   - torch.as_tensor(prev_stamp, dtype=torch.float64).reshape(-1))   # [B]
        prev_to_current = prev_to_current.reshape(-1, 4, 4)
        return cls(elapsed=elapsed, prev_to_current=prev_to_current)

    def to(self, device: torch.device | str) -> 'EgoMotion':
        """The same motion on ``device`` (``elapsed`` stays float64)."""
        return EgoMotion(self.elapsed.to(device), self.prev_to_current.to(device))

    def check(self, batch: int) -> None:
        """Raise ``RecurrentStateError`` unless the shapes fit a batch of ``batch``."""
        if tuple(self.elapsed.shape) != (batch,) or not self.elapsed.is_floating_point():
            raise RecurrentStateError(f'ego motion: elapsed must be float seconds [{batch}], got '
                                      f'{self.elapsed.dtype} {list(self.elapsed.shape)}')
        if tuple(self.prev_to_current.shape) != (batch, 4, 4) or not self.prev_to_current.is_floating_point():
            raise RecurrentStateError(f'ego motion: prev_to_current must be float [{batch}, 4, 4], got '
                                      f'{self.prev_to_current.dtype} {list(self.prev_to_current.shape)}')


def warp_boxes(boxes: Tensor, motion: EgoMotion, pc_range: Tensor) -> Tensor:
    """Move query boxes ``[B, K, 10]`` of the previous frame into the current one.

    docs/official_model.md, quirk 24: first each box moves on at its own constant velocity,
    ``x, y += v dt`` (in the previous frame's axes, ``dt`` cast to float32), then the rigid
    ego motion maps the centre (w = 1), the heading vector ``(cos, sin)`` and the velocity
    (w = 0) into the current frame. pc_range ``[6]`` float32 (the head's parameter)
    normalises the centres. Returns ``[B, K, 10]``, query layout.
    """
    lo, span = pc_range[:3], pc_range[3:6] - pc_range[:3]                    # [3], [3]
    center = boxes[..., 0:3] * span + lo                                      # [B, K, 3] metres
    velocity = boxes[..., 8:10]                                               # [B, K, 2] m/s
    dt = motion.elapsed.to(velocity.dtype)[:, None, None]                     # [B, 1, 1]
    center = torch.cat([center[..., 0:2] + velocity * dt, center[..., 2:3]], dim=-1)
    zeros = torch.zeros_like(center[..., :2])                                 # [B, K, 2]
    point = torch.cat([center, torch.ones_like(center[..., :1])], dim=-1)     # [B, K, 4] w = 1
    heading = torch.cat([boxes[..., 6:8].flip(-1), zeros], dim=-1)           # [B, K, 4] (cos, sin, 0, 0)
    motion_vec = torch.cat([velocity, zeros], dim=-1)                         # [B, K, 4] w = 0
    transform = motion.prev_to_current.to(boxes.dtype)[:, None]              # [B, 1, 4, 4]
    moved = transform @ torch.stack([point, heading, motion_vec], dim=-1)     # [B, K, 4, 3]
    out = boxes.clone()
    out[..., 0:3] = (moved[..., :3, 0] - lo) / span
    out[..., 6:8] = moved[..., :2, 1].flip(-1)                                # (sin, cos)
    out[..., 8:10] = moved[..., :2, 2]
    return out                                                                # [B, K, 10]
