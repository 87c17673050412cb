"""Training options that cannot mean anything are refused naming the option (row 10 of
docs/bad_input.md), and a run killed before its first epoch ends leaves a checkpoint to resume
from (row 11): ``checkpoint_interval``."""
from __future__ import annotations

import argparse

import pytest
import torch

from sparsebev_core.data.synthetic.scenes import check_image_size, make_synthetic
from sparsebev_core.engine import train as train_module
from sparsebev_core.engine.train import (FINAL_WEIGHTS, TrainArgumentError, TrainOptions,
                                         validate_train_options)
from sparsebev_core.engine.train_state import LATEST
from sparsebev_core.errors import UsageError
from test_train_resume import ActWhenLoading, RandomPixels, assert_same_parameters, run, tiny_cfg


@pytest.mark.parametrize('name, value, flag', [
    ('epochs', 0, '--epochs'), ('epochs', -1, '--epochs'), ('batch_size', 0, '--batch-size'),
    ('max_iters', 0, '--max-iters'), ('max_iters', -5, '--max-iters'), ('workers', -1, '--workers'),
    ('log_interval', 0, '--log-interval'), ('checkpoint_interval', -1, '--checkpoint-interval'),
    ('epochs', 1.5, '--epochs'),
])
def test_meaningless_training_options_are_refused_naming_the_option(tmp_path, name, value, flag):
    options = TrainOptions(work_dir=str(tmp_path / 'run'), **{name: value})
    with pytest.raises(TrainArgumentError, match=f'^{flag} must be an integer >= '):
        validate_train_options(options)
    cfg = tiny_cfg()
    with pytest.raises(UsageError, match=flag):
        train_module.train(cfg, RandomPixels(cfg), options, torch.device('cpu'))
    assert not (tmp_path / 'run').exists()                      # refused before any output


def test_valid_options_pass_unchanged(tmp_path):
    options = TrainOptions(work_dir=str(tmp_path), epochs=1, batch_size=1, max_iters=1, workers=0,
                           checkpoint_interval=0)
    assert validate_train_options(options) is options


def test_the_cli_refuses_before_loading_any_data(tmp_path):
    parser = argparse.ArgumentParser()
    train_module.add_arguments(parser)
    args = parser.parse_args(['--preset', 'tiny', '--epochs', '-1', '--data', str(tmp_path / 'none'),
                              '--work-dir', str(tmp_path / 'run')])
    with pytest.raises(TrainArgumentError, match='--epochs'):
        train_module.main(args)
    assert not (tmp_path / 'run' / FINAL_WEIGHTS).exists()


def crash():
    """A crash or SIGKILL while loading: no SIGTERM save."""
    raise RuntimeError('killed')


def test_a_crash_inside_the_first_epoch_resumes_from_the_interval_checkpoint(tmp_path):
    torch.set_num_threads(1)
    cfg = tiny_cfg()                                  # 4 samples, batch 2: 2 iterations per epoch
    full, _ = run(cfg, RandomPixels(cfg), tmp_path / 'full', checkpoint_interval=0)
    with pytest.raises(RuntimeError, match='killed'):
        run(cfg, ActWhenLoading(RandomPixels(cfg), after=3, action=crash), tmp_path / 'crash',
            checkpoint_interval=1)
    saved = torch.load(tmp_path / 'crash' / LATEST, weights_only=True)
    assert saved['position'] == {'epoch': 0, 'iteration_in_epoch': 1, 'global_iteration': 1}
    resumed, summary = run(cfg, RandomPixels(cfg), tmp_path / 'crash', resume='auto')
    assert summary['finished']
    assert_same_parameters(full, resumed)


@pytest.mark.parametrize('size', [(0, 0), (-1, 225), (400, 0), (100000, 10)])
def test_make_synthetic_refuses_a_meaningless_image_size(tmp_path, size):
    with pytest.raises(UsageError, match='--size'):
        make_synthetic(tmp_path / 'data', image_size=size, progress=False)
    assert not (tmp_path / 'data').exists()
    assert check_image_size((64, 36)) == (64, 36)


def test_resume_from_a_missing_or_foreign_file_is_a_typed_error(tmp_path):
    from sparsebev_core.checkpoints.official import CheckpointError
    from sparsebev_core.engine.train_state import TrainingCheckpointError
    from sparsebev_core.errors import InputError
    cfg = tiny_cfg()
    with pytest.raises(TrainingCheckpointError, match='no checkpoint to resume from'):
        run(cfg, RandomPixels(cfg), tmp_path / 'a', resume='auto')
    notes = tmp_path / 'notes.txt'
    notes.write_text('epoch 3 looked good\n')
    with pytest.raises(CheckpointError, match='is a text file') as err:
        run(cfg, RandomPixels(cfg), tmp_path / 'b', resume=str(notes))
    assert isinstance(err.value, InputError)


def test_cuda_without_cuda_names_the_device():
    if torch.cuda.is_available():
        pytest.skip('this machine has CUDA')
    from sparsebev_core.devices import DeviceError
    with pytest.raises(DeviceError, match="device 'cuda' requested but torch sees no CUDA"):
        train_module.resolve_device('cuda', local_rank=0)
