"""``SparseBEVHead``: box-shaped queries, the shared decoder, output assembly, NMS-free decoding.

docs/official_model.md sections 2.4, 2.6, 2.7 and 6.1-6.2. Submodule and parameter names match
the official state dict under ``pts_bbox_head.`` (docs/official_model.md 10.3).
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
from torch import nn

from ..errors import InputError
from ..recipe.config import HeadConfig
from .boxes import query_to_head_layout
from .coder import decode_predictions
from .decoder import Transformer, compute_time_diff
from .denoising import make_denoising_queries

Tensor = torch.Tensor


def init_query_boxes(weight: Tensor) -> None:
    """Official query init (docs/official_model.md, quirk 6) on top of an N(0, 1) embedding ``[Q, 10]``, in place.

    x^, y^ on a sqrt(Q) x sqrt(Q) grid of cell centres (meshgrid 'ij': x is the slow index),
    z^ = 0 (the bottom of the range), log dz = 1.5, velocity 0; log dx, log dy and sin, cos
    keep their random values.
    """
    num_queries = weight.shape[0]
    grid = int(math.isqrt(num_queries))
    if grid * grid != num_queries:
        raise ValueError(f'num_queries must be a perfect square for the grid init, got {num_queries}')
    with torch.no_grad():
        cells = (torch.arange(grid, dtype=weight.dtype) + 0.5) / grid               # [S]
        xx, yy = torch.meshgrid(cells, cells, indexing='ij')                        # [S, S]
        weight[:, 0] = xx.reshape(-1)
        weight[:, 1] = yy.reshape(-1)
        weight[:, 2] = 0.0
        weight[:, 5] = 1.5
        weight[:, 8:10] = 0.0


class QueryHead(nn.Module):
    """What the SparseBEV head and the recurrent SparseBEV++ head share.

    A subclass builds ``cfg``, ``num_classes``, ``num_queries``, ``init_query_bbox``
    (learned query boxes), ``label_enc`` and ``transformer.decoder.decoder_layer.sampling``;
    this class gives the learned queries, the input checks, the box convention and decoding.
    """
    cfg: HeadConfig
    _legacy_yaw_convention: bool = False

    # -- the 0.17.1 box convention (docs/official_model.md 2.7) ------------------------------
    @property
    def legacy_yaw_convention(self) -> bool:
        """True for checkpoints trained with mmdet3d 0.17.1 boxes (``version == 'v0.17.1'``):
        sampling offsets rotate clockwise and decoding swaps dx/dy and maps yaw -> -yaw - pi/2."""
        return self._legacy_yaw_convention

    @legacy_yaw_convention.setter
    def legacy_yaw_convention(self, value: bool) -> None:
        self._legacy_yaw_convention = bool(value)
        self.transformer.decoder.decoder_layer.sampling.legacy_yaw_convention = bool(value)

    # -- forward ----------------------------------------------------------------------------
    def matching_queries(self, batch_size: int) -> tuple[Tensor, Tensor]:
        """The learned queries repeated over the batch: boxes ``[B, Q, 10]``, features ``[B, Q, C]``.

        Every matching query starts from the same feature: the "no label" embedding followed
        by a 0 "is denoising" indicator.
        """
        query_bbox = self.init_query_bbox.weight.clone()                             # [Q, 10]
        no_label = self.label_enc.weight[self.num_classes].repeat(self.num_queries, 1)  # [Q, C-1]
        query_feat = torch.cat([no_label, no_label.new_zeros(self.num_queries, 1)], dim=1)  # [Q, C]
        return query_bbox.repeat(batch_size, 1, 1), query_feat.repeat(batch_size, 1, 1)

    def num_views(self, features: Sequence[Tensor]) -> int:
        """Views (cameras) per frame of the input: ``features[0]`` is ``[B, T*N, C, h, w]``."""
        t = self.cfg.num_frames
        if features[0].dim() != 5 or features[0].shape[1] == 0 or features[0].shape[1] % t:
            raise InputError(f'feature level 0 must be [B, T*N, {self.cfg.embed_dims}, h, w] with '
                             f'T={t} frames of N >= 1 cameras, got {list(features[0].shape)}')
        return features[0].shape[1] // t

    def _check_inputs(self, features: Sequence[Tensor], lidar2img: Tensor,
                      valid_views: Tensor | None) -> None:
        if len(features) != self.cfg.num_levels:
            raise ValueError(f'expected {self.cfg.num_levels} feature levels, got {len(features)}')
        counts = [int(feat.shape[1]) if feat.dim() == 5 else None for feat in features]  # ints when traced
        if len(set(counts)) > 1:
            raise InputError(f'feature level 0 has {counts[0]} images but the levels disagree: '
                             f'{counts} (each level must be [B, T*N, C, h, w])')
        num_views = self.num_views(features)
        t_n = self.cfg.num_frames * num_views
        for level, feat in enumerate(features):
            if feat.dim() != 5 or feat.shape[1] != t_n or feat.shape[2] != self.cfg.embed_dims:
                raise ValueError(f'feature level {level} must be [B, {t_n}, {self.cfg.embed_dims}, h, w] '
                                 f'(T={self.cfg.num_frames} frames x {num_views} cameras), '
                                 f'got {list(feat.shape)}')
        if tuple(lidar2img.shape[1:]) != (t_n, 4, 4):
            raise ValueError(f'lidar2img must be [B, {t_n}, 4, 4], got {list(lidar2img.shape)}')
        if valid_views is not None and (valid_views.dtype != torch.bool
                                        or tuple(valid_views.shape) != (features[0].shape[0], t_n)):
            raise InputError(f'valid_views must be a bool [B, T*N] = {[features[0].shape[0], t_n]} '
                             f'mask, got {valid_views.dtype} {list(valid_views.shape)}')

    # -- NMS-free coder (docs/official_model.md 6.1, 6.2) ---------------------------------------
    def decode(self, outputs: dict, score_threshold: float | None = None,
               max_num: int | None = None) -> list[dict]:
        """``coder.decode_predictions`` of the outputs with this head's config and box
        convention: per batch element ``boxes [K, 9]`` (bottom centre), ``scores [K]``,
        ``labels [K]``, ``query_index [K]``, in descending score order."""
        return decode_predictions(outputs['all_cls_scores'], outputs['all_bbox_preds'], self.cfg,
                                  self.legacy_yaw_convention, score_threshold, max_num)


class SparseBEVHead(QueryHead):
    """Queries + decoder + coder. ``forward`` returns per-layer logits and head-layout boxes."""

    def __init__(self, cfg: HeadConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.num_classes = cfg.num_classes
        self.num_queries = cfg.num_queries
        self.pc_range = tuple(cfg.pc_range)
        self.code_weights = nn.Parameter(torch.tensor(cfg.code_weights, dtype=torch.float32),
                                         requires_grad=False)
        self.init_query_bbox = nn.Embedding(cfg.num_queries, 10)
        self.label_enc = nn.Embedding(cfg.num_classes + 1, cfg.embed_dims - 1)  # row num_classes: no label
        self.transformer = Transformer(cfg)
        self.init_weights()

    @torch.no_grad()
    def init_weights(self) -> None:
        """Official initialisation (docs/official_model.md 2.4, 2.5.x, 2.7); everything else keeps PyTorch defaults."""
        init_query_boxes(self.init_query_bbox.weight)
        self.transformer.decoder.decoder_layer.init_weights()

    def forward(self, features: Sequence[Tensor], lidar2img: Tensor | np.ndarray,
                timestamps: Tensor | np.ndarray, image_hw: tuple[int, int],
                gt_boxes: Sequence[Tensor] | None = None,
                gt_labels: Sequence[Tensor] | None = None,
                valid_views: Tensor | np.ndarray | None = None) -> dict:
        """Run the decoder on FPN features of T frames x N cameras (any N >= 1).

        features: per level ``[B, T*N, C, h, w]``, frame-major (frame 0 = current);
        lidar2img ``[B, T*N, 4, 4]`` (model frame -> network-input pixels); timestamps
        ``[B, T*N]`` float64 seconds; image_hw the padded network-input (H, W);
        gt_boxes / gt_labels (training with query denoising only): per element ``[K, 9]``
        gravity boxes and ``[K]`` labels; valid_views ``[B, T*N]`` bool (None: all valid):
        no sampling point reads an invalid view (its timestamp still enters ``time_diff``).
        Returns ``all_cls_scores [L, B, Q, classes]`` (logits) and ``all_bbox_preds [L, B, Q, 10]``
        (``[x, y, log dx, log dy, z_c, log dz, sin, cos, vx, vy]``); with denoising also
        ``dn_cls_scores``, ``dn_bbox_preds`` ``[L, B, pad, ...]`` and ``dn_mask_dict``.
        """
        device = features[0].device
        lidar2img = torch.as_tensor(lidar2img).to(device=device, dtype=torch.float32)   # [B, TN, 4, 4]
        if valid_views is not None:
            valid_views = torch.as_tensor(valid_views).to(device)                      # [B, TN] bool
        self._check_inputs(features, lidar2img, valid_views)
        time_diff = compute_time_diff(timestamps, self.num_views(features)).to(device)  # [B, T]
        return self._decode_queries(features, lidar2img, time_diff, image_hw, gt_boxes, gt_labels,
                                    valid_views)

    def forward_time_diff(self, features: Sequence[Tensor], lidar2img: Tensor, time_diff: Tensor,
                          image_hw: tuple[int, int], gt_boxes: Sequence[Tensor] | None = None,
                          gt_labels: Sequence[Tensor] | None = None,
                          valid_views: Tensor | None = None) -> dict:
        """``forward`` with the time differences already computed: the runtime seam's entry.

        time_diff ``[B, T]`` float32 = ``decoder.compute_time_diff(timestamps)`` (float64
        stamps, averaged per frame, then cast: what an exported graph takes as input);
        lidar2img ``[B, T*N, 4, 4]`` float32 on the features' device; the rest as ``forward``.
        """
        self._check_inputs(features, lidar2img, valid_views)
        batch = features[0].shape[0]
        if tuple(time_diff.shape) != (batch, self.cfg.num_frames):
            raise ValueError(f'time_diff must be [B, T] = {[batch, self.cfg.num_frames]}, '
                             f'got {list(time_diff.shape)}')
        if time_diff.dtype != torch.float32:
            raise TypeError(f'time_diff must be float32 (compute_time_diff), got {time_diff.dtype}')
        return self._decode_queries(features, lidar2img, time_diff, image_hw, gt_boxes, gt_labels,
                                    valid_views)

    def _decode_queries(self, features: Sequence[Tensor], lidar2img: Tensor, time_diff: Tensor,
                        image_hw: tuple[int, int], gt_boxes: Sequence[Tensor] | None,
                        gt_labels: Sequence[Tensor] | None,
                        valid_views: Tensor | None = None) -> dict:
        """The decoder run shared by ``forward`` and ``forward_time_diff`` (inputs checked)."""
        batch = features[0].shape[0]
        query_bbox, query_feat = self.matching_queries(batch)                         # [B, Q, 10], [B, Q, C]
        dn = None
        if self.training and self.cfg.query_denoising and gt_boxes is not None:
            if gt_labels is None:
                raise ValueError('query denoising needs gt_labels together with gt_boxes')
            dn = make_denoising_queries(
                gt_boxes, gt_labels, self.label_enc, self.num_queries, self.pc_range,
                self.num_classes, self.cfg.dn_groups, self.cfg.dn_box_noise_scale,
                self.cfg.dn_label_noise_scale)
        attn_blocked = None
        if dn is not None:
            query_bbox = torch.cat([dn.query_bbox, query_bbox], dim=1)                # [B, pad+Q, 10]
            query_feat = torch.cat([dn.query_feat, query_feat], dim=1)                # [B, pad+Q, C]
            attn_blocked = dn.attn_blocked                                            # [pad+Q, pad+Q]

        cls_scores, bbox_preds = self.transformer(query_bbox, query_feat, list(features), lidar2img,
                                                  time_diff, tuple(image_hw), attn_blocked,
                                                  valid_views)
        bbox_preds = query_to_head_layout(bbox_preds, self.pc_range)                  # [L, B, pad+Q, 10]

        if dn is None:
            return dict(all_cls_scores=cls_scores, all_bbox_preds=bbox_preds)
        pad = dn.pad_size
        return dict(all_cls_scores=cls_scores[:, :, pad:], all_bbox_preds=bbox_preds[:, :, pad:],
                    dn_cls_scores=cls_scores[:, :, :pad], dn_bbox_preds=bbox_preds[:, :, :pad],
                    dn_mask_dict=dn.mask_dict())

