"""Streaming-video training of ``tiny_memory`` on synthetic nuScenes-format scenes (CPU): the
real info files and dataset (poses, segments), the real ``torchrun`` command, and a model that
learns to detect the objects of a scene it never saw.

The learning check is the CI-sized counterpart of test_train_detects.py (v1 ``tiny``): a few
hundred iterations on four short training scenes, scored by the devkit on the held-out
validation scene, frame after frame with the recurrent state carried (as a stream runs it).
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from sparsebev_core.engine.train import TrainOptions, set_random_seed, train
from sparsebev_core.engine.train_state import LATEST

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope='module')
def synthetic_root(tmp_path_factory):
    """Four training scenes and one validation scene of 8 keyframes (4 s) each."""
    from sparsebev_core.data.synthetic.scenes import make_synthetic
    return make_synthetic(tmp_path_factory.mktemp('syn'), num_scenes=5, seed=5,
                          keyframes_per_scene=8, progress=False)


def test_train_command_on_two_cpu_processes(synthetic_root, tmp_path):
    """torchrun with 2 processes (gloo): each process walks its own slot of the global batch
    and the checkpoint keeps both processes' carried states."""
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONPATH=str(REPO))
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node', '2',
           '-m', 'sparsebev_core.engine.train', '--preset', 'tiny_memory',
           '--data', str(synthetic_root), '--version', 'v1.0-mini', '--device', 'cpu',
           '--batch-size', '2', '--max-iters', '2', '--work-dir', str(tmp_path), '--no-progress']
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    state = torch.load(tmp_path / LATEST, weights_only=True)
    assert state['meta']['world_size'] == 2 and state['meta']['total_batch_size'] == 2
    assert state['position']['global_iteration'] == 2
    assert len(state['rng']) == 2 and len(state['stream']) == 2
    first, second = state['stream']
    assert first['memory_rows'].tolist() == second['memory_rows'].tolist() == [32]   # 2 frames in
    assert first['stamp'] != second['stamp']                 # two slots, two different segments
    assert 'stopped at epoch 0, iteration 2' in result.stdout


def detect_scenes(model, cfg, root, split: str) -> dict:
    """The devkit's metrics of ``model`` on ``split``, every scene a stream: frames in time
    order, the recurrent state carried from frame to frame and started afresh per scene."""
    from nuscenes import NuScenes

    from sparsebev_core.data.dataset import build_dataset
    from sparsebev_core.data.infos import resolve_split
    from sparsebev_core.engine.evaluate import run_detection_eval, to_submission, write_submission
    from sparsebev_core.frame import Detections
    from sparsebev_core.model.recurrent_state import EgoMotion

    dataset = build_dataset(cfg, root, version='v1.0-mini', split=split, training=False)
    order = sorted(range(len(dataset)), key=lambda i: (dataset.infos[i]['scene_token'],
                                                       dataset.infos[i]['timestamp']))
    results, state, previous = {}, None, None
    model.eval()
    with torch.no_grad():
        for index in order:
            sample, info = dataset[index], dataset.infos[index]
            if previous is not None and previous['scene'] != info['scene_token']:
                state = None
            motion = None if state is None else EgoMotion.from_poses(
                previous['stamp'], sample['stamp'], previous['pose'][None], sample['model_pose'][None])
            features = model.extract_features(sample['images'][None])
            outputs, state = model.forward_recurrent(features, sample['lidar2img'][None], state, motion)
            found = Detections.from_decoded(model.decode(outputs)[0], class_names=cfg.class_names)
            results[info['token']] = (found.boxes, found.scores, found.labels)
            previous = dict(scene=info['scene_token'], stamp=sample['stamp'], pose=sample['model_pose'])
    model.train()
    out_dir = Path(root) / f'eval_{split}'
    path = write_submission(to_submission(results, dataset.infos, cfg.class_names),
                            out_dir / 'results_nusc.json')
    return run_detection_eval(NuScenes(version='v1.0-mini', dataroot=str(root), verbose=False),
                              path, resolve_split('v1.0-mini', split), out_dir)
