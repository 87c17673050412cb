"""The SparseBEV++ decoder: the v1 layer with a memory read in front (docs/official_model.md section 13).

Per iteration: box position embedding of the whole query box -> time-adaptive
cross-attention to the memory queue (+ ``norm_temp``) -> the embedding added to the content
-> scale-adaptive self-attention -> sampling of the current frame -> adaptive mixing -> FFN ->
class logits and box refinement. One layer, shared by all iterations (docs/official_model.md,
quirk 1); 6 iterations in training, the first 4 at inference (docs/official_model.md, quirk 23).
Sampling, mixing, SASA, FFN and the branches are v1's modules with one frame (``num_frames =
1``: no temporal warp of the sampling points, velocity regressed directly in m/s).
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from ..recipe.config import HeadConfig
from .attention import ScaleAdaptiveSelfAttention, TimeAdaptiveAttention
from .decoder import FFN, init_cls_prior, make_cls_branch, make_reg_branch, refine_boxes
from .mixing import AdaptiveMixing
from .sampling import SpatioTemporalSampling, group_features_for_sampling

Tensor = torch.Tensor


def box_field_mlp(in_dims: int, embed_dims: int) -> nn.Sequential:
    """Linear-ReLU-LN-Linear-ReLU-LN (ReLU before the LayerNorm; docs/official_model.md, quirk 30)."""
    return nn.Sequential(
        nn.Linear(in_dims, embed_dims), nn.ReLU(inplace=True), nn.LayerNorm(embed_dims),
        nn.Linear(embed_dims, embed_dims), nn.ReLU(inplace=True), nn.LayerNorm(embed_dims),
    )


class QueryBoxEncoder(nn.Module):
    """Position embedding of a query box ``[..., 10]`` -> ``[..., C]``: one MLP per field group
    (normalised centre, log sizes, sin/cos, velocity), summed, then an output MLP."""

    def __init__(self, embed_dims: int) -> None:
        super().__init__()
        self.xyz_encoder = box_field_mlp(3, embed_dims)
        self.whl_encoder = box_field_mlp(3, embed_dims)
        self.yaw_encoder = box_field_mlp(2, embed_dims)
        self.vel_encoder = box_field_mlp(2, embed_dims)
        self.output_fc = box_field_mlp(embed_dims, embed_dims)

    def forward(self, boxes: Tensor) -> Tensor:
        fields = (self.xyz_encoder(boxes[..., 0:3]) + self.whl_encoder(boxes[..., 3:6])
                  + self.yaw_encoder(boxes[..., 6:8]))
        return self.output_fc(fields + self.vel_encoder(boxes[..., 8:10]))   # [..., C]


class RecurrentDecoderLayer(nn.Module):
    """One SparseBEV++ decoder layer (official submodule names and order)."""

    def __init__(self, cfg: HeadConfig, code_size: int = 10) -> None:
        super().__init__()
        c, memory = cfg.embed_dims, cfg.memory
        self.position_encoder = QueryBoxEncoder(c)
        self.self_attn = ScaleAdaptiveSelfAttention(c, cfg.num_heads, cfg.dropout, cfg.pc_range)
        self.cross_attn = TimeAdaptiveAttention(c, cfg.num_heads, cfg.dropout, memory.memory_len,
                                                memory.len_per_frame)
        self.sampling = SpatioTemporalSampling(c, cfg.num_frames, cfg.num_groups, cfg.num_points,
                                               cfg.num_levels, cfg.pc_range)
        self.mixing = AdaptiveMixing(c, cfg.num_points * cfg.num_frames, cfg.num_groups,
                                     cfg.mixing_out_points)
        self.ffn = FFN(c, cfg.ffn_dims, cfg.dropout)
        self.norm1 = nn.LayerNorm(c)
        self.norm2 = nn.LayerNorm(c)
        self.norm3 = nn.LayerNorm(c)
        self.norm_temp = nn.LayerNorm(c)
        self.cls_branch = make_cls_branch(c, cfg.num_classes)
        self.reg_branch = make_reg_branch(c, code_size)

    @torch.no_grad()
    def init_weights(self) -> None:
        """Official init on top of PyTorch defaults: SASA and memory tau, offsets, mixing, cls prior."""
        self.self_attn.init_weights()
        self.cross_attn.init_weights()
        self.sampling.init_weights()
        self.mixing.init_weights()
        init_cls_prior(self.cls_branch)

    def forward(self, query_bbox: Tensor, query_feat: Tensor, features: list[Tensor],
                lidar2img: Tensor, image_hw: tuple[int, int], memory_feat: Tensor | None,
                key_pos: Tensor | None, valid_views: Tensor | None = None,
                memory_valid: Tensor | None = None, has_memory: Tensor | None = None,
                attn_blocked: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """query_bbox ``[B, Q, 10]`` (query layout), query_feat ``[B, Q, C]``, grouped features
        ``[B*G, C/G, N, h, w]`` per level, lidar2img ``[B, N, 4, 4]``, memory_feat and its box
        embedding key_pos ``[B, R, C]`` (None: no memory yet), valid_views ``[B, N]`` bool or None,
        memory_valid ``[B, R]`` / has_memory ``[B]`` (``TimeAdaptiveAttention``), attn_blocked
        ``[Q, Q]`` bool (query denoising in training: pairs that may not attend)
        -> (query_feat ``[B, Q, C]``, cls logits ``[B, Q, classes]``, refined boxes ``[B, Q, 10]``)."""
        query_pos = self.position_encoder(query_bbox)                             # [B, Q, C]
        query_feat = self.norm_temp(self.cross_attn(query_feat, query_pos, memory_feat, key_pos,
                                                    memory_valid, has_memory, attn_blocked))
        query_feat = query_feat + query_pos               # docs/official_model.md, quirks 2 and 30
        query_feat = self.norm1(self.self_attn(query_bbox, query_feat, attn_blocked))
        no_time = query_feat.new_zeros(query_feat.shape[0], 1)                    # [B, T=1]
        sampled = self.sampling(query_bbox, query_feat, features, lidar2img, no_time, image_hw,
                                valid_views=valid_views)                          # [B, Q, G, P, C/G]
        query_feat = self.norm2(self.mixing(sampled, query_feat))                 # [B, Q, C]
        query_feat = self.norm3(self.ffn(query_feat))                             # [B, Q, C]
        cls_logits = self.cls_branch(query_feat)                                  # [B, Q, classes]
        bbox = refine_boxes(query_bbox, self.reg_branch(query_feat))              # [B, Q, 10], v in m/s
        return query_feat, cls_logits, bbox


def static_graph() -> bool:
    """True while the module is being traced or exported (no data-dependent Python branches)."""
    return torch.jit.is_tracing() or torch.onnx.is_in_onnx_export()


def memory_paths(memory_feat: Tensor | None, memory_bbox: Tensor | None,
                 memory_valid: Tensor | None
                 ) -> tuple[Tensor | None, Tensor | None, Tensor | None, Tensor | None]:
    """Which memory-attention path each sample takes, decided once per frame.

    A fixed-shape memory (``memory_valid [B, R]`` given) is read with its padding rows masked;
    a sample with no valid row takes the no-memory path (docs/official_model.md, quirk 29).
    Eagerly, a batch where every sample has memory drops ``has_memory`` (mask only) and one
    where none has drops the memory (docs/official_model.md, quirk 29 for all, as the variable
    form with no memory);
    traced or exported, both paths run and ``has_memory [B]`` selects. Returns (memory_feat,
    memory_bbox, memory_valid, has_memory).
    """
    if memory_feat is None or memory_valid is None:
        return memory_feat, memory_bbox, None, None
    has_memory = memory_valid.any(dim=1)                                          # [B]
    if not static_graph():
        if bool(has_memory.all()):
            return memory_feat, memory_bbox, memory_valid, None
        if not bool(has_memory.any()):
            return None, None, None, None
    return memory_feat, memory_bbox, memory_valid, has_memory


class RecurrentDecoder(nn.Module):
    """``decoder_layer`` iterated with shared weights: ``num_layers`` times in training, the
    first ``memory.inference_layers`` at inference (docs/official_model.md, quirk 23)."""

    def __init__(self, cfg: HeadConfig) -> None:
        super().__init__()
        self.num_layers = cfg.num_layers
        self.inference_layers = cfg.memory.inference_layers
        self.num_groups = cfg.num_groups
        self.decoder_layer = RecurrentDecoderLayer(cfg)

    @property
    def iterations(self) -> int:
        """How many times the layer runs in the current mode."""
        return self.num_layers if self.training else self.inference_layers

    def forward(self, query_bbox: Tensor, query_feat: Tensor, features: Sequence[Tensor],
                lidar2img: Tensor, image_hw: tuple[int, int], memory_feat: Tensor | None,
                memory_bbox: Tensor | None, valid_views: Tensor | None = None,
                memory_valid: Tensor | None = None,
                attn_blocked: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """FPN levels ``[B, N, C, h, w]`` of the current frame, the memory ``[B, R, C]`` and its
        boxes ``[B, R, 10]`` in this frame (None: none yet), ``memory_valid [B, R]`` bool (None:
        every row is memory; a fixed-shape memory marks its padding rows False), attn_blocked
        ``[Q, Q]`` (query denoising) -> stacked (cls ``[L, B, Q, classes]``, boxes
        ``[L, B, Q, 10]`` query layout, features ``[L, B, Q, C]``)."""
        num_views = features[0].shape[1]
        grouped = group_features_for_sampling(features, self.num_groups, num_views,
                                              valid_views=valid_views)            # [BG, C/G, N, h, w]
        memory_feat, memory_bbox, memory_valid, has_memory = memory_paths(
            memory_feat, memory_bbox, memory_valid)
        # the memory boxes do not change within a frame: their embedding is computed once
        key_pos = None if memory_bbox is None else self.decoder_layer.position_encoder(memory_bbox)
        all_cls, all_bbox, all_feat = [], [], []
        for _ in range(self.iterations):
            query_feat, cls_logits, bbox = self.decoder_layer(
                query_bbox, query_feat, grouped, lidar2img, image_hw, memory_feat, key_pos,
                valid_views, memory_valid, has_memory, attn_blocked)
            query_bbox = bbox.detach()                                            # docs/official_model.md, quirk 1
            all_cls.append(cls_logits)
            all_bbox.append(bbox)
            all_feat.append(query_feat)
        return torch.stack(all_cls), torch.stack(all_bbox), torch.stack(all_feat)  # [L, B, Q, ...]


class RecurrentTransformer(nn.Module):
    """Holds the decoder (state-dict prefix ``transformer.decoder``); cleans non-finite values."""

    def __init__(self, cfg: HeadConfig) -> None:
        super().__init__()
        self.decoder = RecurrentDecoder(cfg)

    def forward(self, query_bbox: Tensor, query_feat: Tensor, features: Sequence[Tensor],
                lidar2img: Tensor, image_hw: tuple[int, int], memory_feat: Tensor | None,
                memory_bbox: Tensor | None, valid_views: Tensor | None = None,
                memory_valid: Tensor | None = None,
                attn_blocked: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        outputs = self.decoder(query_bbox, query_feat, features, lidar2img, image_hw,
                               memory_feat, memory_bbox, valid_views, memory_valid, attn_blocked)
        return tuple(torch.nan_to_num(x) for x in outputs)                        # [L, B, Q, ...]
