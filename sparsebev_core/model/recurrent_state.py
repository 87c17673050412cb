"""What SparseBEV++ carries from one frame to the next, and how it moves with the ego vehicle.

docs/official_model.md section 13, docs/head.md "The recurrent head". The official code keeps
this state inside the head module (``propagate_*``, ``memory_*``, ``metas``); here it is an
explicit value: ``RecurrentSparseBEVHead.forward(..., state, motion)`` takes the state after the
previous frame and returns the state after this one, so that streaming, teacher forcing and an
exported graph (state as inputs and outputs) make the same call.

Shapes: ``B`` batch, ``K`` propagated queries (500), ``M`` memory rows (a multiple of the
rows pushed per frame, at most the memory length, 1024), ``R`` rows of the memory tensors (M in
the variable form, the memory length in the fixed form), ``C`` embedding channels (256).
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

    propagated_feat ``[B, K, C]`` float32 (the model's dtype): last-layer features of the K
    queries with the highest class logit, best first; propagated_bbox ``[B, K, 10]`` their boxes
    (query layout, not yet moved to the next frame); memory_feat ``[B, R, C]`` / memory_bbox
    ``[B, R, 10]``: the memory queue, newest frame's rows first (row j is ``1 + j //
    len_per_frame`` frames old when the next frame reads it).

    Two forms, one meaning:

    * **variable** (``memory_rows is None``): every one of the R = M rows holds memory (M =
      ``len_per_frame`` x frames seen, at most ``memory_len``); a stream starts from ``None``.
      The official code's form, the one the parity test sets.
    * **fixed** (``memory_rows`` ``[B]`` int64): always R = ``memory_len`` rows, of which the
      first ``memory_rows[b]`` hold memory (the rest is padding, never read: masked in the
      attention); ``memory_rows == 0`` is a stream with no previous frame
      (:meth:`empty`), whose propagated rows are never used either. The runtime seam's form
      (static shapes for exported graphs, docs/architecture.md); a call with it gives the
      variable form's results up to float rounding (``test_recurrent_head.py``).
    """
    propagated_feat: Tensor
    propagated_bbox: Tensor
    memory_feat: Tensor
    memory_bbox: Tensor
    memory_rows: Tensor | None = None

    @classmethod
    def empty(cls, batch: int, num_propagated: int, embed_dims: int, memory_len: int,
              device: torch.device | str = 'cpu', dtype: torch.dtype = torch.float32
              ) -> 'RecurrentState':
        """The fixed-form state of a stream before its first frame: zeros, no memory rows."""
        def zeros(rows: int, width: int) -> Tensor:
            return torch.zeros(batch, rows, width, device=device, dtype=dtype)
        return cls(zeros(num_propagated, embed_dims), zeros(num_propagated, 10),
                   zeros(memory_len, embed_dims), zeros(memory_len, 10),
                   torch.zeros(batch, dtype=torch.int64, device=device))

    @property
    def batch_size(self) -> int:
        return int(self.propagated_feat.shape[0])

    @property
    def memory_rows_allocated(self) -> int:
        """R, the rows of the memory tensors (valid or padding)."""
        return int(self.memory_feat.shape[1])

    @property
    def memory_rows_used(self) -> int:
        """M, the rows holding memory (a fixed-form batch: the largest count)."""
        if self.memory_rows is None:
            return self.memory_rows_allocated
        return int(self.memory_rows.max()) if self.memory_rows.numel() else 0

    @property
    def nbytes(self) -> int:
        """Bytes the state holds (its tensors)."""
        tensors = self.tensors() + (() if self.memory_rows is None else (self.memory_rows,))
        return sum(t.numel() * t.element_size() for t in tensors)

    def memory_valid(self) -> Tensor | None:
        """``[B, R]`` bool, True for the rows holding memory (None: the variable form, all rows)."""
        if self.memory_rows is None:
            return None
        rows = torch.arange(self.memory_rows_allocated, device=self.memory_rows.device)   # [R]
        return rows[None, :] < self.memory_rows[:, None]                                  # [B, R]

    def has_previous_frame(self) -> Tensor | None:
        """``[B]`` bool: the state comes from a frame (None: the variable form, always)."""
        return None if self.memory_rows is None else self.memory_rows > 0

    def padded(self, memory_len: int) -> 'RecurrentState':
        """The fixed form of a variable-form state: zero rows appended up to ``memory_len``."""
        if self.memory_rows is not None:
            return self
        b, rows = self.batch_size, self.memory_rows_allocated
        if rows > memory_len:
            raise RecurrentStateError(f'recurrent state: {rows} memory rows do not fit in {memory_len}')
        pad = [t.new_zeros(b, memory_len - rows, t.shape[-1]) for t in (self.memory_feat, self.memory_bbox)]
        return RecurrentState(self.propagated_feat, self.propagated_bbox,
                              torch.cat([self.memory_feat, pad[0]], dim=1),
                              torch.cat([self.memory_bbox, pad[1]], dim=1),
                              torch.full((b,), rows, dtype=torch.int64, device=self.memory_feat.device))

    def trimmed(self) -> 'RecurrentState | None':
        """The variable form of a fixed-form state (None: no previous frame); every batch
        element must hold the same number of rows."""
        if self.memory_rows is None:
            return self
        counts = set(self.memory_rows.tolist())
        if len(counts) != 1:
            raise RecurrentStateError(f'recurrent state: the batch holds different memory lengths '
                                      f'{sorted(counts)}; the variable form shares one')
        rows = counts.pop()
        if rows == 0:
            return None
        return RecurrentState(self.propagated_feat, self.propagated_bbox,
                              self.memory_feat[:, :rows], self.memory_bbox[:, :rows])

    def to(self, device: torch.device | str) -> 'RecurrentState':
        """The same state on ``device``."""
        rows = None if self.memory_rows is None else self.memory_rows.to(device)
        return RecurrentState(*(t.to(device) for t in self.tensors()), memory_rows=rows)

    def tensors(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(propagated_feat, propagated_bbox, memory_feat, memory_bbox): the order of the fields."""
        return self.propagated_feat, self.propagated_bbox, self.memory_feat, self.memory_bbox

    def check(self, batch: int, embed_dims: int, num_propagated: int, memory_len: int) -> None:
        """Raise ``RecurrentStateError`` unless the shapes fit a head with these sizes."""
        expected = dict(propagated_feat=(batch, num_propagated, embed_dims),
                        propagated_bbox=(batch, num_propagated, 10))
        rows = self.memory_rows_allocated
        expected.update(memory_feat=(batch, rows, embed_dims), memory_bbox=(batch, rows, 10))
        for name, shape in expected.items():
            value = getattr(self, name)
            if not isinstance(value, Tensor) or tuple(value.shape) != shape:
                got = list(value.shape) if isinstance(value, Tensor) else type(value).__name__
                raise RecurrentStateError(f'recurrent state: {name} must be {list(shape)}, got {got}')
            if value.dtype != self.propagated_feat.dtype or not value.is_floating_point():
                raise RecurrentStateError(f'recurrent state: {name} must be floating point like '
                                          f'propagated_feat ({self.propagated_feat.dtype}), got {value.dtype}')
        if self.memory_rows is None:
            if not 0 < rows <= memory_len:
                raise RecurrentStateError(f'recurrent state: the memory must hold 1..{memory_len} '
                                          f'rows, got {rows}')
            return
        if rows != memory_len:
            raise RecurrentStateError(f'recurrent state (fixed form): the memory tensors must have '
                                      f'memory_len = {memory_len} rows, got {rows}')
        if (not isinstance(self.memory_rows, Tensor) or tuple(self.memory_rows.shape) != (batch,)
                or self.memory_rows.dtype != torch.int64):
            got = (f'{self.memory_rows.dtype} {list(self.memory_rows.shape)}'
                   if isinstance(self.memory_rows, Tensor) else type(self.memory_rows).__name__)
            raise RecurrentStateError(f'recurrent state: memory_rows must be int64 [{batch}], got {got}')


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


def propagation_gate(elapsed: Tensor, max_time_interval: float,
                     has_previous_frame: Tensor | None = None) -> Tensor:
    """``[B]`` bool: the propagated queries are used (docs/official_model.md, quirk 26).

    ``|elapsed| <= max_time_interval`` compared in float64 (a backwards step passes), and
    where ``has_previous_frame`` ``[B]`` is given (a fixed-form state), only where it is True.
    The rule of the head (``RecurrentSparseBEVHead.passes_time_gate``) and of any runtime that
    takes the gate as an input (docs/architecture.md, "The recurrent head call").
    """
    gate = elapsed.to(torch.float64).abs() <= max_time_interval                  # [B]
    return gate if has_previous_frame is None else gate & has_previous_frame.to(gate.device)


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
