"""The NMS-free box coder: head outputs -> scored boxes (docs/head.md).

Free functions of the raw head outputs and the ``HeadConfig``, so that every runtime (torch
eager, compiled, ONNX Runtime, TensorRT) decodes the same way: ``SparseBEVHead.decode`` and
``StreamingDetector`` both call :func:`decode_predictions`.
"""
from __future__ import annotations

import math

import torch

from ..recipe.config import HeadConfig
from .boxes import denormalize_bbox

Tensor = torch.Tensor


@torch.no_grad()
def decode_predictions(all_cls_scores: Tensor, all_bbox_preds: Tensor, head_cfg: HeadConfig,
                       legacy_yaw_convention: bool = False, score_threshold: float | None = None,
                       max_num: int | None = None) -> list[dict]:
    """Top-k over the last layer's sigmoid scores of all (query, class) pairs, no NMS.

    all_cls_scores ``[L, B, Q, classes]`` logits and all_bbox_preds ``[L, B, Q, 10]`` head
    layout (``L`` may be 1: only the last layer is read). Keeps boxes whose centre lies in
    ``post_center_range`` (inclusive) and whose score is above ``score_threshold`` (0 or None
    in the config disables it; None here: the config's); ``max_num`` None: the config's.
    Returns per batch element ``boxes [K, 9]`` ``[x, y, z_bottom, dx, dy, dz, yaw, vx, vy]``,
    ``scores [K]``, ``labels [K]`` and ``query_index [K]``, in descending score order.
    """
    threshold = head_cfg.score_threshold if score_threshold is None else score_threshold
    max_num = head_cfg.max_num if max_num is None else max_num
    num_classes = head_cfg.num_classes
    cls_last = all_cls_scores[-1]                                                  # [B, Q, classes]
    bbox_last = all_bbox_preds[-1]                                                 # [B, Q, 10]
    limit = torch.tensor(head_cfg.post_center_range, device=cls_last.device)
    results = []
    for cls_scores, bbox_preds in zip(cls_last, bbox_last):
        scores_all = cls_scores.sigmoid().reshape(-1)                              # [Q*classes]
        scores, index = scores_all.topk(min(max_num, scores_all.numel()))          # [k]
        labels = index % num_classes
        query_index = torch.div(index, num_classes, rounding_mode='trunc')
        boxes = denormalize_bbox(bbox_preds[query_index])                          # [k, 9] gravity
        keep = (boxes[:, :3] >= limit[:3]).all(1) & (boxes[:, :3] <= limit[3:]).all(1)
        if threshold:
            keep &= scores > threshold
        boxes = to_lidar_boxes(boxes[keep], legacy_yaw_convention)
        results.append(dict(boxes=boxes, scores=scores[keep], labels=labels[keep],
                            query_index=query_index[keep]))
    return results


def to_lidar_boxes(gravity_boxes: Tensor, legacy_yaw_convention: bool = False) -> Tensor:
    """Gravity boxes ``[K, 9]`` -> bottom-centre boxes, in the mmdet3d >= 1.0 convention.

    ``legacy_yaw_convention`` (checkpoints of mmdet3d 0.17.1, docs/head.md): those predict
    (dy, dx) and a yaw measured the other way; swap and map yaw -> -yaw - pi/2.
    """
    boxes = gravity_boxes.clone()
    boxes[:, 2] = boxes[:, 2] - boxes[:, 5] * 0.5                                  # bottom centre
    if legacy_yaw_convention:
        boxes[:, [3, 4]] = boxes[:, [4, 3]]
        boxes[:, 6] = -boxes[:, 6] - math.pi / 2
    return boxes
