"""Matching and losses against small cases computed by hand (docs/official_model.md 4.1, 4.2)."""
import math

import pytest
import torch

from sparsebev_core.engine.losses import (SparseBEVLoss, focal_loss, gather_dn_outputs,
                                          weighted_l1_loss)
from sparsebev_core.engine.matcher import HungarianMatcher, focal_cost

CODE_WEIGHTS = torch.tensor([2.0, 2, 1, 1, 1, 1, 1, 1, 1, 1])


def gravity_box(x, y, z=0.0, dx=4.0, dy=2.0, dz=1.5, yaw=0.0, vx=0.0, vy=0.0):
    return [x, y, z, dx, dy, dz, yaw, vx, vy]


def head_box(x, y, z=0.0, dx=4.0, dy=2.0, dz=1.5, yaw=0.0, vx=0.0, vy=0.0):
    """The head-output layout of ``gravity_box`` (written out by hand, not via normalize_bbox)."""
    return [x, y, math.log(dx), math.log(dy), z, math.log(dz), math.sin(yaw), math.cos(yaw), vx, vy]


def test_focal_cost_matches_the_formula():
    p = 1 / (1 + math.exp(-0.3))
    alpha, gamma, eps = 0.25, 2.0, 1e-12
    expected = (alpha * (1 - p) ** gamma * -math.log(p + eps)
                - (1 - alpha) * p ** gamma * -math.log(1 - p + eps))
    cost = focal_cost(torch.tensor([[0.3, -1.0]]), torch.tensor([0]))
    assert cost.shape == (1, 1)
    assert cost.item() == pytest.approx(expected, rel=1e-6)


def test_matcher_finds_the_global_optimum_not_the_greedy_one():
    # query 0 at x=1, query 1 at x=3; GT A at x=2, GT B at x=0 (all the same class and shape).
    # Greedy (A first, tie to q0) costs |1-2| + |3-0| = 4; optimum q0->B, q1->A costs 1 + 1 = 2.
    preds = torch.tensor([head_box(1, 0), head_box(3, 0)])
    gts = torch.tensor([head_box(2, 0), head_box(0, 0)])
    logits = torch.zeros(2, 10)
    q, g = HungarianMatcher()(logits, preds, torch.tensor([1, 1]), gts, CODE_WEIGHTS)
    assignment = dict(zip(q.tolist(), g.tolist()))
    assert assignment == {0: 1, 1: 0}


def test_matching_cost_includes_velocity():
    # Two queries identical except for velocity; the GT moves, so the moving query must win.
    preds = torch.tensor([head_box(5, 5, vx=0.0), head_box(5, 5, vx=3.0)])
    gts = torch.tensor([head_box(5, 5, vx=3.0)])
    q, g = HungarianMatcher()(torch.zeros(2, 10), preds, torch.tensor([0]), gts, CODE_WEIGHTS)
    assert q.tolist() == [1] and g.tolist() == [0]


def test_matching_cost_weights_and_class_term():
    matcher = HungarianMatcher()
    preds = torch.tensor([head_box(1, 0)])
    gts = torch.tensor([head_box(0, 0)])
    logits = torch.tensor([[0.3] + [0.0] * 9])
    cost = matcher.cost_matrix(logits, preds, torch.tensor([0]), gts, CODE_WEIGHTS)
    expected = 2.0 * focal_cost(logits, torch.tensor([0])).item() + 0.25 * (2.0 * 1.0)
    assert cost.item() == pytest.approx(expected, rel=1e-6)


def test_matcher_survives_nan_predictions():
    preds = torch.tensor([head_box(0, 0), head_box(10, 0)])
    preds[0, 0] = float('nan')
    gts = torch.tensor([head_box(10, 0), head_box(0, 0)])
    q, g = HungarianMatcher()(torch.zeros(2, 10), preds, torch.tensor([0, 0]), gts, CODE_WEIGHTS)
    assert sorted(zip(q.tolist(), g.tolist())) == [(0, 1), (1, 0)]


def test_no_ground_truth_means_every_query_is_background():
    q, g = HungarianMatcher()(torch.zeros(4, 10), torch.zeros(4, 10), torch.zeros(0, dtype=torch.long),
                              torch.zeros(0, 10), CODE_WEIGHTS)
    assert q.numel() == 0 and g.numel() == 0


def test_focal_loss_one_positive_by_hand():
    logits = torch.tensor([[0.5, -0.5]])
    loss = focal_loss(logits, torch.tensor([0]), avg_factor=1.0)
    p0, p1 = 1 / (1 + math.exp(-0.5)), 1 / (1 + math.exp(0.5))
    positive = 0.25 * (1 - p0) ** 2 * -math.log(p0)          # class 0 is the target
    negative = 0.75 * p1 ** 2 * -math.log(1 - p1)             # class 1 is not
    assert loss.item() == pytest.approx(2.0 * (positive + negative), rel=1e-5)


def test_background_label_has_an_all_negative_target():
    logits = torch.tensor([[0.5, -0.5]])
    loss = focal_loss(logits, torch.tensor([2]), avg_factor=2.0)
    p0, p1 = 1 / (1 + math.exp(-0.5)), 1 / (1 + math.exp(0.5))
    negatives = 0.75 * p0 ** 2 * -math.log(1 - p0) + 0.75 * p1 ** 2 * -math.log(1 - p1)
    assert loss.item() == pytest.approx(2.0 * negatives / 2.0, rel=1e-5)


def test_l1_loss_uses_code_weights():
    pred = torch.tensor([head_box(1.0, 0, vx=0.5)])
    target = torch.tensor([head_box(0.0, 0, vx=0.0)])
    loss = weighted_l1_loss(pred, target, CODE_WEIGHTS.expand(1, 10), avg_factor=1.0)
    assert loss.item() == pytest.approx(0.25 * (2.0 * 1.0 + 1.0 * 0.5), rel=1e-6)


def _outputs(num_layers=2, num_queries=3, shift=1.0):
    """Two-layer outputs whose query 2 sits ``shift`` metres from the single GT at (10, 0)."""
    cls = torch.zeros(num_layers, 1, num_queries, 10)
    bbox = torch.tensor([head_box(-30, -30), head_box(30, 30), head_box(10 + shift, 0)])
    bbox = bbox.expand(num_layers, 1, num_queries, 10).clone()
    return {'all_cls_scores': cls, 'all_bbox_preds': bbox}


def test_total_loss_by_hand_and_official_key_names():
    criterion = SparseBEVLoss()
    losses = criterion(_outputs(), [torch.tensor([gravity_box(10, 0)])], [torch.tensor([4])])
    assert set(losses) == {'loss_cls', 'loss_bbox', 'd0.loss_cls', 'd0.loss_bbox'}
    # one positive (query 2, class 4), avg factor 1: L1 = 0.25 * 2 (x weight) * 1 m
    assert losses['loss_bbox'].item() == pytest.approx(0.5, rel=1e-5)
    p = 0.5                                                   # sigmoid(0)
    neg, pos = 0.75 * p ** 2 * -math.log(1 - p), 0.25 * (1 - p) ** 2 * -math.log(p)
    expected_cls = 2.0 * (3 * 10 * neg - neg + pos)           # 29 negatives, 1 positive
    assert losses['loss_cls'].item() == pytest.approx(expected_cls, rel=1e-5)


def test_zero_size_ground_truth_is_matched_but_not_regressed():
    # normalize_bbox of a zero-size box has log 0 = -inf: the official code drops that row
    # from the L1 loss (while it still counts as a positive for classification).
    criterion = SparseBEVLoss()
    losses = criterion(_outputs(), [torch.tensor([gravity_box(10, 0, dx=0.0)])], [torch.tensor([4])])
    assert losses['loss_bbox'].item() == 0.0
    assert math.isfinite(losses['loss_cls'].item())


def test_loss_falls_as_the_prediction_approaches_the_target():
    criterion = SparseBEVLoss()
    gt = ([torch.tensor([gravity_box(10, 0)])], [torch.tensor([4])])
    far = criterion(_outputs(shift=2.0), *gt)['loss_bbox'].item()
    near = criterion(_outputs(shift=0.5), *gt)['loss_bbox'].item()
    assert near < far


@pytest.mark.parametrize('key_style', ['ours', 'official'])
def test_denoising_losses_against_unnoised_targets(key_style):
    # One sample with 2 GTs, 2 groups -> 4 DN queries in slots (k + 2 g); the predictions are
    # exactly the un-noised targets except slot 3 (GT 1 of group 1), which is 1 m off in y.
    gts = torch.tensor([gravity_box(10, 0), gravity_box(-5, 5)])
    labels = torch.tensor([1, 7])
    known_boxes, known_labels = gts.repeat(2, 1), labels.repeat(2)
    head = torch.tensor([head_box(10, 0), head_box(-5, 5)]).repeat(2, 1)   # [4, 10]
    head[3, 1] += 1.0
    dn_bbox = head[None, None].expand(2, 1, 4, 10).clone()                    # [L, B, pad, 10]
    dn_cls = torch.zeros(2, 1, 4, 10)
    outputs = _outputs()
    if key_style == 'official':
        mask_dict = {'known_lbs_bboxes': (known_labels, known_boxes),
                     'batch_idx': torch.tensor([0, 0]), 'known_indice': torch.tensor([0, 1, 0, 1]),
                     'map_known_indice': torch.tensor([0, 1, 2, 3]), 'pad_size': 4}
    else:
        mask_dict = {'labels': known_labels, 'boxes': known_boxes,
                     'batch_index': torch.tensor([0, 0, 0, 0]),
                     'slot_index': torch.tensor([0, 1, 2, 3]), 'pad_size': 4}
    outputs.update(dn_cls_scores=dn_cls, dn_bbox_preds=dn_bbox, dn_mask_dict=mask_dict)
    cls, bbox, lab, box = gather_dn_outputs(outputs)
    assert cls.shape == (2, 4, 10) and torch.equal(lab, known_labels)
    losses = SparseBEVLoss()(outputs, [gts], [labels])
    assert {'loss_cls_dn', 'loss_bbox_dn', 'd0.loss_cls_dn', 'd0.loss_bbox_dn'} <= set(losses)
    # 4 targets (avg factor 4), one off by 1 m in y (code weight 2): 0.25 * 2 / 4
    assert losses['loss_bbox_dn'].item() == pytest.approx(0.125, rel=1e-5)
