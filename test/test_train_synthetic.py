"""Training the tiny preset end to end on synthetic nuScenes-format scenes (CPU).

The data is generated with ``make_synthetic`` and read through the real info files and the
real multi-frame dataset (with augmentation), the model is the real detector with query
denoising, and the command line is the real ``sparsebev train`` / ``torchrun``.
"""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sparsebev_core.engine.train import TrainOptions, train
from sparsebev_core.engine.train_data import attach_image_augmentations
from sparsebev_core.engine.train_state import LATEST

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope='module')
def synthetic_root(tmp_path_factory):
    from sparsebev_core.data.synthetic.scenes import make_synthetic
    return make_synthetic(tmp_path_factory.mktemp('syn'), num_scenes=2, seed=3,
                          keyframes_per_scene=8, progress=False)


def test_a_few_dozen_steps_make_the_loss_fall(synthetic_root, tmp_path):
    from sparsebev_core.data.dataset import build_dataset
    from sparsebev_core.model.detector import build_model
    from sparsebev_core.recipe.presets import get_preset

    threads = torch.get_num_threads()
    torch.set_num_threads(1)          # busy-waiting threads cost more than they give on a shared CPU
    torch.manual_seed(0)
    cfg = get_preset('tiny')
    dataset = build_dataset(cfg, synthetic_root, version='v1.0-mini', split='train')
    assert len(dataset) == 8
    model = build_model(cfg)
    attach_image_augmentations(model, cfg)
    try:
        summary = train(cfg, dataset, TrainOptions(work_dir=str(tmp_path), epochs=6, max_iters=24,
                                                   progress=False, tensorboard=False),
                        torch.device('cpu'), model=model)
    finally:
        torch.set_num_threads(threads)
    history = summary['loss_history']
    assert len(history) == 24 and all(map(torch.isfinite, torch.tensor(history)))
    first, last = sum(history[:4]) / 4, sum(history[-4:]) / 4
    assert last < 0.8 * first, f'loss did not fall clearly: {first:.2f} -> {last:.2f}'


def test_train_command_on_two_cpu_processes(synthetic_root, tmp_path):
    """torchrun with 2 processes (gloo): the total batch of 2 is split 1 + 1."""
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONPATH=str(REPO))
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node', '2',
           '-m', 'sparsebev_core.engine.train', '--preset', 'tiny', '--data', str(synthetic_root),
           '--version', 'v1.0-mini', '--device', 'cpu', '--batch-size', '2', '--max-iters', '2',
           '--work-dir', str(tmp_path), '--no-progress']
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    state = torch.load(tmp_path / LATEST, weights_only=False)
    assert state['meta']['world_size'] == 2 and state['meta']['total_batch_size'] == 2
    assert state['position']['global_iteration'] == 2
    assert len(state['rng']) == 2                       # each rank's random state is kept
    assert 'stopped at epoch 0, iteration 2' in result.stdout


def test_train_command_writes_tensorboard_scalars_and_resumes(synthetic_root, tmp_path):
    base = [sys.executable, '-m', 'sparsebev_cli.cli', 'train', '--preset', 'tiny',
            '--data', str(synthetic_root), '--version', 'v1.0-mini', '--device', 'cpu',
            '--work-dir', str(tmp_path), '--log-interval', '1', '--no-progress']
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS='1')
    first = subprocess.run(base + ['--max-iters', '1'], env=env, capture_output=True, text=True,
                           timeout=300)
    assert first.returncode == 0, first.stderr[-3000:]
    second = subprocess.run(base + ['--max-iters', '2', '--resume'], env=env, capture_output=True,
                            text=True, timeout=300)
    assert second.returncode == 0, second.stderr[-3000:]
    assert 'iteration 2' in second.stdout
    events = list((tmp_path / 'tensorboard').glob('events.out.tfevents.*'))
    assert events, 'no tensorboard event file'
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    scalars = EventAccumulator(str(events[0].parent)).Reload().Tags()['scalars']
    assert {'train/loss', 'train/loss_cls', 'train/loss_bbox', 'train/lr'} <= set(scalars)
