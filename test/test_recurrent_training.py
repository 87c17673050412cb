"""The training path of the recurrent SparseBEV++ head (``tiny_memory``): every decoder layer
in training mode, query denoising as in v1 with the mask extended to the propagated queries,
the denoising rows kept out of the next state, no gradient through the state.

The streaming training loop around it is test_train_stream.py's.
"""
from __future__ import annotations

import pytest
import torch

from camera_rigs import outward_lidar2img
from sparsebev_core.engine.losses import SparseBEVLoss
from sparsebev_core.model.detector import build_model
from sparsebev_core.model.recurrent_state import EgoMotion, RecurrentState
from sparsebev_core.recipe.presets import get_preset

pytestmark = pytest.mark.usefixtures('one_torch_thread')

N_CAM = 6


@pytest.fixture(scope='module')
def model_and_cfg():
    """tiny_memory, seeded, dropout 0 (so that two calls may be compared), training mode."""
    torch.manual_seed(0)
    cfg = get_preset('tiny_memory')
    cfg.head.dropout = 0.0
    model = build_model(cfg).train()
    with torch.no_grad():                      # non-zero weights where the init sets zeros
        for p in model.pts_bbox_head.parameters():
            if p.requires_grad and p.dim() >= 2 and not p.any():
                p.normal_(0, 0.02)
    return model, cfg


@pytest.fixture(scope='module')
def inputs(model_and_cfg):
    """Two samples: images, projections and GT boxes in front of the cameras."""
    model, cfg = model_and_cfg
    gen = torch.Generator().manual_seed(1)
    h, w = cfg.input_size
    lidar2img = outward_lidar2img((h, w), batch=2, cameras=N_CAM)
    images = torch.rand(2, N_CAM, 3, h, w, generator=gen) * 255
    gt_boxes = [torch.tensor([[10.0, 2.0, 0.5, 4.0, 2.0, 1.5, 0.3, 2.0, 0.0],
                              [-6.0, 8.0, 0.8, 0.7, 0.7, 1.8, 1.0, 0.0, 0.5]]),
                torch.tensor([[3.0, -12.0, 0.6, 4.5, 1.9, 1.6, -0.4, 0.0, 0.0]])]
    gt_labels = [torch.tensor([0, 8]), torch.tensor([0])]
    return images, lidar2img, gt_boxes, gt_labels


def still(batch=2):
    eye = torch.eye(4, dtype=torch.float64).expand(batch, 4, 4)
    return EgoMotion.from_poses(torch.zeros(batch), torch.full((batch,), 0.5), eye, eye)


def run(model, inputs, state, gt=True):
    images, lidar2img, gt_boxes, gt_labels = inputs
    return model(images, lidar2img, state=state, motion=None if state is None else still(),
                 gt_boxes=gt_boxes if gt else None, gt_labels=gt_labels if gt else None)


def test_training_runs_every_layer_with_denoising(model_and_cfg, inputs):
    model, cfg = model_and_cfg
    q, k = cfg.head.num_queries, cfg.head.memory.num_propagated
    out, state = run(model, inputs, None)
    assert out['all_cls_scores'].shape == (cfg.head.num_layers, 2, q + k, 10)   # all layers, not the 2 of eval
    single_pad = 2                                       # the most GT boxes of a sample
    assert out['dn_cls_scores'].shape == (cfg.head.num_layers, 2, single_pad * cfg.head.dn_groups, 10)
    assert out['input_query_bbox'].shape == (2, q + k, 10)
    losses = SparseBEVLoss(code_weights=cfg.head.code_weights)(out, inputs[2], inputs[3])
    assert len(losses) == 4 * cfg.head.num_layers         # matching + denoising, cls + bbox, per layer
    assert {'loss_cls', 'loss_bbox_dn', 'd0.loss_cls', 'd1.loss_bbox_dn'} <= set(losses)
    model.eval()
    try:
        with torch.no_grad():
            eval_out, _ = run(model, inputs, None)
    finally:
        model.train()
    assert eval_out['all_cls_scores'].shape[0] == cfg.head.memory.inference_layers
    assert 'dn_cls_scores' not in eval_out


@pytest.mark.parametrize('with_memory', [False, True], ids=['first frame', 'with memory'])
def test_denoising_queries_change_neither_the_matching_outputs_nor_the_state(
        model_and_cfg, inputs, with_memory):
    """The matching and propagated queries never see a denoising query (they carry the ground
    truth): not in the self-attention, and not in the memory attention's self-attention of a
    frame without memory (docs/official_model.md, quirk 29) either. A leak there fails the
    'first frame' case."""
    model, cfg = model_and_cfg
    state = None
    if with_memory:
        with torch.no_grad():
            _, state = run(model, inputs, None, gt=False)
    with torch.no_grad():
        plain, plain_next = run(model, inputs, state, gt=False)
        noised, noised_next = run(model, inputs, state, gt=True)
    assert 'dn_cls_scores' in noised and 'dn_cls_scores' not in plain
    torch.testing.assert_close(noised['all_cls_scores'], plain['all_cls_scores'], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(noised['all_bbox_preds'], plain['all_bbox_preds'], rtol=1e-5, atol=1e-5)
    assert torch.equal(noised['propagated_index'], plain['propagated_index'])
    for a, b in zip(noised_next.tensors(), plain_next.tensors()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_gradients_reach_the_weights_but_never_the_state(model_and_cfg, inputs):
    model, cfg = model_and_cfg
    m = cfg.head.memory
    empty = RecurrentState.empty(2, m.num_propagated, cfg.head.embed_dims, m.memory_len)
    with torch.no_grad():
        _, state = run(model, inputs, empty, gt=False)             # a fixed-form state
    model.zero_grad(set_to_none=True)
    out, next_state = run(model, inputs, state)
    losses = SparseBEVLoss(code_weights=cfg.head.code_weights)(out, inputs[2], inputs[3])
    sum(losses.values()).backward()
    assert all(not t.requires_grad and t.grad_fn is None for t in next_state.tensors())
    layer = model.pts_bbox_head.transformer.decoder.decoder_layer
    for name in ('cross_attn.gen_tau.weight', 'position_encoder.vel_encoder.0.weight',
                 'sampling.sampling_offset.weight', 'cls_branch.0.weight'):
        grad = layer.get_parameter(name).grad
        assert grad is not None and grad.abs().sum() > 0, name
    assert model.pts_bbox_head.label_enc.weight.grad.abs().sum() > 0   # the denoising labels
    assert model.img_backbone.conv1.weight.grad.abs().sum() > 0
    assert model.pts_bbox_head.padding_bbox.weight.grad is None        # docs/official_model.md, quirk 27
