"""Query denoising for training (DN-DETR style, docs/official_model.md section 2.4.1).

Noised copies of the ground-truth boxes are prepended to the matching queries, in
``num_groups`` groups; the decoder must reconstruct the un-noised boxes and labels from them.
An attention mask keeps the groups from seeing each other and keeps the matching queries
from seeing any of them, so the matching part computes exactly what it would without DN.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from .boxes import encode_bbox

Tensor = torch.Tensor


@dataclass
class DenoisingQueries:
    """The DN part of the queries and what the losses need to score it.

    ``query_bbox [B, pad_size, 10]`` and ``query_feat [B, pad_size, C]`` (all-zero padding
    slots), ``attn_blocked [pad_size + Q, pad_size + Q]`` bool (True = row may not attend
    to column), and for each of the ``num_groups * K`` repeated GTs (K = GTs of the whole
    batch, group-major): ``labels [GK]`` and ``boxes [GK, 9]`` (gravity layout, un-noised),
    ``batch_index [GK]`` and ``slot_index [GK]`` (position in the DN part of that element).
    """
    query_bbox: Tensor
    query_feat: Tensor
    attn_blocked: Tensor
    labels: Tensor
    boxes: Tensor
    batch_index: Tensor
    slot_index: Tensor
    pad_size: int
    single_pad: int
    num_groups: int

    def mask_dict(self) -> dict:
        """Plain-dict view for the loss code (``dn_mask_dict`` of the head outputs)."""
        return dict(labels=self.labels, boxes=self.boxes, batch_index=self.batch_index,
                    slot_index=self.slot_index, pad_size=self.pad_size,
                    single_pad=self.single_pad, num_groups=self.num_groups)


def denoising_attention_mask(single_pad: int, num_groups: int, num_queries: int,
                             device: torch.device | None = None) -> Tensor:
    """Blocked pairs ``[pad + Q, pad + Q]``: matching queries cannot see any DN query, DN
    group g cannot see other DN groups; DN queries can see the matching queries."""
    pad_size = single_pad * num_groups
    total = pad_size + num_queries
    blocked = torch.zeros(total, total, dtype=torch.bool, device=device)
    blocked[pad_size:, :pad_size] = True
    for g in range(num_groups):
        rows = slice(single_pad * g, single_pad * (g + 1))
        blocked[rows, :single_pad * g] = True
        blocked[rows, single_pad * (g + 1):pad_size] = True
    return blocked


def make_denoising_queries(gt_boxes: Sequence[Tensor], gt_labels: Sequence[Tensor],
                           label_embedding: torch.nn.Embedding, num_queries: int,
                           pc_range: Sequence[float], num_classes: int, num_groups: int = 10,
                           box_noise_scale: float = 0.5, label_noise_scale: float = 0.5,
                           generator: torch.Generator | None = None) -> DenoisingQueries | None:
    """Noised GT queries for one training batch, or None when the batch has no GT at all.

    gt_boxes: per batch element ``[K_b, 9]`` gravity boxes ``[x, y, z_c, dx, dy, dz, yaw, vx,
    vy]``; gt_labels: ``[K_b]`` int64. Centres move by up to ``box_noise_scale / 2`` of the box
    size per axis; each label is replaced by a random class with ``label_noise_scale``
    probability; the box keeps its GT velocity (m/s). DN features are ``label_enc(label) | 1``.
    """
    device = label_embedding.weight.device
    counts = [int(b.shape[0]) for b in gt_boxes]
    if sum(counts) == 0:
        return None
    boxes = torch.cat([b.to(device, torch.float32) for b in gt_boxes])                # [K, 9]
    labels = torch.cat([l.to(device).long() for l in gt_labels])                      # [K]
    batch_of_gt = torch.cat([torch.full((n,), i, dtype=torch.long, device=device)
                             for i, n in enumerate(counts)])                          # [K]
    index_in_element = torch.cat([torch.arange(n, device=device) for n in counts])    # [K]

    rep_boxes = boxes.repeat(num_groups, 1)                                           # [GK, 9]
    rep_labels = labels.repeat(num_groups)                                            # [GK]
    rep_batch = batch_of_gt.repeat(num_groups)                                        # [GK]
    single_pad = max(counts)
    group_of = torch.arange(num_groups, device=device).repeat_interleave(len(labels))  # [GK]
    slot = index_in_element.repeat(num_groups) + single_pad * group_of                # [GK]

    noised = rep_boxes.clone()                                                        # [GK, 9]
    if box_noise_scale > 0:
        u = torch.rand(noised.shape[0], 3, device=device, generator=generator) * 2 - 1.0
        noised[:, 0:3] += u * (noised[:, 3:6] / 2) * box_noise_scale
    query_boxes = encode_bbox(noised, pc_range)                                       # [GK, 10]
    query_boxes[:, 0:3] = query_boxes[:, 0:3].clamp(0.0, 1.0)

    noised_labels = rep_labels.clone()
    if label_noise_scale > 0:
        flip = torch.rand(noised_labels.shape, device=device, generator=generator) < label_noise_scale
        random_labels = torch.randint(0, num_classes, noised_labels.shape, device=device,
                                      generator=generator)
        noised_labels = torch.where(flip, random_labels, noised_labels)
    feat = torch.cat([label_embedding(noised_labels),
                      torch.ones(len(noised_labels), 1, device=device)], dim=1)      # [GK, C]

    batch = len(gt_boxes)
    pad_size = single_pad * num_groups
    query_bbox = torch.zeros(batch, pad_size, 10, device=device)                      # [B, pad, 10]
    query_feat = torch.zeros(batch, pad_size, feat.shape[1], device=device)           # [B, pad, C]
    query_bbox[rep_batch, slot] = query_boxes
    query_feat[rep_batch, slot] = feat
    return DenoisingQueries(
        query_bbox=query_bbox, query_feat=query_feat,
        attn_blocked=denoising_attention_mask(single_pad, num_groups, num_queries, device),
        labels=rep_labels, boxes=rep_boxes, batch_index=rep_batch, slot_index=slot,
        pad_size=pad_size, single_pad=single_pad, num_groups=num_groups)
