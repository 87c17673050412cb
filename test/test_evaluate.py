"""Evaluation: our box conversion feeds the real devkit; online and offline inference agree."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from nuscenes import NuScenes

from sparsebev_cli import cli
from sparsebev_core.data.dataset import build_dataset
from sparsebev_core.data.infos import scenes_in_time_order
from sparsebev_core.data.synthetic.scenes import make_synthetic
from sparsebev_core.engine import evaluate as ev
from sparsebev_core.geometry import gravity_to_bottom_center
from sparsebev_core.model.detector import build_model
from sparsebev_core.recipe.presets import get_preset

KEYFRAMES = 4


@pytest.fixture(scope='module')
def root(tmp_path_factory):
    # one scene = the mini_val scene-0103
    return make_synthetic(tmp_path_factory.mktemp('syn'), num_scenes=1, seed=21,
                          keyframes_per_scene=KEYFRAMES, progress=False)


@pytest.fixture(scope='module')
def nusc(root):
    return NuScenes('v1.0-mini', str(root), verbose=False)


@pytest.fixture(scope='module')
def infos(root):
    return build_dataset(get_preset('tiny'), root, version='v1.0-mini', split='val',
                         load_images=False).infos


def _gt_as_detections(infos, yaw_offset=0.0):
    """Ground truth of each keyframe as if a detector had returned it (bottom-centre boxes)."""
    out = {}
    for info in infos:
        keep = info['valid_flag'] & (info['gt_labels'] >= 0)
        boxes = gravity_to_bottom_center(info['gt_boxes'][keep])
        boxes[:, 7:9] = np.nan_to_num(boxes[:, 7:9])
        boxes[:, 6] += yaw_offset
        out[info['token']] = (boxes, np.ones(len(boxes)), info['gt_labels'][keep])
    return out


def _evaluate(detections, infos, nusc, tmp_path, ego_from_model=None):
    if ego_from_model is not None:
        infos = [dict(i, T_ego_model=ego_from_model) for i in infos]
    path = ev.write_submission(ev.to_submission(detections, infos), tmp_path / 'results.json')
    return ev.run_detection_eval(nusc, path, 'mini_val', tmp_path / 'eval')


def test_ground_truth_through_our_conversion_gets_perfect_scores(infos, nusc, tmp_path):
    """Guards every frame and convention: model -> ego -> global, gravity centre, (w, l, h),
    yaw quaternion, velocity rotation, class ranges, attribute rule."""
    m = _evaluate(_gt_as_detections(infos), infos, nusc, tmp_path)
    assert m['mean_ap'] > 0.99 and m['nd_score'] > 0.99, ev.metrics_table(m)
    tp = m['tp_errors']
    assert tp['trans_err'] < 0.01 and tp['scale_err'] < 0.01 and tp['orient_err'] < 0.01
    assert tp['vel_err'] < 0.05 and tp['attr_err'] < 0.05
    assert (tmp_path / 'eval' / 'metrics_summary.json').exists()


def test_a_broken_convention_is_caught_by_the_same_check(infos, nusc, tmp_path):
    turned = _evaluate(_gt_as_detections(infos, yaw_offset=np.pi / 2), infos, nusc, tmp_path / 'a')
    assert turned['tp_errors']['orient_err'] > 1.0 and turned['nd_score'] < 0.9
    no_calibration = _evaluate(_gt_as_detections(infos), infos, nusc, tmp_path / 'b',
                               ego_from_model=np.eye(4))            # lidar axes taken as ego
    assert no_calibration['mean_ap'] < 0.3


def test_class_range_is_applied_in_the_ego_frame():
    # model frame = ego frame shifted 10 m forward: a car 45 m ahead of the model origin is
    # 55 m from the ego origin and falls outside the 50 m car range
    T_ego_model = np.eye(4)
    T_ego_model[0, 3] = 10.0
    boxes = np.array([[45.0, 0, 0, 4, 2, 1.5, 0, 0, 0], [35.0, 0, 0, 4, 2, 1.5, 0, 0, 0],
                      [35.0, 0, 0, 0.5, 0.5, 1.7, 0, 0, 0]])
    labels = np.array([0, 0, 8])                                     # car, car, pedestrian
    out = ev.boxes_to_submission(boxes, np.ones(3), labels, 'tok', T_ego_model, np.eye(4))
    assert [(r['detection_name'], round(r['translation'][0])) for r in out] == [('car', 45)]
    assert out[0]['size'] == pytest.approx([2, 4, 1.5])                # (w, l, h)
    assert out[0]['translation'][2] == pytest.approx(0.75)             # gravity centre


@pytest.fixture(scope='module')
def tiny_model():
    torch.manual_seed(0)
    cfg = get_preset('tiny')
    cfg.head.score_threshold = 0.0                                     # keep the top-k boxes
    return build_model(cfg).eval(), cfg


def test_online_and_offline_inference_agree(tiny_model, infos, root):
    model, cfg = tiny_model
    online = ev.infer_online(model, cfg, infos, root, progress=False)
    offline = ev.infer_offline(model, cfg, infos, root, batch_size=2, progress=False)
    assert online.keys() == offline.keys() == {i['token'] for i in infos}
    for token in online:
        (b_on, s_on, l_on), (b_off, s_off, l_off) = online[token], offline[token]
        assert len(s_on) == len(s_off) > 50
        np.testing.assert_allclose(s_on, s_off, atol=1e-5)
        for i in range(20):                        # order-free: near-equal scores may swap
            same = (np.abs(s_off - s_on[i]) < 1e-5) & (l_off == l_on[i]) & \
                np.all(np.abs(b_off - b_on[i]) < 1e-3, axis=1)
            assert same.any(), (token, i)


@pytest.fixture(scope='module')
def confident_checkpoint(tiny_model, tmp_path_factory):
    """Tiny random weights whose class logits are raised so that boxes pass the 0.05 score
    threshold (random boxes, but real ones to convert, gather and score)."""
    model, _ = tiny_model
    state = {k: v.clone() for k, v in model.state_dict().items()}
    bias = [k for k in state if 'cls_branch' in k and k.endswith('bias') and state[k].numel() == 10]
    assert len(bias) == 1
    state[bias[0]] += 3.0
    path = tmp_path_factory.mktemp('ckpt') / 'tiny.pth'
    torch.save({'state_dict': state}, path)
    return path


def _eval_args(ckpt, root, out):
    return ['eval', '--checkpoint', str(ckpt), '--data', str(root), '--preset', 'tiny',
            '--version', 'v1.0-mini', '--mode', 'offline', '--out', str(out), '--device', 'cpu']


@pytest.fixture(scope='module')
def single_process_eval(confident_checkpoint, root, tmp_path_factory):
    out = tmp_path_factory.mktemp('eval1')
    threads = torch.get_num_threads()
    torch.set_num_threads(1)              # the same arithmetic as the torchrun workers below
    try:
        assert cli.main(_eval_args(confident_checkpoint, root, out)) == 0
    finally:
        torch.set_num_threads(threads)
    return out


def test_eval_cli_writes_results_and_metrics(single_process_eval):
    summary = json.loads((single_process_eval / 'metrics_summary.json').read_text())
    assert 0.0 <= summary['nd_score'] <= 1.0 and 'note' not in summary    # the devkit ran
    assert summary['inference'] == dict(mode='offline', samples=KEYFRAMES,
                                        seconds=summary['inference']['seconds'], processes=1)
    results = json.loads((single_process_eval / 'results_nusc.json').read_text())
    assert len(results['results']) == KEYFRAMES and results['meta']['use_camera']
    assert all(len(boxes) > 10 for boxes in results['results'].values())


def test_eval_under_torchrun_gathers_the_same_results(single_process_eval, confident_checkpoint,
                                                      root, tmp_path):
    """Two CPU processes (gloo) split the samples; rank 0 gathers and scores all of them."""
    import os
    import subprocess
    import sys
    from pathlib import Path
    repo = Path(__file__).resolve().parents[1]
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONPATH=str(repo))
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node', '2',
           '-m', 'sparsebev_cli.cli'] + _eval_args(confident_checkpoint, root, tmp_path)
    run = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    summary = json.loads((tmp_path / 'metrics_summary.json').read_text())
    assert summary['inference']['processes'] == 2
    one = json.loads((single_process_eval / 'results_nusc.json').read_text())['results']
    two = json.loads((tmp_path / 'results_nusc.json').read_text())['results']
    assert one.keys() == two.keys()
    for token in one:
        a = sorted(one[token], key=lambda r: -r['detection_score'])
        b = sorted(two[token], key=lambda r: -r['detection_score'])
        assert len(a) == len(b)
        np.testing.assert_allclose([r['detection_score'] for r in a],
                                   [r['detection_score'] for r in b], atol=1e-5)


def test_a_submission_without_boxes_scores_zero_instead_of_crashing(infos, nusc, tmp_path):
    empty = {i['token']: (np.zeros((0, 9)), np.zeros(0), np.zeros(0, np.int64)) for i in infos}
    m = _evaluate(empty, infos, nusc, tmp_path)
    assert m['mean_ap'] == 0.0 and m['nd_score'] == 0.0 and m['tp_errors']['trans_err'] == 1.0


# ------------------------------------------------------------------ SparseBEV++ (recurrent)
def test_scenes_run_one_after_the_other_each_in_time_order():
    infos = [dict(token=t, scene_token=s, timestamp=ts) for t, s, ts in
             [('b1', 'B', 5.0), ('a2', 'A', 6.0), ('a1', 'A', 4.0), ('b2', 'B', 5.5), ('c1', 'C', 1.0)]]
    assert [i['token'] for i in scenes_in_time_order(infos)] == ['c1', 'a1', 'a2', 'b1', 'b2']


@pytest.fixture(scope='module')
def two_scenes(tmp_path_factory):
    """Two training scenes (3 keyframes each) of the synthetic set."""
    return make_synthetic(tmp_path_factory.mktemp('syn2'), num_scenes=3, seed=5,
                          keyframes_per_scene=3, progress=False)


def test_a_recurrent_model_evaluates_online_scene_by_scene(two_scenes, tmp_path):
    """tiny_memory through ``infer_online`` and ``sparsebev eval``: the recurrent state is
    cleared at the second scene's start (ours), or carried into it (--recurrent-reset official);
    the offline mode is refused."""
    from sparsebev_core.streaming.options import StreamingOptions
    torch.manual_seed(0)
    cfg = get_preset('tiny_memory')
    cfg.head.score_threshold = 0.0
    model = build_model(cfg).eval()
    infos = build_dataset(cfg, two_scenes, version='v1.0-mini', split='train', load_images=False).infos
    ordered = scenes_in_time_order(infos)
    assert len(ordered) == 6 and len({i['scene_token'] for i in ordered}) == 2
    clear = ev.infer_online(model, cfg, infos, two_scenes, progress=False)
    kept = ev.infer_online(model, cfg, infos, two_scenes, progress=False,
                           options=StreamingOptions(recurrent_reset='official'))
    first, second = ordered[0]['scene_token'], ordered[3]['scene_token']
    for info in ordered:
        (b_clear, s_clear, _), (b_kept, s_kept, _) = clear[info['token']], kept[info['token']]
        same = len(s_clear) == len(s_kept) and np.array_equal(s_clear, s_kept)
        assert same == (info['scene_token'] == first), info['token']     # the memory crossed over
    assert second != first

    ckpt = tmp_path / 'tiny_memory.pth'
    torch.save({'state_dict': model.state_dict()}, ckpt)
    args = ['eval', '--checkpoint', str(ckpt), '--data', str(two_scenes), '--preset', 'tiny_memory',
            '--version', 'v1.0-mini', '--split', 'train', '--out', str(tmp_path / 'out'),
            '--device', 'cpu', '--recurrent-reset', 'official']
    assert cli.main(args) == 0
    summary = json.loads((tmp_path / 'out' / 'metrics_summary.json').read_text())
    assert summary['inference']['mode'] == 'online' and summary['inference']['samples'] == 6
    assert cli.main(args[:-2] + ['--mode', 'offline']) == 1                  # typed error, one line
