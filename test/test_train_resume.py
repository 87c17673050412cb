"""A killed training run resumes to exactly the parameters of an uninterrupted run.

Uses a small in-memory dataset (random pixels, fixed boxes, a ring of six cameras) so the
test isolates the training loop: checkpoint contents, data order, per-sample augmentation
seeds, and RNG states. The synthetic nuScenes data is exercised in test_train_synthetic.py.
"""
import os
import signal

import numpy as np
import pytest
import torch

from camera_rigs import ring_lidar2img
from sparsebev_core.engine.train import (FINAL_WEIGHTS, TrainOptions, per_process_batch_size,
                                         set_random_seed, train)
from sparsebev_core.engine.train_data import collate_samples
from sparsebev_core.engine.train_state import LATEST
from sparsebev_core.recipe.presets import get_preset


class RandomPixels(torch.utils.data.Dataset):
    """Samples in the training-batch format; pixels and the box jitter use the global RNGs,
    as an augmenting dataset would."""

    def __init__(self, cfg, num_samples=4):
        self.cfg, self.num_samples = cfg, num_samples
        self.lidar2img = np.concatenate([ring_lidar2img(cfg.input_size)] * cfg.num_frames)

    def __len__(self):
        return self.num_samples

    def __getitem__(self, index):
        H, W = self.cfg.input_size
        T = self.cfg.num_frames
        boxes = np.array([[10.0, 5.0, 0.0, 4.0, 2.0, 1.5, 0.3, 1.0, 0.0],
                          [-8.0, -12.0, 0.2, 0.8, 0.8, 1.7, 1.0, 0.0, 0.0]])
        boxes[:, :2] += np.random.uniform(-1, 1, (2, 2))
        return {'images': torch.randint(0, 256, (T * 6, 3, H, W), dtype=torch.uint8),
                'lidar2img': self.lidar2img,
                'timestamps': 1.6e9 + np.repeat(-0.5 * np.arange(T), 6),
                'gt_boxes': boxes.astype(np.float32), 'gt_labels': np.array([0, 8])}


class ActWhenLoading(torch.utils.data.Dataset):
    """Calls ``action()`` when the ``after``-th sample is loaded (a kill or crash at a known
    point, without timing races); the default action sends SIGTERM to this process."""

    def __init__(self, dataset, after, action=lambda: os.kill(os.getpid(), signal.SIGTERM)):
        self.dataset, self.after, self.action, self.loaded = dataset, after, action, 0

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, index):
        self.loaded += 1
        if self.loaded == self.after:
            self.action()
        return self.dataset[index]


def tiny_cfg():
    cfg = get_preset('tiny')
    cfg.train.warmup_iters = 3
    cfg.train.total_batch_size = 2
    return cfg


def run(cfg, dataset, work_dir, **options):
    set_random_seed(0, deterministic=True)
    from sparsebev_core.model.detector import build_model
    model = build_model(cfg)
    summary = train(cfg, dataset, TrainOptions(work_dir=str(work_dir), epochs=2, seed=0,
                                               deterministic=True, progress=False,
                                               tensorboard=False, **options),
                    torch.device('cpu'), model=model)
    return model, summary


def assert_same_parameters(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    different = [k for k in sa if not torch.equal(sa[k], sb[k])]
    assert not different, f'parameters differ after resume: {different[:5]}'


@pytest.fixture(scope='module')
def uninterrupted(tmp_path_factory):
    torch.set_num_threads(1)
    cfg = tiny_cfg()
    model, summary = run(cfg, RandomPixels(cfg), tmp_path_factory.mktemp('full'))
    return cfg, model, summary


def test_uninterrupted_run_finishes_and_writes_weights(uninterrupted, tmp_path):
    cfg, model, summary = uninterrupted
    assert summary['finished'] and summary['position'].global_iteration == 4
    final = torch.load(os.path.join(os.path.dirname(summary['checkpoint']), FINAL_WEIGHTS))
    assert set(final['state_dict']) == set(model.state_dict())
    assert final['meta']['preset'] == 'tiny'


def test_run_stopped_mid_epoch_resumes_to_the_same_parameters(uninterrupted, tmp_path):
    cfg, full_model, _ = uninterrupted
    _, first = run(cfg, RandomPixels(cfg), tmp_path, max_iters=3)   # stops inside epoch 2
    assert not first['finished'] and first['position'].iteration_in_epoch == 1
    resumed, second = run(cfg, RandomPixels(cfg), tmp_path, resume='auto')
    assert second['finished']
    assert_same_parameters(full_model, resumed)


def test_sigterm_writes_a_checkpoint_and_the_resumed_run_matches(uninterrupted, tmp_path):
    cfg, full_model, _ = uninterrupted
    killed = ActWhenLoading(RandomPixels(cfg), after=2)   # during the first batch
    _, first = run(cfg, killed, tmp_path)
    assert not first['finished'] and first['position'].global_iteration == 1
    assert (tmp_path / LATEST).is_file()
    resumed, _ = run(cfg, RandomPixels(cfg), tmp_path, resume='auto')
    assert_same_parameters(full_model, resumed)


def test_resuming_with_another_random_state_diverges(uninterrupted, tmp_path):
    # guards the two tests above against passing because nothing random happens after the stop
    cfg, full_model, _ = uninterrupted
    run(cfg, RandomPixels(cfg), tmp_path, max_iters=3)
    ckpt = torch.load(tmp_path / LATEST, weights_only=False)
    torch.manual_seed(123)
    ckpt['rng'][0]['torch'] = torch.get_rng_state()
    torch.save(ckpt, tmp_path / 'other_rng.pth')
    other, _ = run(cfg, RandomPixels(cfg), tmp_path / 'other', resume=str(tmp_path / 'other_rng.pth'))
    sa, sb = full_model.state_dict(), other.state_dict()
    assert any(not torch.equal(sa[k], sb[k]) for k in sa)


def test_batch_is_split_over_processes():
    assert per_process_batch_size(8, 8) == 1 and per_process_batch_size(8, 2) == 4
    with pytest.raises(ValueError, match='cannot be split'):
        per_process_batch_size(1, 2)


def test_collate_stacks_frames_and_keeps_boxes_per_sample():
    cfg = tiny_cfg()
    data = RandomPixels(cfg)
    batch = collate_samples([data[0], data[1]])
    T6 = cfg.num_frames * 6
    assert batch['images'].shape == (2, T6, 3, *cfg.input_size)
    assert batch['lidar2img'].shape == (2, T6, 4, 4) and batch['timestamps'].dtype == torch.float64
    assert [b.shape for b in batch['gt_boxes']] == [(2, 9), (2, 9)]


def test_resume_with_another_batch_size_is_refused(uninterrupted, tmp_path):
    cfg, _, _ = uninterrupted
    run(cfg, RandomPixels(cfg), tmp_path, max_iters=1)
    with pytest.raises(ValueError, match='total_batch_size=2'):
        run(cfg, RandomPixels(cfg), tmp_path, resume='auto', batch_size=1)
