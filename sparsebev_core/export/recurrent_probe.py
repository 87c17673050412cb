"""The probe stream on which ``sparsebev export-onnx`` measures a SparseBEV++ head graph.

The export's probe frame (``onnx_export.probe_inputs``: random images, a ring of pinhole
cameras) is seen ``PROBE_FRAMES`` times while the ego moves ``PROBE_STEP_M`` forward every
``PROBE_STEP_S``, each frame's levels scaled differently. Frame 0 starts from the empty state
(no memory, padding queries); each later frame from the state PyTorch (eager, the default
sampling backend: the torch runtime) returned for the previous one, which onnxruntime is given
too (teacher forcing), so that each frame compares one head call of the two runtimes, the next
state included (:func:`compare_step`). Frame 1 (a partly filled memory, propagated queries
used) is the one the graph is traced on.
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


def run_onnx(session, stream: list[ProbeFrame], torch_run: list
             ) -> list[tuple[dict[str, Tensor], RecurrentState]]:
    """The head graph over the stream in onnxruntime, each frame from the state the PyTorch run
    started it from (teacher forcing: a near-tie swap in one frame's top-K, see
    :func:`compare_step`, does not carry over into the next frames). Per frame: every graph
    output by name, and the next state."""
    names = [o.name for o in session.get_outputs()]
    run = []
    for frame, (state, _, _) in zip(stream, torch_run):
        inputs = {name: t.numpy() for name, t in feed(frame, state).items()}
        out = dict(zip(names, session.run(names, inputs)))
        run.append(({k: torch.from_numpy(v) for k, v in out.items()}, next_state_from(out)))
    return run


def compare_step(ref: dict[str, Tensor], ref_state: RecurrentState, out: dict[str, Tensor],
                 state: RecurrentState, len_per_frame: int) -> dict:
    """One head call of two runtimes from the same state: ``ref`` / ``ref_state`` (outputs and
    next state of the reference), ``out`` / ``state`` (the other's).

    Returns the max abs difference per decoder layer of the logits and boxes; the next state's
    per tensor over the rows that carry the same query on both sides (a propagated row and a
    newly pushed memory row where ``propagated_index`` agrees; the older memory rows always);
    the share of ``propagated_index`` positions that agree and the largest reference
    max-logit gap between the two queries at a position that differs (two queries whose
    logits lie within the runtimes' rounding of each other may swap ranks: a near tie has a gap
    of the order of the logit deviation, a wrong selection does not); whether
    ``memory_rows`` and ``propagation_used`` agree."""
    index_ref, index = ref['propagated_index'][0], out['propagated_index'][0]          # [K]
    same = index_ref == index                                                            # [K]
    best = ref['all_cls_scores'][-1, 0].double().max(dim=-1).values                      # [Q+K]
    gaps = (best[index_ref] - best[index]).abs()[~same]
    rows = {'propagated_feat': same, 'propagated_bbox': same}
    memory_same = torch.ones(ref_state.memory_rows_allocated, dtype=torch.bool)          # [R]
    memory_same[:len_per_frame] = same[:len_per_frame]
    rows.update(memory_feat=memory_same, memory_bbox=memory_same)
    ours = dict(zip(STATE_NAMES, state.tensors()))
    layers = ref['all_cls_scores'].shape[0]

    def diff(a: Tensor, b: Tensor) -> float:
        return float((a.double() - b.double()).abs().max()) if a.numel() else 0.0
    return {
        'all_cls_scores': [diff(out['all_cls_scores'][l], ref['all_cls_scores'][l]) for l in range(layers)],
        'all_bbox_preds': [diff(out['all_bbox_preds'][l], ref['all_bbox_preds'][l]) for l in range(layers)],
        'next_state': {name: diff(ours[name][0, rows[name]], value[0, rows[name]])
                       for name, value in zip(STATE_NAMES, ref_state.tensors())},
        'propagated_index_agreement': float(same.double().mean()),
        'propagated_index_max_logit_gap': float(gaps.max()) if gaps.numel() else 0.0,
        'memory_rows_equal': bool(torch.equal(state.memory_rows, ref_state.memory_rows)),
        'propagation_used_equal': bool(torch.equal(out['propagation_used'], ref['propagation_used'])),
    }


def deviation(torch_run: list, onnx_run: list, len_per_frame: int) -> dict:
    """:func:`compare_step` over the probe frames: the largest difference of each quantity, the
    lowest index agreement, the largest near-tie gap; the gate as the graph applied it."""
    steps = [compare_step(outputs, after, out, state, len_per_frame)
             for (_, outputs, after), (out, state) in zip(torch_run, onnx_run)]
    layers = range(len(steps[0]['all_cls_scores']))
    return {
        'head_all_cls_scores_max_abs_per_layer': [max(s['all_cls_scores'][l] for s in steps) for l in layers],
        'head_all_bbox_preds_max_abs_per_layer': [max(s['all_bbox_preds'][l] for s in steps) for l in layers],
        'next_state_max_abs_same_query_rows': {
            name: max(s['next_state'][name] for s in steps) for name in STATE_NAMES[:4]},
        'propagated_index_min_agreement': min(s['propagated_index_agreement'] for s in steps),
        'propagated_index_max_logit_gap': max(s['propagated_index_max_logit_gap'] for s in steps),
        'memory_rows_equal': all(s['memory_rows_equal'] for s in steps),
        'propagation_used': [bool(out['propagation_used'][0]) for out, _ in onnx_run],
        'probe_frames': len(steps),
    }
