"""Optimiser, schedule and checkpoint files of the training recipe (docs/official_model.md 4.3)."""
import math
import os
import random
import signal

import numpy as np
import pytest
import torch
from torch import nn

from sparsebev_core.checkpoints.files import atomic_save
from sparsebev_core.engine.optim import (CosineWarmupSchedule, build_optimizer, build_scaler,
                                         lr_multiplier)
from sparsebev_core.engine.train_state import (SigtermFlag, TrainPosition, load_training_state,
                                               rng_state, save_training_state, set_rng_state)
from sparsebev_core.recipe.config import TrainConfig


class Toy(nn.Module):
    def __init__(self):
        super().__init__()
        self.img_backbone = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
        self.head = nn.Module()
        self.head.sampling_offset = nn.Linear(4, 4)
        self.head.cls = nn.Linear(4, 2)
        self.head.frozen = nn.Parameter(torch.ones(3), requires_grad=False)


def official_cfg(**kw):
    return TrainConfig(lr=2e-4, weight_decay=0.01, **kw)


def test_lr_multipliers_by_name_substring():
    mults = (('img_backbone', 0.1), ('sampling_offset', 0.1))
    assert lr_multiplier('img_backbone.layer1.0.conv1.weight', mults) == 0.1
    assert lr_multiplier('pts_bbox_head.transformer.decoder.sampling.sampling_offset.bias', mults) == 0.1
    assert lr_multiplier('pts_bbox_head.cls_branch.0.weight', mults) == 1.0


def test_optimizer_groups_decay_everything_and_skip_frozen():
    model = Toy()
    opt = build_optimizer(model, official_cfg())
    lr_of = {id(p): g['lr'] for g in opt.param_groups for p in g['params']}
    assert lr_of[id(model.img_backbone[1].bias)] == pytest.approx(2e-5)       # BN bias, backbone
    assert lr_of[id(model.head.sampling_offset.weight)] == pytest.approx(2e-5)
    assert lr_of[id(model.head.cls.bias)] == pytest.approx(2e-4)
    assert id(model.head.frozen) not in lr_of
    assert all(g['weight_decay'] == 0.01 for g in opt.param_groups)           # norms and biases too
    assert isinstance(opt, torch.optim.AdamW)


def test_schedule_warmup_from_one_third_then_cosine_by_epoch():
    model = Toy()
    opt = build_optimizer(model, official_cfg())
    schedule = CosineWarmupSchedule(opt, epochs=24, warmup_iters=500, warmup_ratio=1 / 3,
                                    min_lr_ratio=1e-3)
    head_group = next(g for g in opt.param_groups if g['lr_mult'] == 1.0)

    def lr(epoch, it):
        schedule.step(epoch, it)
        return head_group['lr']

    assert lr(0, 0) == pytest.approx(2e-4 / 3)                     # warm-up starts at 1/3
    assert lr(0, 250) == pytest.approx(2e-4 * 2 / 3)               # linear in the iteration
    assert lr(0, 500) == pytest.approx(2e-4)                       # epoch 0 of the cosine
    assert lr(12, 40000) == pytest.approx(2e-7 + (2e-4 - 2e-7) / 2)   # half way: mean of ends
    assert lr(12, 40000) == lr(12, 41000)                          # constant within an epoch
    assert lr(24, 90000) == pytest.approx(2e-7)                    # lr_min = 1e-3 * lr
    backbone_group = next(g for g in opt.param_groups if g['lr_mult'] == 0.1)
    schedule.step(0, 0)
    assert backbone_group['lr'] == pytest.approx(2e-5 / 3)         # multipliers scale the schedule


def test_schedule_by_iteration_for_the_recurrent_recipe():
    """SparseBEV++ (docs/official_model.md 13.5): cosine over the iterations of the whole run
    (mmcv ``by_epoch=False``), the same warm-up; the epoch does not enter."""
    model = Toy()
    opt = build_optimizer(model, TrainConfig(lr=4e-4, weight_decay=1e-3))
    total = 60 * (28130 // 16)
    schedule = CosineWarmupSchedule(opt, epochs=60, warmup_iters=500, total_iters=total)
    head_group = next(g for g in opt.param_groups if g['lr_mult'] == 1.0)

    def lr(epoch, it):
        schedule.step(epoch, it)
        return head_group['lr']

    assert lr(0, 0) == pytest.approx(4e-4 / 3)
    first = 4e-4 * 1e-3 + (4e-4 - 4e-4 * 1e-3) * (1 + math.cos(math.pi * 500 / total)) / 2
    assert lr(0, 500) == pytest.approx(first)                     # already annealing
    assert lr(30, total // 2) == pytest.approx(4e-7 + (4e-4 - 4e-7) / 2)
    assert lr(30, total // 2) > lr(30, total // 2 + 1000)          # not constant in an "epoch"
    assert lr(0, total) == pytest.approx(4e-7)                    # the epoch argument is unused
    restored = CosineWarmupSchedule(opt, epochs=1)
    restored.load_state_dict(schedule.state_dict())
    assert restored.factor(3, 1234) == schedule.factor(3, 1234)


def test_scaler_is_off_on_cpu():
    assert not build_scaler(torch.device('cpu'), 512.0).is_enabled()


def test_atomic_save_keeps_the_old_file_when_writing_fails(tmp_path):
    path = tmp_path / 'latest.pth'
    atomic_save({'epoch': 1}, path)

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError('disk full (simulated)')

    with pytest.raises(RuntimeError):
        atomic_save({'epoch': 2, 'bad': Unpicklable()}, path)
    assert torch.load(path)['epoch'] == 1


def test_rng_state_round_trip():
    state = rng_state()
    first = (random.random(), np.random.rand(), torch.rand(1).item())
    set_rng_state(state)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == first


def test_training_state_round_trip(tmp_path):
    torch.manual_seed(0)
    model = Toy()
    opt = build_optimizer(model, official_cfg())
    schedule = CosineWarmupSchedule(opt, epochs=3, warmup_iters=2)
    scaler = build_scaler(torch.device('cpu'), 512.0)
    model.head.cls(torch.randn(2, 4)).sum().backward()
    schedule.step(1, 5)
    opt.step()
    save_training_state(tmp_path, model, opt, schedule, scaler, TrainPosition(1, 2, 5), {'k': 'v'})

    fresh = Toy()
    fresh_opt = build_optimizer(fresh, official_cfg())
    fresh_schedule = CosineWarmupSchedule(fresh_opt, epochs=3, warmup_iters=2)
    position, meta = load_training_state(tmp_path / 'latest.pth', fresh, fresh_opt,
                                         fresh_schedule, build_scaler(torch.device('cpu'), 512.0))
    assert position == TrainPosition(1, 2, 5) and meta == {'k': 'v'}
    assert torch.equal(fresh.head.cls.weight, model.head.cls.weight)
    assert fresh_schedule.last_iteration == 5
    assert fresh_opt.state_dict()['state'].keys() == opt.state_dict()['state'].keys()


def test_resume_from_weights_only_file_is_refused_clearly(tmp_path):
    model = Toy()
    torch.save({'state_dict': model.state_dict()}, tmp_path / 'weights.pth')
    opt = build_optimizer(model, official_cfg())
    with pytest.raises(ValueError, match='not a training checkpoint'):
        load_training_state(tmp_path / 'weights.pth', model, opt,
                            CosineWarmupSchedule(opt, 1), build_scaler(torch.device('cpu'), 512.0))


def test_sigterm_becomes_a_stop_request():
    with SigtermFlag() as flag:
        os.kill(os.getpid(), signal.SIGTERM)
        assert flag.requested


def test_missing_backbone_pretrain_is_an_error_that_names_the_way_out(tmp_path):
    from sparsebev_core.engine.train import load_backbone_pretrain
    from sparsebev_core.recipe.presets import get_preset
    cfg = get_preset('r50_nuimg_704x256')            # names the nuImages pretrain file
    with pytest.raises(FileNotFoundError, match='--pretrained none'):
        load_backbone_pretrain(Toy(), cfg, str(tmp_path / 'missing.pth'))
    assert load_backbone_pretrain(Toy(), cfg, 'none') == ''
    assert load_backbone_pretrain(Toy(), get_preset('tiny'), None) == ''   # tiny: scratch
