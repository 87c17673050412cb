"""One-to-one assignment of predictions to ground truth (docs/official_model.md section 4.1).

The targets do not include "no object", so each ground-truth box is given to exactly one
query by a Hungarian assignment on a cost that mirrors the losses: a focal classification
cost (weight 2.0) plus a code-weighted L1 box cost (weight 0.25) over all ten head-output
fields, velocity included. Unassigned queries are background. Only matching queries are
assigned; denoising queries already know their target.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment


def focal_cost(cls_logits: torch.Tensor, gt_labels: torch.Tensor, alpha: float = 0.25,
               gamma: float = 2.0, eps: float = 1e-12) -> torch.Tensor:
    """Focal-loss matching cost of each query for each GT's class (mmdet ``FocalLossCost``).

    Args:
        cls_logits: ``[Q, C]`` class logits.
        gt_labels: ``[K]`` int64 class indices.
    Returns:
        ``[Q, K]`` cost (lower is better), not yet weighted.
    """
    prob = cls_logits.sigmoid()                                                # [Q, C]
    neg_cost = -(1 - prob + eps).log() * (1 - alpha) * prob.pow(gamma)         # [Q, C]
    pos_cost = -(prob + eps).log() * alpha * (1 - prob).pow(gamma)             # [Q, C]
    return pos_cost[:, gt_labels] - neg_cost[:, gt_labels]                     # [Q, K]


def box_l1_cost(bbox_preds: torch.Tensor, gt_targets: torch.Tensor,
                code_weights: torch.Tensor) -> torch.Tensor:
    """L1 distance between code-weighted predictions and code-weighted targets.

    Args:
        bbox_preds: ``[Q, 10]`` head output ``[x, y, log dx, log dy, z, log dz, sin, cos, vx, vy]``.
        gt_targets: ``[K, 10]`` ``normalize_bbox`` of the gravity-centre GT boxes (same layout).
        code_weights: ``[10]``.
    Returns:
        ``[Q, K]`` cost, not yet weighted.
    """
    return torch.cdist(bbox_preds * code_weights, gt_targets * code_weights, p=1)  # [Q, K]


def sanitize_cost(cost: np.ndarray) -> np.ndarray:
    """NaN -> 100, +inf -> 100, -inf -> -100, as the official assigner does before scipy."""
    return np.nan_to_num(cost, nan=100.0, posinf=100.0, neginf=-100.0)


@dataclass
class HungarianMatcher:
    """Focal + L1 Hungarian matcher (official ``HungarianAssigner3D`` weights by default)."""
    cls_weight: float = 2.0
    reg_weight: float = 0.25
    alpha: float = 0.25
    gamma: float = 2.0

    @torch.no_grad()
    def cost_matrix(self, cls_logits: torch.Tensor, bbox_preds: torch.Tensor,
                    gt_labels: torch.Tensor, gt_targets: torch.Tensor,
                    code_weights: torch.Tensor) -> torch.Tensor:
        """``[Q, K]`` total matching cost (shapes as in ``__call__``)."""
        cls_cost = focal_cost(cls_logits.float(), gt_labels, self.alpha, self.gamma)   # [Q, K]
        reg_cost = box_l1_cost(bbox_preds.float(), gt_targets.float(),
                               code_weights.float())                                   # [Q, K]
        return self.cls_weight * cls_cost + self.reg_weight * reg_cost                 # [Q, K]

    @torch.no_grad()
    def __call__(self, cls_logits: torch.Tensor, bbox_preds: torch.Tensor,
                 gt_labels: torch.Tensor, gt_targets: torch.Tensor,
                 code_weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Assign GT boxes of one sample to its queries.

        Args:
            cls_logits: ``[Q, C]`` logits of one sample, one decoder layer.
            bbox_preds: ``[Q, 10]`` head-output boxes.
            gt_labels: ``[K]`` int64.
            gt_targets: ``[K, 10]`` normalised GT boxes (``normalize_bbox`` of gravity-centre boxes).
            code_weights: ``[10]``.
        Returns:
            ``(query_index [M], gt_index [M])`` int64 on the input device, M = min(Q, K);
            empty when there is no GT (every query is background).
        """
        device = cls_logits.device
        num_gts = int(gt_labels.numel())
        if num_gts == 0 or cls_logits.shape[0] == 0:
            empty = torch.zeros(0, dtype=torch.long, device=device)
            return empty, empty.clone()
        cost = self.cost_matrix(cls_logits, bbox_preds, gt_labels, gt_targets, code_weights)
        cost = sanitize_cost(cost.detach().cpu().numpy())                           # [Q, K]
        query_index, gt_index = linear_sum_assignment(cost)
        return (torch.as_tensor(query_index, dtype=torch.long, device=device),
                torch.as_tensor(gt_index, dtype=torch.long, device=device))
