"""Parity with the official SparseBEV implementation (the acceptance test of issue 2).

Follows the contract of ``test/parity/README.md``: for every fixture named in
``SPARSEBEV_PARITY_FIXTURES`` (``:``-separated paths; default every
``test/parity/ref_seed*_704x256.npz``), rebuild the deterministic inputs and weights from the
fixture's ``meta_json`` (checksums first), save the weights as an official mmcv-style
checkpoint and load it through ``sparsebev_core.checkpoints.official.load_checkpoint`` (strict), run the
``r50_nuimg_704x256`` preset on CPU in float32 (one forward per fixture), and apply the
README's checks 1 (per-layer logits and boxes), 3 (decoded boxes) and 4 (intermediate
checkpoints). A failure names the first pipeline stage, layer and quantity out of tolerance.

The teacher-forced check 2 (each decoder layer fed the official inputs of that layer) runs
too when the fixture's ``*_layer_io.npz`` sits beside it: it tells a broken layer from error
accumulation. Where CUDA is available both tests also run on the GPU (TF32 off, whatever
sampling backend ``auto`` picks), with the same tolerances.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from parity_helpers import load_script, model_with_filled_weights, sha256_mismatches, stats_per_image
from sparsebev_core.model import sampling as sampling_module
from sparsebev_core.model.decoder import compute_time_diff
from sparsebev_core.model.sampling import group_features_for_sampling
from sparsebev_core.recipe.presets import get_preset

PARITY_DIR = Path(__file__).parent / 'parity'
MANIFEST = PARITY_DIR / 'official_r50_nuimg_704x256_manifest.json'
PRESET = 'r50_nuimg_704x256'


def _load_helper(name: str):
    """The fixture's own helper scripts (``inputs.py``, ``fill.py``, ``check_reference.py``)."""
    return load_script(PARITY_DIR / f'{name}.py', f'parity_{name}')


inputs_lib = _load_helper('inputs')
fill_lib = _load_helper('fill')
check_lib = _load_helper('check_reference')


def fixture_paths() -> list[Path]:
    env = os.environ.get('SPARSEBEV_PARITY_FIXTURES', '').strip()
    if env:
        return [Path(p) for p in env.split(':') if p]
    return sorted(PARITY_DIR.glob('ref_seed*_704x256.npz'))


FIXTURES = fixture_paths() or [PARITY_DIR / 'ref_seed*_704x256.npz']   # none found: fail loudly
# the contract runs on CPU; where a GPU is present the same checks run there too (GPU tier)
DEVICES = ['cpu'] + (['cuda'] if torch.cuda.is_available() else [])
CASES = [(f, d) for f in FIXTURES for d in DEVICES]
CASE_IDS = [f'{f.stem}-{d}' for f, d in CASES]


@pytest.fixture(scope='module')
def parity_runs():
    """One forward per fixture, shared by the tests below, freed (~1 GB) after this module."""
    runs: dict[tuple[Path, str], dict] = {}
    yield runs
    runs.clear()


def run_fixture(path: Path, device: str, runs: dict, tmp_dir: Path) -> dict:
    """Rebuild inputs and weights, load through the converter, run one forward with probes."""
    if (path, device) in runs:
        return runs[(path, device)]
    assert path.is_file(), f'parity fixture {path} not found (SPARSEBEV_PARITY_FIXTURES?)'
    ref = dict(np.load(path))
    meta = json.loads(str(ref['meta_json']))
    width, height, frames = int(meta['width']), int(meta['height']), int(meta['num_frames'])

    # inputs and weights, checksums first (README check 5)
    inp = inputs_lib.build_inputs(int(meta['seed']), width=width, height=height, num_frames=frames)
    bad = sha256_mismatches(meta['input_sha256'], inputs_lib.inputs_checksums(inp))
    assert not bad, f'{path.name}: our rebuilt inputs differ from the fixture: {bad}'

    # the model, loaded the way a user loads an official checkpoint
    cfg = get_preset(PRESET)
    cfg.input_size = (height, width)
    model = model_with_filled_weights(cfg, MANIFEST, fill_lib, meta, tmp_dir, path.stem).to(device)

    images = torch.from_numpy(np.ascontiguousarray(
        inp['img_bgr_uint8'][..., ::-1].transpose(0, 3, 1, 2)))[None].to(device)  # [1, T*6, 3, H, W] RGB
    lidar2img = torch.from_numpy(inp['lidar2img'])[None].to(device)             # [1, T*6, 4, 4] f32
    timestamps = torch.from_numpy(inp['img_timestamp'])[None].to(device)        # [1, T*6] f64

    probes: dict = {}

    def record_first(name):
        def hook(module, args, out):                  # returns None: never replaces the output
            if name not in probes:
                probes[name] = list(out.values()) if isinstance(out, dict) else out
        return hook

    backbone_hook = model.img_backbone.register_forward_hook(record_first('backbone'))
    sampling_hook = model.pts_bbox_head.transformer.decoder.decoder_layer.sampling.register_forward_hook(
        record_first('sampled'))
    op = sampling_module.msmv_sampling

    def recording_op(features, locations, scale_weights):
        out = op(features, locations, scale_weights)
        if 'msmv' not in probes:
            probes['msmv'] = (locations, scale_weights, out)
        return out

    sampling_module.msmv_sampling = recording_op
    try:
        with torch.no_grad(), full_fp32_matmuls():
            features = model.extract_features(images)                         # [1, T*6, 256, h, w]
            outputs = model.forward_head(features, lidar2img, timestamps)
            decoded = model.decode(outputs)[0]
    finally:
        sampling_module.msmv_sampling = op
        backbone_hook.remove()
        sampling_hook.remove()

    outputs = {k: v.cpu() for k, v in outputs.items()}
    decoded = {k: v.cpu() for k, v in decoded.items()}
    cand = dict(all_cls_scores=outputs['all_cls_scores'].numpy(),
                all_bbox_preds=outputs['all_bbox_preds'].numpy(),
                decoded_boxes=decoded['boxes'].numpy(), decoded_scores=decoded['scores'].numpy(),
                decoded_labels=decoded['labels'].numpy(),
                topk_query_index=decoded['query_index'].numpy(), topk_labels=decoded['labels'].numpy())
    for i, (mean, std) in enumerate(stats_per_image(probes['backbone'])):
        cand[f'backbone_c{i + 2}_mean_per_img'], cand[f'backbone_c{i + 2}_std_per_img'] = mean, std
    fpn = [f[0] for f in features]                                              # [T*6, 256, h, w]
    for lvl, (mean, std) in enumerate(stats_per_image(fpn)):
        cand[f'fpn_l{lvl}_mean_per_img'], cand[f'fpn_l{lvl}_std_per_img'] = mean, std
        index = ref[f'fpn_l{lvl}_sample_index']                                 # [S, (cam, chan, y, x)]
        per_frame = fpn[lvl].reshape(frames, 6, *fpn[lvl].shape[1:]).cpu().numpy()  # [T, 6, 256, h, w]
        cand[f'fpn_l{lvl}_samples'] = per_frame[:, index[:, 0], index[:, 1], index[:, 2], index[:, 3]]
    cand['fpn_mean'] = np.array([f.double().mean().item() for f in fpn])
    cand['fpn_std'] = np.array([f.double().std(unbiased=False).item() for f in fpn])
    qsub = torch.from_numpy(ref['qsub_index']).to(device)
    locations, _, msmv_out = probes['msmv']
    cand['layer0_sampled_feat_qsub'] = probes['sampled'][0, qsub].cpu().numpy()   # [q, G, T*P, C]
    cand['layer0_msmv_locations_qsub'] = locations[:, qsub].cpu().numpy()          # [BTG, q, P, 3]
    cand['layer0_msmv_out_qsub'] = msmv_out[:, qsub].cpu().numpy()                 # [BTG, q, C, P]

    run = dict(ref=ref, meta=meta, cand=cand, features=features, model=model,
               lidar2img=lidar2img, timestamps=timestamps, image_hw=(height, width))
    runs[(path, device)] = run
    return run


@contextlib.contextmanager
def full_fp32_matmuls():
    """No TF32 on GPUs (cuDNN convolutions default to it): the reference is plain float32."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def ordered_report(cand: dict, ref: dict) -> tuple[bool, list[str]]:
    """README checks 4, 1, 3 in pipeline order: backbone, FPN, layer-0 sampling, decoder
    layers 0..L-1 (logits, then boxes), decoded boxes."""
    lines: list[str] = []
    ok = True
    stages = [('backbone', [k for k in cand if k.startswith('backbone_')]),
              ('fpn', [k for k in cand if k.startswith('fpn_')]),
              ('layer0 sampling', [k for k in cand if k.startswith('layer0_')])]
    for stage, keys in stages:
        rep: list[str] = []
        ok &= check_lib.check_misc({k: cand[k] for k in keys}, ref, rep)
        lines += [f'[{stage}] {r}' for r in rep]
    rep = []
    ok &= check_lib.check_decoder(cand, ref, rep)
    layer_of = lambda line: int(re.search(r'\[(\d+)\]', line).group(1))  # noqa: E731
    lines += [f'[decoder layer {layer_of(r)}] {r}' for r in sorted(rep, key=layer_of)]
    rep = []
    ok &= check_lib.check_decoded(cand, ref, rep)
    lines += [f'[decoded] {r}' for r in rep]
    return bool(ok), lines


def failure_message(name: str, lines: list[str]) -> str:
    first = next(line for line in lines if 'FAIL' in line)
    return f'{name}: first quantity out of tolerance: {first}\nfull report:\n' + '\n'.join(lines)


@pytest.mark.parametrize('fixture, device', CASES, ids=CASE_IDS)
def test_parity_with_official_outputs(fixture, device, parity_runs, tmp_path):
    run = run_fixture(fixture, device, parity_runs, tmp_path)
    ok, lines = ordered_report(run['cand'], run['ref'])
    assert ok, failure_message(fixture.name, lines)
    checked = sum(1 for line in lines if line.endswith('ok'))
    assert checked >= 12 + 2 + 20, f'too few quantities compared:\n' + '\n'.join(lines)


@pytest.mark.parametrize('fixture, device', CASES, ids=CASE_IDS)
def test_parity_teacher_forced_decoder_layers(fixture, device, parity_runs, tmp_path):
    layer_io_path = fixture.with_name(fixture.stem + '_layer_io.npz')
    if not layer_io_path.is_file():
        pytest.skip(f'no {layer_io_path.name} beside the fixture')
    run = run_fixture(fixture, device, parity_runs, tmp_path)
    ref, layer_io = run['ref'], dict(np.load(layer_io_path))
    head = run['model'].pts_bbox_head
    layer = head.transformer.decoder.decoder_layer
    grouped = group_features_for_sampling(run['features'], head.cfg.num_groups)
    time_diff = compute_time_diff(run['timestamps'])
    _, init_feat = head.matching_queries(1)
    outs = []
    with torch.no_grad(), full_fp32_matmuls():
        for i in range(ref['layer_query_bbox_in'].shape[0]):
            query_bbox = torch.from_numpy(ref['layer_query_bbox_in'][i])[None].to(device)     # [1, Q, 10]
            query_feat = init_feat if i == 0 else \
                torch.from_numpy(layer_io['query_feat_in_layers1to5'][i - 1])[None].to(device)  # [1, Q, C]
            feat, cls, bbox = layer(query_bbox, query_feat, grouped, run['lidar2img'], time_diff,
                                    run['image_hw'])
            outs.append(dict(cls=cls[0].cpu().numpy(), bbox=bbox[0].cpu().numpy(),
                             query_feat_out=feat[0].cpu().numpy()))
    rep: list[str] = []
    ok = check_lib.check_teacher_forced(outs, ref, layer_io, rep)
    assert ok, failure_message(fixture.name, rep)
