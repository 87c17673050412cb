"""``RecurrentSparseBEVHead``: the SparseBEV++ (official v2) head with its state made explicit.

docs/official_model.md section 13, docs/head.md "The recurrent head". Per frame (the numbers
are the quirks of docs/official_model.md section 11):

1. the state of the previous frame moves into this frame (:func:`recurrent_state.warp_boxes`,
   24): the propagated boxes and the whole memory queue;
2. the queries are the ``Q`` learned ones followed by the ``K`` propagated ones, or by the
   ``K`` padding queries when the frames are more than ``max_time_interval`` apart or there is
   no previous frame (the time gate, 26; padding, 27);
3. the decoder reads the current frame's cameras and the memory (28);
4. the next state: the ``K`` queries with the highest class logit become the propagated
   queries, the best ``len_per_frame`` of them go to the front of the memory (31).

Submodule and parameter names (and their order) match the official state dict under
``pts_bbox_head.`` (the v2 manifest, docs/official_model.md section 13.6).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import nn

from ..recipe.config import HeadConfig
from .boxes import query_to_head_layout
from .denoising import make_denoising_queries
from .head import QueryHead, init_query_boxes
from .recurrent_decoder import RecurrentTransformer
from .recurrent_state import (EgoMotion, RecurrentState, RecurrentStateError, propagation_gate,
                              warp_boxes)

Tensor = torch.Tensor


@torch.no_grad()
def init_padding_boxes(weight: Tensor) -> None:
    """Official init of the padding boxes ``[K, 10]`` on top of an N(0, 1) embedding, in place
    (docs/official_model.md, quirk 27): x^, y^ ~ U(0, 1), z^ = 0, log dz = 1.5, velocity 0;
    log dx, log dy and sin, cos keep their N(0, 1) values."""
    weight[:, 2] = 0.0
    weight[:, 8:10] = 0.0
    weight[:, 5] = 1.5
    nn.init.uniform_(weight[:, :2], 0.0, 1.0)


class RecurrentSparseBEVHead(QueryHead):
    """Learned + propagated queries, memory-reading decoder, explicit recurrent state.

    ``forward(features, lidar2img, image_hw, state, motion)`` -> ``(outputs, next_state)``.
    """

    def __init__(self, cfg: HeadConfig) -> None:
        super().__init__()
        if cfg.memory is None:
            raise ValueError('RecurrentSparseBEVHead needs HeadConfig.memory (a MemoryConfig)')
        cfg.memory.check(cfg)
        self.cfg = cfg
        self.memory_cfg = cfg.memory
        self.num_classes = cfg.num_classes
        self.num_queries = cfg.num_queries
        self.num_propagated = cfg.memory.num_propagated
        self.code_weights = nn.Parameter(torch.tensor(cfg.code_weights, dtype=torch.float32),
                                         requires_grad=False)
        self.pc_range = nn.Parameter(torch.tensor(cfg.pc_range, dtype=torch.float32),
                                     requires_grad=False)                 # official: a parameter
        self.transformer = RecurrentTransformer(cfg)
        self.init_query_bbox = nn.Embedding(cfg.num_queries, 10)
        self.label_enc = nn.Embedding(cfg.num_classes + 1, cfg.embed_dims - 1)  # row num_classes: no label
        self.padding_bbox = nn.Embedding(cfg.memory.num_propagated, 10)
        self.padding_bbox.weight.requires_grad = False   # never trained: docs/official_model.md, quirk 27
        self.init_weights()

    @torch.no_grad()
    def init_weights(self) -> None:
        """Official initialisation; everything else keeps PyTorch defaults."""
        init_query_boxes(self.init_query_bbox.weight)
        init_padding_boxes(self.padding_bbox.weight)
        self.transformer.decoder.decoder_layer.init_weights()

    # -- one frame ---------------------------------------------------------------------------
    def forward(self, features: Sequence[Tensor], lidar2img: Tensor | np.ndarray,
                image_hw: tuple[int, int], state: RecurrentState | None = None,
                motion: EgoMotion | None = None,
                valid_views: Tensor | np.ndarray | None = None,
                propagate: Tensor | None = None,
                gt_boxes: Sequence[Tensor] | None = None,
                gt_labels: Sequence[Tensor] | None = None) -> tuple[dict, RecurrentState]:
        """Run one frame from the state after the previous frame.

        features: per level ``[B, N, C, h, w]`` (the current frame's N cameras); lidar2img
        ``[B, N, 4, 4]`` (model frame -> network-input pixels); image_hw the padded input (H, W);
        state: the state after the previous frame, in either form (``RecurrentState``; None:
        no history, a stream's first frame); motion: how the model frame moved since that
        frame (needed with a state); valid_views ``[B, N]`` bool (None: all valid): a missing
        camera is never sampled; propagate ``[B]`` bool: the time gate computed by the caller
        (``recurrent_state.propagation_gate``; None: computed here from ``motion``);
        gt_boxes / gt_labels (training with query denoising only): per element ``[K, 9]``
        gravity boxes and ``[K]`` labels in this frame (:meth:`denoising_queries`).

        Returns ``(outputs, next_state)``, the next state in the form of ``state`` (variable
        for None); outputs: ``all_cls_scores [L, B, Q+K, classes]`` logits and
        ``all_bbox_preds [L, B, Q+K, 10]`` head layout (rows ``:Q`` the learned queries, ``Q:``
        the propagated or padding ones), and what the frame started from:
        ``input_query_bbox [B, Q+K, 10]`` (query layout), ``input_memory_bbox [B, R, 10]``
        (the memory moved into this frame; None without a state), ``propagation_used [B]``
        bool (the propagated queries passed the time gate), ``propagated_index [B, K]`` (rows
        of this frame that the next state carries, best first); with denoising also
        ``dn_cls_scores``, ``dn_bbox_preds`` ``[L, B, pad, ...]`` and ``dn_mask_dict`` as the v1
        head (the rows above exclude the denoising ones). The next state never carries a
        gradient (no back-propagation through time, as the official code).
        """
        device = features[0].device
        lidar2img = torch.as_tensor(lidar2img).to(device=device, dtype=torch.float32)   # [B, N, 4, 4]
        if valid_views is not None:
            valid_views = torch.as_tensor(valid_views).to(device)                      # [B, N] bool
        self._check_inputs(features, lidar2img, valid_views)
        batch = features[0].shape[0]
        memory_feat = memory_bbox = memory_valid = memory_rows = None
        propagated = used = None
        if state is not None:
            if motion is None:
                raise RecurrentStateError('a recurrent state needs the ego motion since its frame '
                                          '(EgoMotion.from_poses)')
            state.check(batch, self.cfg.embed_dims, self.num_propagated, self.memory_cfg.memory_len)
            motion.check(batch)
            state, motion = state.to(device), motion.to(device)
            memory_feat, memory_rows = state.memory_feat, state.memory_rows
            memory_valid = state.memory_valid()                                           # [B, R] or None
            memory_bbox = warp_boxes(state.memory_bbox, motion, self.pc_range)           # [B, R, 10]
            propagated = (state.propagated_feat,
                          warp_boxes(state.propagated_bbox, motion, self.pc_range))      # [B, K, C|10]
            if propagate is None:
                used = self.passes_time_gate(motion)                                          # [B]
                if memory_rows is not None:                  # an empty fixed-form state: no frame
                    used = used & state.has_previous_frame()
            else:
                used = torch.as_tensor(propagate, device=device).reshape(batch).bool()
        query_bbox, query_feat = self.input_queries(batch, propagated, used)             # [B, Q+K, 10|C]
        dn = self.denoising_queries(gt_boxes, gt_labels, query_bbox.shape[1])
        pad = 0 if dn is None else dn.pad_size
        if dn is not None:                   # prepended: [B, pad + Q + K, ...]
            query_bbox = torch.cat([dn.query_bbox, query_bbox], dim=1)
            query_feat = torch.cat([dn.query_feat, query_feat], dim=1)

        cls_scores, bbox_preds, query_out = self.transformer(
            query_bbox, query_feat, list(features), lidar2img, tuple(image_hw), memory_feat,
            memory_bbox, valid_views, memory_valid,
            None if dn is None else dn.attn_blocked)                                     # [L, B, pad+Q+K, ...]
        # the state update never sees the denoising rows (official: dropped before the top-k)
        next_state, index = self.next_state(cls_scores[-1, :, pad:], bbox_preds[-1, :, pad:],
                                            query_out[-1, :, pad:], memory_feat, memory_bbox,
                                            memory_rows)
        bbox_preds = query_to_head_layout(bbox_preds, self.pc_range)                     # [L, B, pad+Q+K, 10]
        outputs = dict(all_cls_scores=cls_scores[:, :, pad:], all_bbox_preds=bbox_preds[:, :, pad:],
                       input_query_bbox=query_bbox[:, pad:], input_memory_bbox=memory_bbox,
                       propagation_used=(used if used is not None
                                         else torch.zeros(batch, dtype=torch.bool, device=device)),
                       propagated_index=index)
        if dn is not None:
            outputs.update(dn_cls_scores=cls_scores[:, :, :pad], dn_bbox_preds=bbox_preds[:, :, :pad],
                           dn_mask_dict=dn.mask_dict())
        return outputs, next_state

    def denoising_queries(self, gt_boxes: Sequence[Tensor] | None,
                          gt_labels: Sequence[Tensor] | None, num_queries: int):
        """Query denoising in training, as the v1 head (docs/official_model.md 2.4.1): noised GT
        queries prepended to the ``Q + K`` learned and propagated ones (``num_queries``), which
        see none of them (the official extended mask, 13.5). None in eval mode, without
        denoising, without ground truth or when the batch has no GT box."""
        if not (self.training and self.cfg.query_denoising and gt_boxes is not None):
            return None
        if gt_labels is None:
            raise ValueError('query denoising needs gt_labels together with gt_boxes')
        return make_denoising_queries(
            gt_boxes, gt_labels, self.label_enc, num_queries, tuple(self.cfg.pc_range),
            self.num_classes, self.cfg.dn_groups, self.cfg.dn_box_noise_scale,
            self.cfg.dn_label_noise_scale)

    def passes_time_gate(self, motion: EgoMotion) -> Tensor:
        """``[B]`` bool: the frames are at most ``max_time_interval`` apart, compared in float64
        (docs/official_model.md, quirk 26). Only the propagated queries are gated, never the memory."""
        return propagation_gate(motion.elapsed, self.memory_cfg.max_time_interval)

    def input_queries(self, batch: int, propagated: tuple[Tensor, Tensor] | None,
                      used: Tensor | None) -> tuple[Tensor, Tensor]:
        """The decoder's input: ``Q`` learned queries, then ``K`` propagated or padding ones.

        propagated: (features ``[B, K, C]``, boxes moved into this frame ``[B, K, 10]``) or None;
        used ``[B]`` bool: where False, the padding queries replace them (docs/official_model.md, quirks 26, 27).
        Returns boxes ``[B, Q+K, 10]`` and features ``[B, Q+K, C]``.
        """
        query_bbox, query_feat = self.matching_queries(batch)                   # [B, Q, 10], [B, Q, C]
        pad_bbox = self.padding_bbox.weight[None].repeat(batch, 1, 1)           # [B, K, 10]
        # the padding feature is the learned queries' (official: row -2 of the query features)
        pad_feat = query_feat[:, -1:].repeat(1, self.num_propagated, 1)          # [B, K, C]
        if propagated is not None:
            keep = used[:, None, None]                                           # [B, 1, 1]
            pad_feat = torch.where(keep, propagated[0], pad_feat)
            pad_bbox = torch.where(keep, propagated[1], pad_bbox)
        return torch.cat([query_bbox, pad_bbox], dim=1), torch.cat([query_feat, pad_feat], dim=1)

    @torch.no_grad()
    def next_state(self, cls_logits: Tensor, bbox: Tensor, query_feat: Tensor,
                   memory_feat: Tensor | None, memory_bbox: Tensor | None,
                   memory_rows: Tensor | None = None) -> tuple[RecurrentState, Tensor]:
        """The state after this frame (docs/official_model.md, quirk 31).

        cls_logits ``[B, Q+K, classes]``, bbox ``[B, Q+K, 10]`` (query layout) and query_feat
        ``[B, Q+K, C]`` of the last decoder layer; memory ``[B, R, C]`` / ``[B, R, 10]`` as this
        frame read it (None: none), memory_rows ``[B]`` its valid rows (a fixed-form state; None:
        all). The ``K`` rows with the highest max class logit, best first, are propagated; their
        first ``len_per_frame`` rows go to the front of the memory, which keeps its newest
        ``memory_len`` rows (a fixed-form memory: always ``memory_len`` rows, the valid ones
        first, ``min(memory_rows + len_per_frame, memory_len)`` of them). Returns (state, row
        index ``[B, K]``).
        """
        best = cls_logits.max(dim=-1).values                                     # [B, Q+K]
        index = torch.topk(best, k=self.num_propagated, dim=1).indices           # [B, K], descending
        propagated_feat = torch.gather(query_feat, 1, index[..., None].expand(-1, -1, query_feat.shape[-1]))
        propagated_bbox = torch.gather(bbox, 1, index[..., None].expand(-1, -1, bbox.shape[-1]))
        chunk = self.memory_cfg.len_per_frame
        new_feat, new_bbox = propagated_feat[:, :chunk], propagated_bbox[:, :chunk]   # [B, chunk, ...]
        if memory_feat is not None:
            limit = self.memory_cfg.memory_len
            new_feat = torch.cat([new_feat, memory_feat], dim=1)[:, :limit]      # [B, M', C]
            new_bbox = torch.cat([new_bbox, memory_bbox], dim=1)[:, :limit]      # [B, M', 10]
        rows = None if memory_rows is None else (memory_rows + chunk).clamp(max=self.memory_cfg.memory_len)
        state = RecurrentState(propagated_feat=propagated_feat.detach(),
                               propagated_bbox=propagated_bbox.detach(),
                               memory_feat=new_feat.detach(), memory_bbox=new_bbox.detach(),
                               memory_rows=rows)
        return state, index
