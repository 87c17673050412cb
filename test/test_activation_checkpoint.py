"""The one activation-checkpointing guard (``model.activation_checkpoint``) and its users:
checkpointing happens exactly when training, autograd is on and the input needs a gradient."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from sparsebev_core.model import activation_checkpoint as ac
from sparsebev_core.model.backbones.resnet import build_resnet
from sparsebev_core.model.head import SparseBEVHead
from sparsebev_core.recipe.backbones import ResNetConfig

from test_head import random_inputs, small_cfg


@pytest.fixture
def calls(monkeypatch):
    """Counts the segments that really go through torch's checkpoint."""
    seen = []
    real = ac.checkpoint

    def counting(fn, *args, **kwargs):
        seen.append(fn)
        return real(fn, *args, **kwargs)
    monkeypatch.setattr(ac, 'checkpoint', counting)
    return seen


def test_the_rule_needs_all_four_conditions():
    module = nn.Linear(2, 2)
    wants = torch.zeros(2, requires_grad=True)
    assert ac.should_checkpoint(module.train(), wants)
    assert not ac.should_checkpoint(module.train(), wants, enabled=False)
    assert not ac.should_checkpoint(module.eval(), wants)
    assert not ac.should_checkpoint(module.train(), torch.zeros(2))        # no gradient wanted
    with torch.no_grad():
        assert not ac.should_checkpoint(module.train(), wants)


def test_run_segment_gives_the_same_values_and_gradients(calls):
    module = nn.Linear(3, 3).train()
    x = torch.randn(4, 3, requires_grad=True)
    plain = module(x)
    plain.sum().backward()
    grad_plain = x.grad.clone()
    x.grad = None
    through = ac.run_segment(module, module, x, probe=x)
    through.sum().backward()
    assert len(calls) == 1
    torch.testing.assert_close(through, plain)
    torch.testing.assert_close(x.grad, grad_plain)


@pytest.mark.parametrize('frozen_stages, expected', [(-1, 8), (1, 5)])
def test_resnet_blocks_checkpoint_only_where_a_gradient_flows(calls, frozen_stages, expected):
    net = build_resnet(ResNetConfig(depth=18, base_channels=8, frozen_stages=frozen_stages,
                                    norm_eval=False, with_cp=True)).train()
    x = torch.randn(2, 3, 64, 64)
    net(x)
    # 8 basic blocks; with the stem and layer1 frozen, layer1's two blocks and layer2's
    # first block get an input that needs no gradient
    assert len(calls) == expected
    calls.clear()
    with torch.no_grad():
        net(x)
    net.eval()(x)
    assert calls == []


def test_head_segments_checkpoint_in_training_only(calls):
    cfg = small_cfg()
    head = SparseBEVHead(cfg).train()
    feats, lidar2img, ts, hw = random_inputs(cfg)
    head(feats, lidar2img, ts, hw)
    # per decoder layer: self-attention, sampling, mixing
    assert len(calls) == 3 * cfg.num_layers
    calls.clear()
    with torch.no_grad():
        head(feats, lidar2img, ts, hw)
    head.eval()(feats, lidar2img, ts, hw)
    assert calls == []
