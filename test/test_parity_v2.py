"""Parity with the official SparseBEV++ (v2) implementation over a 10-frame sequence (issue 21).

Follows ``test/parity_v2/README.md`` ("How to compare"). For every ``ref_seed*_704x256_seq.npz``
in the fixture folder (``test/parity_v2``, or the folder named by ``SPARSEBEV_PARITY_V2_DIR``)
the weights and the input sequence are rebuilt from the seed in its ``meta_json`` (checksums
first), the weights are saved as an official mmcv-style checkpoint and loaded strictly through
``load_checkpoint`` into the ``r50_nuimg_704x256_memory`` preset, and the sequence runs through
the public calls ``SparseBEV.extract_features`` + ``SparseBEV.forward_recurrent`` on CPU in
float32, one backbone pass per frame shared by every check:

* frame 0 end to end (no state; README check 1);
* frames 1..9 by frame-level teacher forcing: the state is set to the reference state after
  the previous frame; warp, time gate, decoder, next state and decoded boxes (check 2);
* frame 7 layer by layer on the recorded layer inputs (check 4, ``*_layer_io.npz``);
* frame 1 free-running from our own frame-0 state, rows matched by identity (check 5);
* FPN / backbone statistics of every frame (check 6).

A failure names the check, frame, layer and quantity. ``scripts/parity_v2_mutants.py``
injects the bugs of issue 21 into a copy of the code and shows that this test fails on each.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from parity_helpers import load_script, model_with_filled_weights, sha256_mismatches, stats_per_image
from sparsebev_core.model.recurrent_state import EgoMotion, RecurrentState, warp_boxes
from sparsebev_core.model.sampling import group_features_for_sampling
from sparsebev_core.recipe.presets import get_preset

TEST_COPY = Path(__file__).parent / 'parity_v2'
PARITY_DIR = Path(os.environ.get('SPARSEBEV_PARITY_V2_DIR', '').strip() or TEST_COPY)
PRESET = 'r50_nuimg_704x256_memory'
MANIFEST_NAME = 'official_r50_nuimg_704x256_memory_manifest.json'


def _fixture_file(name: str) -> Path:
    """A helper file of the fixture folder, else of the copy under test/."""
    return PARITY_DIR / name if (PARITY_DIR / name).is_file() else TEST_COPY / name


def _load_helper(name: str):
    """The fixture's own scripts (``inputs_v2.py``, ``fill_v2.py``, ``check_reference_v2.py``)."""
    return load_script(_fixture_file(f'{name}.py'), f'parity_v2_{name}')


inputs_lib = _load_helper('inputs_v2')
fill_lib = _load_helper('fill_v2')
check_lib = _load_helper('check_reference_v2')

REFERENCES = sorted(PARITY_DIR.glob('ref_seed*_704x256_seq.npz')) or [
    PARITY_DIR / 'ref_seed*_704x256_seq.npz']                   # none found: fail loudly


# ------------------------------------------------------------------------------------ helpers
def reference_state(ref: dict, memory_state: dict, k: int) -> RecurrentState:
    """The official state after frame ``k`` (README check 2): propagated queries, and the
    memory features rebuilt from the propagated features of frames k, k-1, ... (256 each)."""
    chunk = 256
    rows = int(ref['out_memory_len'][k])
    feats = np.concatenate([memory_state['out_propagate_feat'][j][:chunk] for j in range(k, -1, -1)])
    as_batch = lambda a: torch.from_numpy(np.ascontiguousarray(a))[None]  # noqa: E731
    return RecurrentState(propagated_feat=as_batch(memory_state['out_propagate_feat'][k]),
                          propagated_bbox=as_batch(ref['out_propagate_bbox'][k]),
                          memory_feat=as_batch(feats[:rows]),
                          memory_bbox=as_batch(ref['out_memory_bbox'][k][:rows]))


def official_motion(ref: dict, k: int) -> EgoMotion:
    """Ego motion from frame k-1 to frame k, formed as the official code does (float32 poses)."""
    return EgoMotion.official(ref['input_timestamp'][k - 1], ref['input_timestamp'][k],
                              ref['input_ego_pose'][k - 1][None], ref['input_ego_pose_inv'][k][None])


def _padded(rows: np.ndarray, length: int, fill=np.nan) -> np.ndarray:
    out = np.full((length,) + rows.shape[1:], fill, dtype=rows.dtype)
    out[:len(rows)] = rows
    return out


def frame_record(model, outputs: dict, state: RecurrentState, propagated_warped: np.ndarray | None,
                 memory_len: int) -> dict:
    """One frame's candidate values, named and laid out as the reference keys."""
    head = model.pts_bbox_head
    pc = np.asarray(head.cfg.pc_range, dtype=np.float64)
    all_bbox = outputs['all_bbox_preds'].numpy()                               # [L, 1, Q, 10] head layout
    metric_xyz = all_bbox[..., [0, 1, 4]].astype(np.float64)
    normalised = np.concatenate([(metric_xyz - pc[:3]) / (pc[3:] - pc[:3]),
                                 all_bbox[..., [2, 3, 5, 6, 7, 8, 9]]], axis=-1)  # query layout
    decoded = model.decode(outputs)[0]
    count = len(decoded['scores'])
    max_num = head.cfg.max_num
    memory = outputs['input_memory_bbox']
    used = bool(outputs['propagation_used'][0])
    return dict(
        all_cls_scores=outputs['all_cls_scores'].numpy(),
        all_bbox_preds=all_bbox,
        transformer_bbox_preds=normalised,
        decoded_boxes=_padded(decoded['boxes'].numpy(), max_num),
        decoded_scores=_padded(decoded['scores'].numpy(), max_num),
        topk_query_index=_padded(decoded['query_index'].numpy(), max_num, -1),
        topk_labels=_padded(decoded['labels'].numpy(), max_num, -1),
        topk_keep=np.arange(max_num) < count,
        in_query_bbox=outputs['input_query_bbox'][0].numpy(),
        in_memory_bbox=(np.full((memory_len, 10), np.nan, np.float32) if memory is None
                        else _padded(memory[0].numpy(), memory_len)),
        in_propagate_bbox_warped=(np.full((head.num_propagated, 10), np.nan, np.float32)
                                  if propagated_warped is None else propagated_warped),
        in_time_mask=np.int8(-1 if memory is None else int(used)),
        out_propagate_index=outputs['propagated_index'][0].numpy(),
        out_propagate_bbox=state.propagated_bbox[0].numpy(),
    )


def stack(records: list[dict]) -> dict:
    return {k: np.stack([r[k] for r in records]) for k in records[0]}


# ------------------------------------------------------------------------------------ the run
@pytest.fixture(scope='module')
def parity_runs():
    """One run per reference (10 backbone passes), shared by the tests, freed after the module."""
    runs: dict[Path, dict] = {}
    yield runs
    runs.clear()


def run_reference(path: Path, runs: dict, tmp_dir: Path) -> dict:
    """Rebuild inputs and weights, load through the checkpoint loader, run every check's frames."""
    if path in runs:
        return runs[path]
    assert path.is_file(), f'v2 parity reference {path} not found (SPARSEBEV_PARITY_V2_DIR?)'
    ref = dict(np.load(path))
    memory_state_path = path.with_name(path.stem + '_memory_state.npz')
    assert memory_state_path.is_file(), f'{memory_state_path.name} (the propagated features) must sit beside {path.name}'
    memory_state = dict(np.load(memory_state_path))
    layer_io_path = path.with_name(path.stem + '_layer_io.npz')
    layer_io = dict(np.load(layer_io_path)) if layer_io_path.is_file() else None
    meta = json.loads(str(ref['meta_json']))
    seed, height, width = int(meta['seed']), int(meta['height']), int(meta['width'])
    num_frames = int(meta['num_frames'])

    # inputs and weights, checksums first (README check 7)
    frames = inputs_lib.build_sequence(seed, width=width, height=height)
    bad = sha256_mismatches(meta['input_sha256'], inputs_lib.sequence_checksums(frames))
    assert not bad, f'{path.name}: our rebuilt input sequence differs from the fixture: {bad}'

    cfg = get_preset(PRESET)
    cfg.input_size = (height, width)
    model = model_with_filled_weights(cfg, _fixture_file(MANIFEST_NAME), fill_lib, meta, tmp_dir,
                                      path.stem)
    head = model.pts_bbox_head
    memory_len = head.memory_cfg.memory_len

    backbone_out: list = []
    hook = model.img_backbone.register_forward_hook(lambda m, a, out: backbone_out.append(out))
    tf, fpn = [], {}
    free_state = free = None
    layer_rows = None
    try:
        with torch.no_grad():
            for k in range(num_frames):
                images = torch.from_numpy(np.ascontiguousarray(
                    frames[k]['img_bgr_uint8'][..., ::-1].transpose(0, 3, 1, 2)))[None]  # [1, 6, 3, H, W] RGB
                lidar2img = torch.from_numpy(frames[k]['lidar2img'])[None]              # [1, 6, 4, 4]
                backbone_out.clear()
                features = model.extract_features(images)                              # [1, 6, 256, h, w]
                for i, (mean, std) in enumerate(stats_per_image(backbone_out[0])):
                    fpn.setdefault(f'backbone_c{i + 2}_mean_per_img', []).append(mean)
                    fpn.setdefault(f'backbone_c{i + 2}_std_per_img', []).append(std)
                for lvl, (mean, std) in enumerate(stats_per_image([f[0] for f in features])):
                    fpn.setdefault(f'fpn_l{lvl}_mean_per_img', []).append(mean)
                    fpn.setdefault(f'fpn_l{lvl}_std_per_img', []).append(std)
                fpn.setdefault('fpn_mean', []).append([f.double().mean().item() for f in features])
                fpn.setdefault('fpn_std', []).append([f.double().std(unbiased=False).item() for f in features])

                # frame 0 from nothing; frame k >= 1 from the reference state after frame k-1
                state = motion = warped = None
                if k > 0:
                    state, motion = reference_state(ref, memory_state, k - 1), official_motion(ref, k)
                    warped = warp_boxes(state.propagated_bbox, motion, head.pc_range)[0].numpy()
                outputs, next_state = model.forward_recurrent(features, lidar2img, state, motion)
                tf.append(frame_record(model, outputs, next_state, warped, memory_len))

                if k == 0:                                                              # free-running
                    free, free_state = [tf[0]], next_state
                elif k == 1:
                    outputs, next_free = model.forward_recurrent(features, lidar2img, free_state,
                                                                 official_motion(ref, 1))
                    free.append(frame_record(model, outputs, next_free, None, memory_len))

                if layer_io is not None and k == int(meta.get('layer_io_frame', 7)):
                    layer_rows = run_layers(head, features, lidar2img, (height, width), layer_io)
    finally:
        hook.remove()

    cand_tf = stack(tf)
    cand_tf.update({k: np.stack(v) for k, v in fpn.items()})
    cand_free = stack(free)
    cand_free['row_id'] = check_lib.row_ids(cand_free)
    run = dict(ref=ref, tf=cand_tf, free=cand_free, layer_rows=layer_rows, layer_io=layer_io,
               num_layers=head.transformer.decoder.iterations)
    runs[path] = run
    return run


def run_layers(head, features, lidar2img, image_hw, layer_io: dict) -> dict:
    """Layer i of the decoder on the recorded inputs of layer i (README check 4)."""
    layer = head.transformer.decoder.decoder_layer
    grouped = group_features_for_sampling(features, head.cfg.num_groups, features[0].shape[1])
    as_batch = lambda a: torch.from_numpy(np.ascontiguousarray(a))[None]  # noqa: E731
    memory_feat, memory_bbox = as_batch(layer_io['memory_feat']), as_batch(layer_io['memory_bbox'])
    key_pos = layer.position_encoder(memory_bbox)                                     # [1, M, C]
    rows: dict = dict(query_feat_out=[], cls=[], bbox=[], key_pos=key_pos[0].numpy(),
                      query_pos_layer0=layer.position_encoder(
                          as_batch(layer_io['query_bbox_in'][0]))[0].numpy())
    for i in range(layer_io['query_bbox_in'].shape[0]):
        feat, cls, bbox = layer(as_batch(layer_io['query_bbox_in'][i]),
                                as_batch(layer_io['query_feat_layers'][i]), grouped, lidar2img,
                                image_hw, memory_feat, key_pos)
        rows['query_feat_out'].append(feat[0].numpy())
        rows['cls'].append(cls[0].numpy())
        rows['bbox'].append(bbox[0].numpy())
    return {k: np.stack(v) if isinstance(v, list) else v for k, v in rows.items()}


def report(name: str, ok: bool, lines: list[str]) -> None:
    bad = [line for line in lines if 'FAIL' in line]
    assert ok and not bad, f'{name}: {bad[0] if bad else "failed"}\nfull report:\n' + '\n'.join(lines)


IDS = [p.stem for p in REFERENCES]


@pytest.mark.parametrize('reference', REFERENCES, ids=IDS)
def test_inference_runs_the_first_four_of_six_layers(reference, parity_runs, tmp_path):
    run = run_reference(reference, parity_runs, tmp_path)
    assert run['num_layers'] == run['ref']['all_cls_scores'].shape[1] == 4
    assert run['tf']['all_cls_scores'].shape == run['ref']['all_cls_scores'].shape


@pytest.mark.parametrize('reference', REFERENCES, ids=IDS)
def test_frame0_end_to_end(reference, parity_runs, tmp_path):
    run = run_reference(reference, parity_runs, tmp_path)
    cand, ref, lines = run['tf'], run['ref'], []
    assert int(ref['in_time_mask'][0]) == -1 == int(cand['in_time_mask'][0])
    ok = check_lib.check_decoder(cand, ref, lines, [0], by_id=False)
    ok &= check_lib.check_decoded(cand, ref, lines, [0])
    ok &= check_lib.check_propagated(cand, ref, lines, [0])
    ok &= check_lib.check_fpn(cand, ref, lines, [0])
    report(f'{reference.name} frame 0', ok, lines)


@pytest.mark.parametrize('reference', REFERENCES, ids=IDS)
def test_frames_teacher_forced_from_the_reference_state(reference, parity_runs, tmp_path):
    run = run_reference(reference, parity_runs, tmp_path)
    cand, ref, lines = run['tf'], run['ref'], []
    frames = list(range(1, ref['in_time_mask'].shape[0]))
    mask_ok = np.array_equal(cand['in_time_mask'], ref['in_time_mask'])
    lines.append(f'in_time_mask ours {cand["in_time_mask"].tolist()} reference '
                 f'{ref["in_time_mask"].tolist()} {"ok" if mask_ok else "FAIL"}')
    ok = mask_ok & check_lib.check_warp(cand, ref, lines, frames)
    ok &= check_lib.check_decoder(cand, ref, lines, frames, by_id=False)
    ok &= check_lib.check_propagated(cand, ref, lines, frames)
    ok &= check_lib.check_decoded(cand, ref, lines, frames)
    ok &= check_lib.check_fpn(cand, ref, lines, frames)
    report(f'{reference.name} teacher-forced frames 1..{frames[-1]}', ok, lines)


@pytest.mark.parametrize('reference', REFERENCES, ids=IDS)
def test_layers_teacher_forced_on_the_recorded_layer_inputs(reference, parity_runs, tmp_path):
    run = run_reference(reference, parity_runs, tmp_path)
    if run['layer_io'] is None:
        pytest.skip(f'no {reference.stem}_layer_io.npz beside the reference')
    lines: list[str] = []
    ok = check_lib.check_layer_io(run['layer_rows'], run['layer_io'], lines)
    report(f'{reference.name} layer by layer', ok, lines)


@pytest.mark.parametrize('reference', REFERENCES, ids=IDS)
def test_frame1_free_running_on_our_own_state(reference, parity_runs, tmp_path):
    run = run_reference(reference, parity_runs, tmp_path)
    cand, ref, lines = run['free'], run['ref'], []
    ok = check_lib.check_decoder(cand, ref, lines, [0, 1], by_id=True, judge_max_frames=[0])
    report(f'{reference.name} free-running frame 1', ok, lines)


@pytest.mark.parametrize('reference', REFERENCES, ids=IDS)
def test_float64_ego_motion_warps_within_the_warp_tolerance(reference, parity_runs, tmp_path):
    """Our default motion (float64 relative pose; docs/official_model.md, quirk 25) moves the
    reference state within the README's warp tolerance of the official float32 product."""
    ref = dict(np.load(reference))
    memory_state = dict(np.load(reference.with_name(reference.stem + '_memory_state.npz')))
    pc_range = torch.tensor(get_preset(PRESET).head.pc_range, dtype=torch.float32)
    worst = 0.0
    for k in range(1, ref['in_time_mask'].shape[0]):
        state = reference_state(ref, memory_state, k - 1)
        motion = EgoMotion.from_poses(ref['input_timestamp'][k - 1], ref['input_timestamp'][k],
                                      ref['input_ego_pose'][k - 1][None].astype(np.float64),
                                      ref['input_ego_pose'][k][None].astype(np.float64))
        moved = warp_boxes(state.memory_bbox, motion, pc_range)[0].numpy()
        rows = int(ref['in_memory_len'][k])
        worst = max(worst, float(np.abs(moved - ref['in_memory_bbox'][k][:rows]).max()))
    assert worst <= check_lib.WARP_TOL, f'float64 ego motion warps {worst:.1e} from the reference'
