"""SparseBEV training losses (docs/official_model.md section 4.2).

For every decoder layer: a sigmoid focal loss (alpha 0.25, gamma 2, weight 2.0) over all
matching queries, with unmatched queries as background (an all-zero target row), and a
code-weighted L1 loss (weight 0.25) on the matched queries against ``normalize_bbox`` of the
gravity-centre GT boxes. Query denoising adds the same two losses on the denoising queries
against the un-noised GT they were made from. Normalisers ("avg factors") are averaged over
processes so that every rank divides by the same number, as the official code does.

Key names follow the official head: ``loss_cls``, ``loss_bbox`` (last layer),
``d{i}.loss_cls`` ... (earlier layers), and the same with a ``_dn`` suffix.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F

from .matcher import HungarianMatcher

FLOAT32_EPS = torch.finfo(torch.float32).eps   # mmdet adds it to every avg_factor


def reduce_mean(value: torch.Tensor) -> torch.Tensor:
    """Mean of ``value`` over all processes (identity without torch.distributed)."""
    if not (dist.is_available() and dist.is_initialized()):
        return value
    value = value.clone()
    dist.all_reduce(value.div_(dist.get_world_size()), op=dist.ReduceOp.SUM)
    return value


def sigmoid_focal_loss(logits: torch.Tensor, labels: torch.Tensor, alpha: float = 0.25,
                       gamma: float = 2.0) -> torch.Tensor:
    """Element-wise focal loss.

    Args:
        logits: ``[N, C]`` class logits.
        labels: ``[N]`` int64 in ``[0, C]``; ``C`` means background (all-zero target row).
    Returns:
        ``[N, C]`` unreduced loss.
    """
    num_classes = logits.shape[-1]
    target = F.one_hot(labels, num_classes + 1)[:, :num_classes].to(logits.dtype)     # [N, C]
    prob = logits.sigmoid()                                                            # [N, C]
    p_t = (1 - prob) * target + prob * (1 - target)                                    # [N, C]
    focal_weight = (alpha * target + (1 - alpha) * (1 - target)) * p_t.pow(gamma)      # [N, C]
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction='none')         # [N, C]
    return bce * focal_weight


def focal_loss(logits: torch.Tensor, labels: torch.Tensor, avg_factor: float,
               loss_weight: float = 2.0, alpha: float = 0.25, gamma: float = 2.0) -> torch.Tensor:
    """Focal loss summed and divided by ``avg_factor`` (+ float32 eps), times ``loss_weight``."""
    loss = sigmoid_focal_loss(logits.float(), labels, alpha, gamma).sum()
    return loss_weight * loss / (avg_factor + FLOAT32_EPS)


def weighted_l1_loss(preds: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor,
                     avg_factor: float, loss_weight: float = 0.25) -> torch.Tensor:
    """Sum of ``weights * |preds - targets|`` divided by ``avg_factor`` (+ eps), times ``loss_weight``.

    Args:
        preds, targets, weights: ``[N, 10]``; an empty ``N`` gives a zero that keeps the graph.
    """
    if targets.numel() == 0:
        return preds.sum() * 0.0
    loss = (torch.abs(preds.float() - targets.float()) * weights).sum()
    return loss_weight * loss / (avg_factor + FLOAT32_EPS)


def _normalize_bbox(boxes: torch.Tensor) -> torch.Tensor:
    """9-D gravity-centre boxes -> 10-D head-output layout (``model.boxes.normalize_bbox``)."""
    from ..model.boxes import normalize_bbox
    return normalize_bbox(boxes)


class SparseBEVLoss:
    """Matching + focal + L1 losses over all decoder layers, and the denoising losses.

    Args:
        num_classes: number of foreground classes (10).
        code_weights: per-field L1 weights, ``[2, 2, 1, ..., 1]``.
        cls_weight, reg_weight: loss weights (2.0, 0.25), also used as matching-cost weights.
        dn_weight: weight of the denoising losses (1.0).
    """

    def __init__(self, num_classes: int = 10,
                 code_weights: Sequence[float] = (2.0, 2.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0),
                 cls_weight: float = 2.0, reg_weight: float = 0.25, alpha: float = 0.25,
                 gamma: float = 2.0, dn_weight: float = 1.0):
        self.num_classes = num_classes
        self.code_weights = torch.as_tensor(code_weights, dtype=torch.float32)
        self.cls_weight = cls_weight
        self.reg_weight = reg_weight
        self.alpha = alpha
        self.gamma = gamma
        self.dn_weight = dn_weight
        self.matcher = HungarianMatcher(cls_weight, reg_weight, alpha, gamma)

    # -- one decoder layer, matching queries ---------------------------------------------------
    def layer_loss(self, cls_scores: torch.Tensor, bbox_preds: torch.Tensor,
                   gt_targets: list[torch.Tensor], gt_labels: list[torch.Tensor]
                   ) -> tuple[torch.Tensor, torch.Tensor]:
        """Focal + L1 loss of one decoder layer.

        Args:
            cls_scores: ``[B, Q, C]`` logits.
            bbox_preds: ``[B, Q, 10]`` head-output boxes.
            gt_targets: per sample ``[K_b, 10]`` normalised GT boxes.
            gt_labels: per sample ``[K_b]`` int64.
        Returns:
            ``(loss_cls, loss_bbox)`` scalars.
        """
        batch, num_queries, _ = cls_scores.shape
        code_weights = self.code_weights.to(bbox_preds.device)
        labels = torch.full((batch, num_queries), self.num_classes, dtype=torch.long,
                            device=cls_scores.device)                                  # [B, Q]
        pos_preds, pos_targets = [], []
        for b in range(batch):
            query_index, gt_index = self.matcher(cls_scores[b], bbox_preds[b], gt_labels[b],
                                                 gt_targets[b], code_weights)
            labels[b, query_index] = gt_labels[b][gt_index]
            pos_preds.append(bbox_preds[b, query_index])                               # [M_b, 10]
            pos_targets.append(gt_targets[b][gt_index])                                # [M_b, 10]
        num_pos = float(sum(len(p) for p in pos_preds))

        cls_avg_factor = max(reduce_mean(cls_scores.new_tensor([num_pos])).item(), 1.0)
        loss_cls = focal_loss(cls_scores.reshape(-1, cls_scores.shape[-1]), labels.reshape(-1),
                              cls_avg_factor, self.cls_weight, self.alpha, self.gamma)

        reg_avg_factor = max(reduce_mean(cls_scores.new_tensor([num_pos])).item(), 1.0)
        pos_preds_all = torch.cat(pos_preds)                                           # [M, 10]
        pos_targets_all = torch.cat(pos_targets)                                       # [M, 10]
        finite = torch.isfinite(pos_targets_all).all(dim=-1)                           # [M]
        weights = code_weights.expand_as(pos_preds_all)                                # [M, 10]
        loss_bbox = weighted_l1_loss(pos_preds_all[finite], pos_targets_all[finite],
                                     weights[finite], reg_avg_factor, self.reg_weight)
        return torch.nan_to_num(loss_cls), torch.nan_to_num(loss_bbox)

    # -- one decoder layer, denoising queries ---------------------------------------------------
    def dn_layer_loss(self, cls_scores: torch.Tensor, bbox_preds: torch.Tensor,
                      known_labels: torch.Tensor, known_targets: torch.Tensor
                      ) -> tuple[torch.Tensor, torch.Tensor]:
        """Focal + L1 loss of the denoising queries of one layer; every one is a positive.

        Args:
            cls_scores: ``[N, C]`` logits of the N = groups * sum(K_b) denoising queries.
            bbox_preds: ``[N, 10]``.
            known_labels: ``[N]`` un-noised GT labels.
            known_targets: ``[N, 10]`` normalised un-noised GT boxes.
        """
        num_targets = float(known_labels.numel())
        avg_factor = max(reduce_mean(cls_scores.new_tensor([num_targets])).item(), 1.0)
        loss_cls = focal_loss(cls_scores, known_labels, avg_factor, self.cls_weight,
                              self.alpha, self.gamma)
        finite = torch.isfinite(known_targets).all(dim=-1)                             # [N]
        weights = self.code_weights.to(bbox_preds.device).expand_as(bbox_preds)        # [N, 10]
        loss_bbox = weighted_l1_loss(bbox_preds[finite], known_targets[finite], weights[finite],
                                     avg_factor, self.reg_weight)
        return (self.dn_weight * torch.nan_to_num(loss_cls),
                self.dn_weight * torch.nan_to_num(loss_bbox))

    # -- everything ----------------------------------------------------------------------------
    def __call__(self, outputs: dict, gt_boxes: list[torch.Tensor],
                 gt_labels: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        """All loss terms of one forward pass.

        Args:
            outputs: the head's dict: ``all_cls_scores [L, B, Q, C]``, ``all_bbox_preds
                [L, B, Q, 10]``; in training with denoising also the DN outputs
                (see ``gather_dn_outputs``).
            gt_boxes: per sample ``[K_b, 9]`` gravity-centre boxes
                ``[x, y, z_center, dx, dy, dz, yaw, vx, vy]``.
            gt_labels: per sample ``[K_b]`` int64.
        Returns:
            ``{'loss_cls', 'loss_bbox', 'd0.loss_cls', ..., 'loss_cls_dn', ...}`` scalars.
        """
        all_cls_scores = outputs['all_cls_scores']                                     # [L, B, Q, C]
        all_bbox_preds = outputs['all_bbox_preds']                                     # [L, B, Q, 10]
        num_layers = all_cls_scores.shape[0]
        gt_targets = [_normalize_bbox(boxes.float()) for boxes in gt_boxes]           # [K_b, 10]
        per_layer = [self.layer_loss(all_cls_scores[i], all_bbox_preds[i], gt_targets, gt_labels)
                     for i in range(num_layers)]
        losses: dict[str, torch.Tensor] = {}

        dn = gather_dn_outputs(outputs)
        if dn is not None:
            dn_cls, dn_bbox, known_labels, known_boxes = dn
            known_targets = _normalize_bbox(known_boxes.float())                      # [N, 10]
            dn_per_layer = [self.dn_layer_loss(dn_cls[i], dn_bbox[i], known_labels, known_targets)
                            for i in range(num_layers)]
            _name_layers(losses, dn_per_layer, suffix='_dn')
        elif dist.is_available() and dist.is_initialized():
            # A rank without GT has no denoising queries while the others may have some: it
            # still joins their avg-factor all-reduces (one per layer) and reports zeros, so
            # that no process waits forever and every rank logs the same keys.
            zero = all_cls_scores.sum() * 0.0
            for _ in range(num_layers):
                reduce_mean(all_cls_scores.new_tensor([0.0]))
            _name_layers(losses, [(zero, zero)] * num_layers, suffix='_dn')
        _name_layers(losses, per_layer, suffix='')
        return losses


def _name_layers(losses: dict, per_layer: list[tuple[torch.Tensor, torch.Tensor]],
                 suffix: str) -> None:
    """Last layer -> ``loss_cls{suffix}``; layer i < L-1 -> ``d{i}.loss_cls{suffix}``."""
    for i, (loss_cls, loss_bbox) in enumerate(per_layer):
        prefix = '' if i == len(per_layer) - 1 else f'd{i}.'
        losses[f'{prefix}loss_cls{suffix}'] = loss_cls
        losses[f'{prefix}loss_bbox{suffix}'] = loss_bbox


def gather_dn_outputs(outputs: dict):
    """Denoising predictions next to their un-noised targets, or None without denoising.

    Reads the head's ``dn_cls_scores [L, B, pad, C]``, ``dn_bbox_preds [L, B, pad, 10]`` and
    ``dn_mask_dict``: for each of the N = groups * sum(K_b) repeated GTs (group-major) its
    un-noised ``labels [N]`` and gravity ``boxes [N, 9]``, ``batch_index [N]`` and
    ``slot_index [N]`` (its DN slot), and ``pad_size``. The official key names
    (``known_lbs_bboxes``, ``batch_idx`` + ``known_indice``, ``map_known_indice``) are read too.
    Returns:
        ``(cls [L, N, C], bbox [L, N, 10], known_labels [N], known_boxes [N, 9])``.
    """
    mask_dict = outputs.get('dn_mask_dict')
    if mask_dict is None or int(mask_dict.get('pad_size', 0)) == 0:
        return None
    dn_cls = outputs.get('dn_cls_scores')
    dn_bbox = outputs.get('dn_bbox_preds')
    if dn_cls is None:
        dn_cls, dn_bbox = mask_dict['output_known_lbs_bboxes']
    if 'slot_index' in mask_dict:
        known_labels, known_boxes = mask_dict['labels'], mask_dict['boxes']
        slot = mask_dict['slot_index'].long()                                        # [N]
        sample = mask_dict['batch_index'].long()                                      # [N]
    else:
        known_labels, known_boxes = mask_dict['known_lbs_bboxes']
        slot = mask_dict['map_known_indice'].long()                                   # [N]
        sample = mask_dict['batch_idx'].long()[mask_dict['known_indice'].long()]      # [N]
    cls = dn_cls[:, sample, slot]                                                      # [L, N, C]
    bbox = dn_bbox[:, sample, slot]                                                    # [L, N, 10]
    return cls, bbox, known_labels.long(), known_boxes
