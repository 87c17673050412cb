"""The recurrent SparseBEV++ head on the ``tiny_memory`` preset: the state contract, the memory
queue, the time gate, the box warp, the layer counts, typed errors, missing cameras.

Numbers against the official code are test_parity_v2.py's job; these tests pin the behaviour
that parity fixture cannot show on its own (the call's contract, batch independence, edge cases).
"""
from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from camera_rigs import outward_lidar2img
from sparsebev_core.model.detector import RecurrentModelError, build_model
from sparsebev_core.model import recurrent_decoder
from sparsebev_core.model.recurrent_state import (EgoMotion, RecurrentState, RecurrentStateError,
                                                  propagation_gate, warp_boxes)
from sparsebev_core.recipe.presets import get_preset

pytestmark = pytest.mark.usefixtures('one_torch_thread')

N_CAM = 6


def rotation_z(yaw: float, translation=(0.0, 0.0, 0.0)) -> torch.Tensor:
    pose = torch.eye(4, dtype=torch.float64)
    pose[:2, :2] = torch.tensor([[math.cos(yaw), -math.sin(yaw)], [math.sin(yaw), math.cos(yaw)]])
    pose[:3, 3] = torch.tensor(translation)
    return pose


def motion(elapsed, prev_pose=None, pose=None, batch=1) -> EgoMotion:
    eye = torch.eye(4, dtype=torch.float64).expand(batch, 4, 4)
    return EgoMotion.from_poses(torch.zeros(batch), torch.full((batch,), float(elapsed)),
                                eye if prev_pose is None else prev_pose,
                                eye if pose is None else pose)


@pytest.fixture(scope='module')
def tiny_v2():
    """tiny_memory with seeded random weights (dropout 0, so train and eval mode agree), eval mode."""
    torch.manual_seed(0)
    cfg = get_preset('tiny_memory')
    cfg.head.dropout = 0.0
    model = build_model(cfg).eval()
    with torch.no_grad():                            # non-zero weights where the init sets zeros
        for name, p in model.pts_bbox_head.named_parameters():
            if p.requires_grad and p.dim() >= 2 and not p.any():
                p.normal_(0, 0.02)
        model.pts_bbox_head.init_query_bbox.weight[:, 8:10].uniform_(-1, 1)   # moving queries
    return model, cfg


@pytest.fixture(scope='module')
def frames(tiny_v2):
    """Features and projections of three frames of the tiny rig (random images)."""
    model, cfg = tiny_v2
    gen = torch.Generator().manual_seed(1)
    h, w = cfg.input_size
    lidar2img = outward_lidar2img((h, w), cameras=N_CAM)     # cameras around the vehicle
    with torch.no_grad():
        feats = [model.extract_features(torch.rand(1, N_CAM, 3, h, w, generator=gen) * 255)
                 for _ in range(3)]
    return feats, lidar2img


def run(model, features, lidar2img, state=None, move=None, **kw):
    with torch.no_grad():
        return model.forward_recurrent(features, lidar2img, state, move, **kw)


def test_the_state_contract_over_a_stream(tiny_v2, frames):
    model, cfg = tiny_v2
    feats, l2i = frames
    q, k, c = cfg.head.num_queries, cfg.head.memory.num_propagated, cfg.head.embed_dims
    chunk, limit = cfg.head.memory.len_per_frame, cfg.head.memory.memory_len
    out, state = run(model, feats[0], l2i)
    assert out['input_memory_bbox'] is None and not out['propagation_used'].any()
    assert torch.equal(out['input_query_bbox'][0, q:], model.pts_bbox_head.padding_bbox.weight)
    assert out['all_cls_scores'].shape == (cfg.head.memory.inference_layers, 1, q + k, 10)
    assert out['all_bbox_preds'].shape == (2, 1, q + k, 10) and out['propagated_index'].shape == (1, k)
    rows = []
    for step in range(6):
        assert [tuple(t.shape) for t in state.tensors()] == [
            (1, k, c), (1, k, 10), (1, state.memory_rows_used, c), (1, state.memory_rows_used, 10)]
        assert all(t.dtype == torch.float32 and not t.requires_grad for t in state.tensors())
        rows.append(state.memory_rows_used)
        previous = state
        out, state = run(model, feats[step % 3], l2i, state, motion(0.5))
        assert out['propagation_used'].all()
        assert out['input_memory_bbox'].shape == (1, previous.memory_rows_used, 10)
        # FIFO, newest first: this frame's best rows, then the previous queue, cut at the limit
        assert torch.equal(state.memory_feat[:, :chunk], state.propagated_feat[:, :chunk])
        assert torch.equal(state.memory_feat[:, chunk:], previous.memory_feat[:, :limit - chunk])
        # the propagated rows are the best ones of this frame, by max class logit, best first
        best = out['all_cls_scores'][-1, 0].max(-1).values[out['propagated_index'][0]]
        assert torch.all(best[:-1] >= best[1:])
    assert rows == [16, 32, 48, 64, 64, 64]


def test_the_head_keeps_no_state_of_its_own(tiny_v2, frames):
    model, _ = tiny_v2
    feats, l2i = frames
    _, state = run(model, feats[0], l2i)
    first, after_first = run(model, feats[1], l2i, state, motion(0.5))
    run(model, feats[2], l2i, after_first, motion(0.5))                # anything in between
    again, after_again = run(model, feats[1], l2i, state, motion(0.5))
    assert torch.equal(first['all_cls_scores'], again['all_cls_scores'])
    for a, b in zip(after_first.tensors(), after_again.tensors()):
        assert torch.equal(a, b)


def test_the_time_gate_replaces_only_the_propagated_queries(tiny_v2, frames):
    model, cfg = tiny_v2
    feats, l2i = frames
    q = cfg.head.num_queries
    _, state = run(model, feats[0], l2i)
    gap = cfg.head.memory.max_time_interval
    for elapsed, used in ((gap, True), (-0.5, True), (gap + 0.5, False)):
        out, _ = run(model, feats[1], l2i, state, motion(elapsed))
        assert bool(out['propagation_used'][0]) is used, elapsed
        padding = model.pts_bbox_head.padding_bbox.weight
        assert torch.equal(out['input_query_bbox'][0, q:], padding) is not used
        # the memory is read either way, moved by the same motion (official: never gated)
        expected = warp_boxes(state.memory_bbox, motion(elapsed), model.pts_bbox_head.pc_range)
        assert torch.equal(out['input_memory_bbox'], expected)


def test_batch_elements_are_independent(tiny_v2, frames):
    model, _ = tiny_v2
    feats, l2i = frames
    _, s0 = run(model, feats[0], l2i)
    _, s1 = run(model, feats[2], l2i, s0, motion(0.5))
    moves = [motion(0.5, rotation_z(0.0)[None], rotation_z(0.1, (1.0, 2.0, 0.0))[None]), motion(3.0)]
    memory = min(s0.memory_rows_used, s1.memory_rows_used)                 # a batch shares M: cut the longer
    s0c, s1c = (RecurrentState(s.propagated_feat, s.propagated_bbox, s.memory_feat[:, :memory],
                               s.memory_bbox[:, :memory]) for s in (s0, s1))
    alone = [run(model, feats[1], l2i, s, m) for s, m in zip((s0c, s1c), moves)]
    batch_state = RecurrentState(*(torch.cat(pair) for pair in zip(s0c.tensors(), s1c.tensors())))
    batch_motion = EgoMotion(torch.cat([m.elapsed for m in moves]),
                             torch.cat([m.prev_to_current for m in moves]))
    batch_feats = [torch.cat([f, f]) for f in feats[1]]
    out, state = run(model, batch_feats, l2i.expand(2, -1, -1, -1), batch_state, batch_motion)
    assert out['propagation_used'].tolist() == [True, False]
    for b, (single, single_state) in enumerate(alone):
        torch.testing.assert_close(out['all_cls_scores'][:, b], single['all_cls_scores'][:, 0],
                                   atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(state.memory_bbox[b], single_state.memory_bbox[0], atol=1e-5, rtol=1e-5)


def test_training_runs_every_layer_and_inference_the_first_ones(tiny_v2, frames):
    model, cfg = tiny_v2
    feats, l2i = frames
    head = model.pts_bbox_head
    _, state = run(model, feats[0], l2i)
    eval_out, _ = run(model, feats[1], l2i, state, motion(0.5))
    head.train()
    try:
        train_out, _ = run(model, feats[1], l2i, state, motion(0.5))
    finally:
        head.eval()
    assert train_out['all_cls_scores'].shape[0] == cfg.head.num_layers == 3
    assert eval_out['all_cls_scores'].shape[0] == cfg.head.memory.inference_layers == 2
    torch.testing.assert_close(train_out['all_cls_scores'][:2], eval_out['all_cls_scores'])


def test_box_warp_moves_by_velocity_then_by_the_ego_motion():
    pc_range = torch.tensor(get_preset('tiny_memory').head.pc_range)
    lo, span = pc_range[:3], pc_range[3:] - pc_range[:3]
    metric = torch.tensor([[10.0, 0.0, 1.0]])                               # [K, 3]
    yaw, velocity = 0.3, torch.tensor([[2.0, -1.0]])
    box = torch.cat([(metric - lo) / span, torch.tensor([[0.1, 0.2, 0.3, math.sin(yaw), math.cos(yaw)]]),
                     velocity], dim=-1)[None]                               # [1, 1, 10]
    assert torch.equal(warp_boxes(box, motion(0.0), pc_range), box)           # no time, no motion

    ego_yaw, shift = math.pi / 2, (5.0, 0.0, 0.0)          # the vehicle turned left and drove on
    prev_pose, pose = rotation_z(0.0)[None], rotation_z(ego_yaw, shift)[None]
    out = warp_boxes(box, motion(0.5, prev_pose, pose), pc_range)[0, 0]
    moved = metric[0, :2] + velocity[0] * 0.5                                # first the velocity step
    rot = torch.tensor([[math.cos(-ego_yaw), -math.sin(-ego_yaw)], [math.sin(-ego_yaw), math.cos(-ego_yaw)]])
    expected_xy = rot @ (moved - torch.tensor(shift[:2]))                   # then into the new frame
    torch.testing.assert_close(out[:2] * span[:2] + lo[:2], expected_xy, atol=1e-4, rtol=0)
    torch.testing.assert_close(torch.atan2(out[6], out[7]), torch.tensor(yaw - ego_yaw), atol=1e-6, rtol=0)
    torch.testing.assert_close(out[8:10], rot @ velocity[0], atol=1e-6, rtol=0)
    assert torch.equal(out[3:6], box[0, 0, 3:6])                              # sizes unchanged


def test_float64_and_official_ego_motion_agree_for_small_coordinates():
    prev_pose = rotation_z(0.2, (300.0, 800.0, 1.0))[None]
    pose = rotation_z(0.23, (302.5, 801.0, 1.0))[None]
    ours = EgoMotion.from_poses(10.0, 10.5, prev_pose, pose)
    official = EgoMotion.official(10.0, 10.5, prev_pose.float(), torch.linalg.inv(pose).float())
    assert ours.elapsed.dtype == torch.float64 and ours.elapsed.item() == 0.5
    torch.testing.assert_close(ours.prev_to_current, official.prev_to_current, atol=1e-4, rtol=0)


def test_wrong_calls_are_typed_errors(tiny_v2, frames):
    model, cfg = tiny_v2
    feats, l2i = frames
    _, state = run(model, feats[0], l2i)
    with pytest.raises(RecurrentStateError, match='needs the ego motion'):
        run(model, feats[1], l2i, state, None)
    bad = dataclasses.replace(state, propagated_bbox=state.propagated_bbox[:, :5])
    with pytest.raises(RecurrentStateError, match=r'propagated_bbox must be \[1, 36, 10\]'):
        run(model, feats[1], l2i, bad, motion(0.5))
    with pytest.raises(RecurrentStateError, match='elapsed'):
        run(model, feats[1], l2i, state, motion(0.5, batch=2))
    with pytest.raises(RecurrentModelError, match='forward_recurrent'):
        model.forward_head(feats[1], l2i, torch.zeros(1, N_CAM, dtype=torch.float64))
    v1 = build_model(get_preset('tiny')).eval()
    with pytest.raises(RecurrentModelError, match='forward_head'):
        v1.forward_recurrent(feats[1], l2i)


def test_a_missing_camera_is_never_sampled(tiny_v2, frames):
    model, _ = tiny_v2
    feats, l2i = frames
    valid = torch.ones(1, N_CAM, dtype=torch.bool)
    valid[0, 2] = False
    _, state = run(model, feats[0], l2i)
    garbage = [f.clone() for f in feats[1]]
    for f in garbage:
        f[:, 2] = 1e3                                              # what the missing camera "sees"
    a, _ = run(model, feats[1], l2i, state, motion(0.5), valid_views=valid)
    b, _ = run(model, garbage, l2i, state, motion(0.5), valid_views=valid)
    assert torch.equal(a['all_cls_scores'], b['all_cls_scores'])
    c, _ = run(model, garbage, l2i, state, motion(0.5))
    assert not torch.equal(a['all_cls_scores'], c['all_cls_scores'])   # the camera is sampled otherwise


# ------------------------------------------------------------------ the fixed form (runtime seam)
def empty_state(cfg, batch=1) -> RecurrentState:
    m = cfg.head.memory
    return RecurrentState.empty(batch, m.num_propagated, cfg.head.embed_dims, m.memory_len)


def test_the_fixed_form_gives_the_variable_forms_results(tiny_v2, frames):
    """The runtime seam's state has static shapes (memory_len rows + a valid-row count); each
    frame started from the padded copy of the variable (official) state gives that state's
    results: bitwise on the first frame and once the memory is full, within float rounding of
    the longer masked sums in between; the next state holds the same rows."""
    model, cfg = tiny_v2
    feats, l2i = frames
    limit, chunk = cfg.head.memory.memory_len, cfg.head.memory.len_per_frame
    var_out, var_state = run(model, feats[0], l2i)
    fix_out, fix_state = run(model, feats[0], l2i, empty_state(cfg), motion(0.5))
    assert not fix_out['propagation_used'].any()                  # an empty state has no frame
    assert torch.equal(var_out['all_cls_scores'], fix_out['all_cls_scores'])
    assert fix_state.memory_feat.shape == (1, limit, cfg.head.embed_dims)
    assert fix_state.memory_rows.tolist() == [chunk]
    assert torch.equal(fix_state.memory_feat[:, :chunk], var_state.memory_feat)
    assert not fix_state.memory_feat[:, chunk:].any()              # the padding stays zeros
    for step in range(1, 6):
        padded = var_state.padded(limit)
        assert padded.memory_rows.tolist() == [var_state.memory_rows_used]
        move = motion(0.5, rotation_z(0.0)[None], rotation_z(0.05 * step, (0.8 * step, 0.1, 0.0))[None])
        var_out, next_var = run(model, feats[step % 3], l2i, var_state, move)
        fix_out, next_fix = run(model, feats[step % 3], l2i, padded, move)
        full = var_state.memory_rows_used == limit
        for key in ('all_cls_scores', 'all_bbox_preds'):
            if full:                                  # nothing masked: the same computation
                assert torch.equal(var_out[key], fix_out[key]), (step, key)
            else:
                torch.testing.assert_close(fix_out[key], var_out[key], atol=2e-5, rtol=1e-5)
        assert torch.equal(fix_out['propagated_index'], var_out['propagated_index'])
        rows = next_var.memory_rows_used
        assert next_fix.memory_rows.tolist() == [rows] and next_fix.memory_feat.shape[1] == limit
        torch.testing.assert_close(next_fix.memory_feat[:, :rows], next_var.memory_feat, atol=2e-5, rtol=1e-5)
        assert next_fix.trimmed().memory_bbox.shape == next_var.memory_bbox.shape
        var_state = next_var
    assert var_state.memory_rows_used == limit


def test_padding_rows_are_never_read(tiny_v2, frames):
    model, cfg = tiny_v2
    feats, l2i = frames
    _, state = run(model, feats[0], l2i)
    padded = state.padded(cfg.head.memory.memory_len)
    rows = state.memory_rows_used
    garbage = dataclasses.replace(padded, memory_feat=padded.memory_feat.clone(),
                                  memory_bbox=padded.memory_bbox.clone())
    garbage.memory_feat[:, rows:] = 1e3
    garbage.memory_bbox[:, rows:] = 0.5
    a, _ = run(model, feats[1], l2i, padded, motion(0.5))
    b, _ = run(model, feats[1], l2i, garbage, motion(0.5))
    assert torch.equal(a['all_cls_scores'], b['all_cls_scores'])


def test_a_batch_mixing_a_new_stream_and_a_running_one(tiny_v2, frames):
    """Batch element 0 starts a stream (empty state), element 1 has memory: each gets its own
    path (no memory / masked memory); the traced path (both computed, then selected) agrees."""
    model, cfg = tiny_v2
    feats, l2i = frames
    limit = cfg.head.memory.memory_len
    _, running = run(model, feats[0], l2i, empty_state(cfg), motion(0.5))
    new = empty_state(cfg)
    batch_state = RecurrentState(*(torch.cat(pair) for pair in zip(new.tensors(), running.tensors())),
                                 memory_rows=torch.cat([new.memory_rows, running.memory_rows]))
    batch_feats = [torch.cat([f, f]) for f in feats[1]]
    out, state = run(model, batch_feats, l2i.expand(2, -1, -1, -1), batch_state, motion(0.5, batch=2))
    assert out['propagation_used'].tolist() == [False, True]
    assert state.memory_rows.tolist() == [16, 32] and state.memory_feat.shape[1] == limit
    alone = [run(model, feats[1], l2i, s, motion(0.5))[0] for s in (new, running)]
    for b in range(2):
        torch.testing.assert_close(out['all_cls_scores'][:, b], alone[b]['all_cls_scores'][:, 0],
                                   atol=1e-5, rtol=1e-5)
    traced = recurrent_decoder.static_graph
    recurrent_decoder.static_graph = lambda: True          # what an export sees: no Python branch
    try:
        both, _ = run(model, batch_feats, l2i.expand(2, -1, -1, -1), batch_state, motion(0.5, batch=2))
        single, _ = run(model, feats[1], l2i, running, motion(0.5))
    finally:
        recurrent_decoder.static_graph = traced
    assert torch.equal(both['all_cls_scores'], out['all_cls_scores'])
    assert torch.equal(single['all_cls_scores'], alone[1]['all_cls_scores'])


def test_the_gate_given_by_the_caller_is_the_heads_rule(tiny_v2, frames):
    model, cfg = tiny_v2
    feats, l2i = frames
    gap = cfg.head.memory.max_time_interval
    _, state = run(model, feats[0], l2i, empty_state(cfg), motion(0.5))
    for elapsed in (0.5, -1.0, gap + 0.1):
        move = motion(elapsed)
        gate = propagation_gate(move.elapsed, gap, state.has_previous_frame())
        inside, _ = run(model, feats[1], l2i, state, move)
        given, _ = run(model, feats[1], l2i, state, move, propagate=gate)
        assert torch.equal(inside['all_cls_scores'], given['all_cls_scores'])
        assert given['propagation_used'].tolist() == [abs(elapsed) <= gap]
    assert propagation_gate(torch.zeros(1, dtype=torch.float64), gap,
                            empty_state(cfg).has_previous_frame()).tolist() == [False]


def test_a_fixed_form_state_is_checked(tiny_v2, frames):
    model, cfg = tiny_v2
    feats, l2i = frames
    state = empty_state(cfg)
    short = dataclasses.replace(state, memory_feat=state.memory_feat[:, :16], memory_bbox=state.memory_bbox[:, :16])
    with pytest.raises(RecurrentStateError, match='memory_len = 64 rows'):
        run(model, feats[1], l2i, short, motion(0.5))
    with pytest.raises(RecurrentStateError, match='memory_rows must be int64'):
        run(model, feats[1], l2i, dataclasses.replace(state, memory_rows=state.memory_rows.float()), motion(0.5))
    mixed = dataclasses.replace(state, memory_rows=torch.tensor([16]))
    assert mixed.trimmed().memory_feat.shape[1] == 16 and state.trimmed() is None
