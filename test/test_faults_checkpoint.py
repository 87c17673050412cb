"""Bad checkpoint files are refused with a message saying what is wrong, before any weight is
used (rows 4-7, 11, 18 of docs/bad_input.md); checkpoint writes leave no half files."""
from __future__ import annotations

import math

import pytest
import torch

from fault_cases import real_jpeg
from sparsebev_cli import cli
from sparsebev_core.checkpoints import files
from sparsebev_core.checkpoints.files import atomic_save, remove_stale_temporaries, temporary_path
from sparsebev_core.checkpoints.official import (CheckpointError, check_archive, describe_file,
                                                 load_checkpoint, read_checkpoint)
from sparsebev_core.engine.train_state import (load_training_state, save_training_state,
                                               TrainPosition)
from sparsebev_core.errors import InputError
from sparsebev_core.model.detector import build_model
from sparsebev_core.recipe.presets import get_preset


@pytest.fixture(scope='module')
def cfg():
    return get_preset('tiny')


@pytest.fixture(scope='module')
def saved(cfg, tmp_path_factory):
    torch.manual_seed(0)
    model = build_model(cfg)
    path = tmp_path_factory.mktemp('ckpt') / 'model.pth'
    torch.save({'state_dict': model.state_dict()}, path)
    return model, path


def fresh(cfg):
    torch.manual_seed(1)
    return build_model(cfg)


@pytest.mark.parametrize('value', [math.nan, math.inf, -math.inf])
def test_non_finite_weights_are_refused_naming_the_tensor(cfg, saved, tmp_path, value):
    model, _ = saved
    state = {k: v.clone() for k, v in model.state_dict().items()}
    name = next(k for k, v in state.items() if v.is_floating_point() and 'pts_bbox_head' in k)
    state[name].view(-1)[0] = value
    path = tmp_path / 'bad.pth'
    torch.save({'state_dict': state}, path)
    target = fresh(cfg)
    before = {k: v.clone() for k, v in target.state_dict().items()}
    with pytest.raises(CheckpointError, match=f'NaN or Inf.*{name}'):
        load_checkpoint(target, path)
    with pytest.raises(CheckpointError, match=name):
        load_checkpoint(target, {'state_dict': state})
    assert all(torch.equal(before[k], v) for k, v in target.state_dict().items())   # untouched


def test_bytes_zeroed_inside_the_file_fail_the_crc_check(cfg, saved, tmp_path):
    _, path = saved
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 64] = b'\x00' * 64
    damaged = tmp_path / 'damaged.pth'
    damaged.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match='CRC|damaged'):
        load_checkpoint(fresh(cfg), damaged)


def test_a_truncated_file_is_named_damaged_or_truncated(cfg, saved, tmp_path):
    _, path = saved
    cut = tmp_path / 'cut.pth'
    cut.write_bytes(path.read_bytes()[:len(path.read_bytes()) // 3])
    with pytest.raises(CheckpointError, match='damaged or truncated'):
        read_checkpoint(cut)


@pytest.mark.parametrize('content, what', [
    (b'', 'an empty file'),
    (b'hello, this is not a model\n', 'a text file'),
    (b'preset: tiny\ncheckpoint: x.pth\n', 'a YAML/JSON text file'),
    (real_jpeg(), 'a JPEG image'),
    (b'SQLite format 3\x00' + b'\x00' * 100, 'an SQLite database'),
    (bytes(range(256)), 'binary data'),
])
def test_foreign_files_are_named_for_what_they_are(cfg, tmp_path, content, what):
    path = tmp_path / 'model.pth'
    path.write_bytes(content)
    assert what in describe_file(path)
    with pytest.raises(CheckpointError, match=f'is {what}.*not a PyTorch checkpoint') as err:
        load_checkpoint(fresh(cfg), path)
    assert isinstance(err.value, InputError) and str(path) in str(err.value)
    assert '--allow-pickle' not in str(err.value)


def test_pickle_refusal_names_a_way_that_exists_everywhere(cfg, tmp_path):
    path = tmp_path / 'pickled.pth'
    torch.save({'state_dict': {}, 'meta': {'thing': object.__new__(TrainPosition)}}, path)
    with pytest.raises(CheckpointError, match='convert-checkpoint --allow-pickle'):
        read_checkpoint(path)
    check_archive(path)                                      # the archive itself is intact


def _training_objects(model, cfg):
    from sparsebev_core.engine.optim import CosineWarmupSchedule, build_optimizer, build_scaler
    optimizer = build_optimizer(model, cfg.train)
    schedule = CosineWarmupSchedule(optimizer, 2, cfg.train.warmup_iters, cfg.train.warmup_ratio,
                                    cfg.train.min_lr_ratio)
    return optimizer, schedule, build_scaler(torch.device('cpu'), cfg.train.loss_scale)


def test_the_trainers_latest_pth_loads_with_load_checkpoint(cfg, saved, tmp_path):
    model, _ = saved
    path = save_training_state(tmp_path, model, *_training_objects(model, cfg), TrainPosition(0, 1, 1),
                               meta={'preset': 'tiny'})
    torch.load(path, weights_only=True)                      # no pickled objects left
    target = fresh(cfg)
    load_checkpoint(target, path)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in target.state_dict().items())
    # and it still resumes, with the numpy random state restored exactly
    import numpy as np
    np.random.seed(7)
    expected = np.random.get_state()[1].copy()
    path = save_training_state(tmp_path, model, *_training_objects(model, cfg), TrainPosition(0, 1, 1))
    np.random.seed(8)
    position, _ = load_training_state(path, fresh(cfg), *_training_objects(fresh(cfg), cfg))
    assert position == TrainPosition(0, 1, 1) and np.array_equal(np.random.get_state()[1], expected)


def test_a_failing_save_keeps_the_old_file_and_leaves_no_temporary(tmp_path, monkeypatch):
    path = atomic_save({'x': torch.zeros(3)}, tmp_path / 'latest.pth')
    real_save = torch.save

    def save_then_fail(obj, f):           # a disk that fills up after 100 bytes
        f.write(b'\x00' * 100)
        raise OSError(28, 'No space left on device')
    monkeypatch.setattr(files.torch, 'save', save_then_fail)
    with pytest.raises(OSError, match='No space'):
        atomic_save({'x': torch.ones(3)}, path)
    monkeypatch.setattr(files.torch, 'save', real_save)
    assert not temporary_path(path).exists()
    assert torch.equal(torch.load(path)['x'], torch.zeros(3))


def test_temporaries_of_a_killed_save_are_replaced_and_cleaned(tmp_path):
    stale_old = tmp_path / '.latest.pth.tmp12345'            # the pid-named form of old versions
    stale_old.write_bytes(b'x' * 1000)
    temporary_path(tmp_path / 'latest.pth').write_bytes(b'half')
    atomic_save({'x': torch.zeros(1)}, tmp_path / 'latest.pth')
    assert not temporary_path(tmp_path / 'latest.pth').exists()   # same name: replaced
    assert remove_stale_temporaries(tmp_path) == [stale_old] and not stale_old.exists()
    assert (tmp_path / 'latest.pth').is_file()


def test_convert_checkpoint_refuses_an_existing_output_without_force(cfg, saved, tmp_path, capsys):
    _, src = saved
    out = tmp_path / 'out.pth'
    out.write_bytes(b'keep me')
    assert cli.main(['convert-checkpoint', str(src), str(out), '--preset', 'tiny']) == 1
    captured = capsys.readouterr()
    assert 'already exists' in captured.err and '--force' in captured.err and 'error' not in captured.out
    assert out.read_bytes() == b'keep me'
    assert cli.main(['convert-checkpoint', str(src), str(out), '--preset', 'tiny', '--force']) == 0
    load_checkpoint(fresh(cfg), out)


def test_convert_checkpoint_refuses_nan_weights_even_without_verify(cfg, saved, tmp_path, capsys):
    model, _ = saved
    state = {k: v.clone() for k, v in model.state_dict().items()}
    name = next(k for k, v in state.items() if v.is_floating_point())
    state[name].view(-1)[0] = math.nan
    src = tmp_path / 'nan.pth'
    torch.save({'state_dict': state}, src)
    assert cli.main(['convert-checkpoint', str(src), str(tmp_path / 'o.pth'), '--preset', 'tiny',
                     '--no-verify']) == 1
    assert name in capsys.readouterr().err and not (tmp_path / 'o.pth').exists()


def test_convert_checkpoint_announces_a_guessed_preset_on_stderr(saved, tmp_path, capsys, monkeypatch):
    import sparsebev_core.checkpoints.convert as convert_module
    _, src = saved
    monkeypatch.setattr(convert_module, 'guess_preset', lambda state: 'tiny')
    assert cli.main(['convert-checkpoint', str(src), str(tmp_path / 'out.pth')]) == 0
    captured = capsys.readouterr()
    assert "preset guessed from the checkpoint's shapes: tiny" in captured.err
    assert 'guessed' not in captured.out
    assert cli.main(['convert-checkpoint', str(src), str(tmp_path / 'o2.pth'), '--preset', 'tiny']) == 0
    assert 'guessed' not in capsys.readouterr().err

