"""The probe stream on which ``sparsebev export-onnx`` measures a SparseBEV++ head graph.

The export's probe frame (``onnx_export.probe_inputs``: random images, a ring of pinhole
cameras) is seen ``PROBE_FRAMES`` times while the ego moves ``PROBE_STEP_M`` forward every
``PROBE_STEP_S``, each frame's levels scaled differently. Frame 0 starts from the empty state
(no memory, padding queries); each later frame from the state the previous one returned,
carried separately by PyTorch (eager, the default sampling backend: the torch runtime) and by
onnxruntime (the graph's own outputs), so the deviation includes what the state accumulates.
Frame 1 (a partly filled memory, propagated queries used) is the one the graph is traced on.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..model.recurrent_state import EgoMotion, RecurrentState, propagation_gate
from ..streaming.onnx_manifest import STATE_NAMES, next_state_from, recurrent_head_feed

Tensor = torch.Tensor

PROBE_FRAMES = 3
PROBE_STEP_S = 0.5          # s between probe frames
PROBE_STEP_M = 2.5          # m forward per probe step (5 m/s, as probe_inputs' camera ring)
TRACE_FRAME = 1


@dataclass
class ProbeFrame:
    """One frame's inputs besides the state: levels ``[N, C, h_l, w_l]``, lidar2img
    ``[1, N, 4, 4]``, the motion since the previous probe frame, the gate ``[1]``, valid_views
    ``[1, N]``."""
    levels: list[Tensor]
    lidar2img: Tensor
    motion: EgoMotion
    propagate: Tensor
    valid_views: Tensor


def max_abs(a: np.ndarray, b: np.ndarray) -> float:
    """Largest absolute difference, in float64 (0 for empty arrays)."""
    return float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64)))) if a.size else 0.0


def probe_stream(levels: list[Tensor], lidar2img: Tensor, max_time_interval: float,
                 frames: int = PROBE_FRAMES) -> list[ProbeFrame]:
    """The probe frames (see the module doc); ``lidar2img [1, N, 4, 4]`` of the camera ring."""
    stream = []
    for k in range(frames):
        prev_to_current = torch.eye(4)[None]                          # [1, 4, 4]
        prev_to_current[0, 0, 3] = -PROBE_STEP_M if k else 0.0        # the previous frame lies behind
        motion = EgoMotion(torch.tensor([PROBE_STEP_S if k else 0.0], dtype=torch.float64),
                           prev_to_current)
        gate = propagation_gate(motion.elapsed, max_time_interval, torch.tensor([k > 0]))
        stream.append(ProbeFrame([level * (1.0 + 0.05 * k) for level in levels], lidar2img, motion,
                                 gate, torch.ones(lidar2img.shape[:2], dtype=torch.bool)))
    return stream


def empty_state(model) -> RecurrentState:
    """The fixed-form state before a stream's first frame, for ``model``'s head."""
    head = model.pts_bbox_head
    return RecurrentState.empty(1, head.num_propagated, head.cfg.embed_dims,
                                head.memory_cfg.memory_len)


def feed(frame: ProbeFrame, state: RecurrentState) -> dict[str, Tensor]:
    """The graph's inputs for ``frame`` from ``state``."""
    return recurrent_head_feed(frame.levels, frame.lidar2img, state, frame.motion,
                               frame.propagate, frame.valid_views)


def run_torch(model, stream: list[ProbeFrame]) -> list[tuple[RecurrentState, dict, RecurrentState]]:
    """``forward_recurrent`` over the stream, the state carried: per frame (state in, outputs,
    state out)."""
    state, run = empty_state(model), []
    with torch.inference_mode():
        for frame in stream:
            outputs, after = model.forward_recurrent(
                [level[None] for level in frame.levels], frame.lidar2img, state, frame.motion,
                valid_views=frame.valid_views, propagate=frame.propagate)
            run.append((state, outputs, after))
            state = after
    return run


def run_onnx(session, model, stream: list[ProbeFrame]) -> list[dict[str, np.ndarray]]:
    """The head graph over the stream in onnxruntime, the state carried through its outputs."""
    state, run = empty_state(model), []
    for frame in stream:
        inputs = {name: t.numpy() for name, t in feed(frame, state).items()}
        names = [o.name for o in session.get_outputs()]
        out = dict(zip(names, session.run(names, inputs)))
        run.append(out)
        state = next_state_from(out)
    return run


def state_arrays(state: RecurrentState) -> dict[str, np.ndarray]:
    """The five fixed-form state tensors by their graph input names, as numpy."""
    return {name: t.numpy() for name, t in zip(STATE_NAMES, (*state.tensors(), state.memory_rows))}


def deviation(torch_run: list, onnx_run: list[dict[str, np.ndarray]]) -> dict:
    """Max abs difference over the probe frames: per decoder layer (logits, boxes), per next
    state tensor; whether the propagated rows and the gate agree on every frame."""
    pairs = [(outputs, state_arrays(after), out) for (_, outputs, after), out in zip(torch_run, onnx_run)]
    layers = pairs[0][0]['all_cls_scores'].shape[0]

    def per_layer(key: str) -> list[float]:
        return [max(max_abs(out[key][l], ref[key][l].numpy()) for ref, _, out in pairs)
                for l in range(layers)]
    return {
        'head_all_cls_scores_max_abs_per_layer': per_layer('all_cls_scores'),
        'head_all_bbox_preds_max_abs_per_layer': per_layer('all_bbox_preds'),
        'next_state_max_abs': {name: max(max_abs(out[f'next_{name}'], state[name]) for _, state, out in pairs)
                               for name in STATE_NAMES},
        'propagated_index_equal': all(np.array_equal(out['propagated_index'], ref['propagated_index'].numpy())
                                      for ref, _, out in pairs),
        'propagation_used': [bool(out['propagation_used'][0]) for *_, out in pairs],
        'probe_frames': len(pairs),
    }
