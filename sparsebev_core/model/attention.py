"""Scale-adaptive self-attention (SASA, docs/official_model.md section 2.5.2).

Multi-head self-attention among all queries whose logits get a distance penalty:
``logit_hij = q_i . k_j / sqrt(d) - tau_hi * D_ij``, with ``D_ij`` the BEV distance (metres)
between the decoded centres of queries i and j and ``tau_hi`` one scalar per head predicted
from query i. A large tau makes the head local (small objects), tau = 0 makes it global.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from .activation_checkpoint import run_segment
from .boxes import decode_bbox

Tensor = torch.Tensor


class ResidualMultiheadAttention(nn.Module):
    """``x + MHA(x, x, x, attn_mask)`` over batch-first inputs (mmcv ``MultiheadAttention``).

    The state-dict names are those of the official wrapper (``attn.in_proj_weight`` ...). The
    ``nn.MultiheadAttention`` runs sequence-first and with ``need_weights=True``, as mmcv 1.x
    calls it, so the same (non-fused) kernel path computes the same numbers.
    """

    def __init__(self, embed_dims: int, num_heads: int, dropout: float) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(embed_dims, num_heads, dropout=dropout)

    def attend(self, query: Tensor, key: Tensor, value: Tensor,
               attn_mask: Tensor | None) -> Tensor:
        """``MHA(query, key, value)`` without the residual: ``[B, Q, C]`` from keys ``[B, K, C]``.

        The same tensor passed as query, key and value is projected by one packed matmul,
        distinct tensors by three (``nn.MultiheadAttention``'s rule, kept as mmcv hands them in).
        """
        q = query.transpose(0, 1)                                              # [Q, B, C]
        k = q if key is query else key.transpose(0, 1)                         # [K, B, C]
        v = k if value is key else value.transpose(0, 1)                       # [K, B, C]
        # need_weights=True as mmcv calls it: the explicit softmax(QK^T + mask) V path, not the
        # fused scaled_dot_product_attention one, so the parity numbers match to the last bit
        out = self.attn(q, k, v, attn_mask=attn_mask, need_weights=True)[0]    # [Q, B, C]
        return out.transpose(0, 1)                                             # [B, Q, C]

    def forward(self, x: Tensor, attn_mask: Tensor | None) -> Tensor:
        """Self-attention with the identity residual: ``x + MHA(x, x, x)``."""
        return x + self.attend(x, x, x, attn_mask)                             # [B, Q, C]


def bev_distances(query_bbox: Tensor, pc_range: Sequence[float]) -> Tensor:
    """Pairwise BEV distances in metres between decoded query centres: ``[B, Q, Q]``.

    Explicit norm of differences (not ``cdist``, whose matmul path loses precision).
    """
    with torch.no_grad():
        centers = decode_bbox(query_bbox, pc_range)[..., :2]                   # [B, Q, 2]
        diff = centers[:, :, None, :] - centers[:, None, :, :]                 # [B, Q, Q, 2]
        return torch.norm(diff, dim=-1)                                        # [B, Q, Q]


class ScaleAdaptiveSelfAttention(nn.Module):
    """SASA: ``attention`` (residual MHA) + ``gen_tau`` (one tau per head per query)."""

    def __init__(self, embed_dims: int, num_heads: int, dropout: float,
                 pc_range: Sequence[float]) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.pc_range = tuple(pc_range)
        self.attention = ResidualMultiheadAttention(embed_dims, num_heads, dropout)
        self.gen_tau = nn.Linear(embed_dims, num_heads)

    @torch.no_grad()
    def init_weights(self) -> None:
        """tau starts query-independent and positive: weight 0, bias U(0, 2)."""
        nn.init.zeros_(self.gen_tau.weight)
        nn.init.uniform_(self.gen_tau.bias, 0.0, 2.0)

    def distance_bias(self, query_bbox: Tensor, query_feat: Tensor,
                      blocked: Tensor | None) -> Tensor:
        """Additive attention mask ``-tau_hi * D_ij`` (``-inf`` where ``blocked``): [B*H, Q, Q]."""
        neg_dist = -bev_distances(query_bbox, self.pc_range)                   # [B, Q, Q]
        tau = self.gen_tau(query_feat).permute(0, 2, 1)                        # [B, H, Q]
        bias = neg_dist[:, None, :, :] * tau[..., None]                        # [B, H, Q, Q]
        if blocked is not None:                                                # query denoising
            bias = bias.masked_fill(blocked[None, None], float('-inf'))        # [B, H, Q, Q]
        return bias.flatten(0, 1)                                              # [B*H, Q, Q]

    def _forward(self, query_bbox: Tensor, query_feat: Tensor,
                 blocked: Tensor | None) -> Tensor:
        bias = self.distance_bias(query_bbox, query_feat, blocked)             # [B*H, Q, Q]
        return self.attention(query_feat, bias)                                # [B, Q, C]

    def forward(self, query_bbox: Tensor, query_feat: Tensor,
                blocked: Tensor | None = None) -> Tensor:
        """query_bbox ``[B, Q, 10]`` (query layout), query_feat ``[B, Q, C]``, blocked
        ``[Q, Q]`` bool (True = i may not attend to j) or None -> ``[B, Q, C]`` (with residual)."""
        return run_segment(self, self._forward, query_bbox, query_feat, blocked, probe=query_feat)


def memory_ages(memory_len: int, len_per_frame: int) -> Tensor:
    """Age in frames of each memory row ``[memory_len]``: 1 for the newest ``len_per_frame`` rows, 2, ...

    The memory is pushed newest-first, one chunk of ``len_per_frame`` rows per frame.
    """
    return 1.0 + torch.div(torch.arange(memory_len), len_per_frame,
                           rounding_mode='floor').to(torch.float32)         # [M]


class TimeAdaptiveAttention(nn.Module):
    """SparseBEV++'s memory read (docs/official_model.md section 13.3, quirk 28): the queries
    cross-attend to the memory queue with a per-head, per-query penalty on the age,

        ``logit_hij = q_i . k_j / sqrt(d) - tau_hi * age_j``,  ``tau = gen_tau(query content)``,

    queries and keys carrying their box embeddings (``q = x + pos``, ``k = m + key_pos``), the
    values not (``v = m``); residual on the query content. ``cross_dist`` holds ``-age`` per
    memory row and ``query_dist`` the 1 of the no-memory case (official buffer names).
    """

    def __init__(self, embed_dims: int, num_heads: int, dropout: float, memory_len: int,
                 len_per_frame: int) -> None:
        super().__init__()
        self.attention = ResidualMultiheadAttention(embed_dims, num_heads, dropout)
        self.gen_tau = nn.Linear(embed_dims, num_heads)
        self.register_buffer('cross_dist', -memory_ages(memory_len, len_per_frame)[None, None])  # [1, 1, M]
        self.register_buffer('query_dist', torch.ones(1))                      # [1]

    @torch.no_grad()
    def init_weights(self) -> None:
        """tau starts query-independent and positive (weight 0, bias U(0, 2)), as in SASA."""
        nn.init.zeros_(self.gen_tau.weight)
        nn.init.uniform_(self.gen_tau.bias, 0.0, 2.0)

    def age_bias(self, query_feat: Tensor, negative_age: Tensor) -> Tensor:
        """``negative_age [B, Q, K] * tau [B, H, Q, 1]`` -> the additive mask ``[B*H, Q, K]``."""
        tau = self.gen_tau(query_feat).permute(0, 2, 1)                        # [B, H, Q]
        return (negative_age[:, None, :, :] * tau[..., None]).flatten(0, 1)   # [B*H, Q, K]

    def _forward(self, query_feat: Tensor, query_pos: Tensor, memory_feat: Tensor | None,
                 key_pos: Tensor | None, memory_valid: Tensor | None = None,
                 has_memory: Tensor | None = None, blocked: Tensor | None = None) -> Tensor:
        b, q = query_feat.shape[:2]
        if memory_feat is None:
            # docs/official_model.md, quirk 29: no memory yet (first frame) -> the queries attend
            # to themselves; the bias is the constant tau of each row (no effect on the softmax)
            keys, values = query_feat + query_pos, query_feat                 # [B, Q, C]
            negative_age = self.query_dist.expand(b, q, q)                     # [B, Q, Q]
        else:
            keys, values = memory_feat + key_pos, memory_feat                  # [B, M, C]
            negative_age = self.cross_dist[..., :memory_feat.shape[1]].expand(b, q, -1)  # [B, Q, M]
        bias = self.age_bias(query_feat, negative_age)                         # [B*H, Q, K]
        if memory_feat is not None and memory_valid is not None:
            bias = self.mask_padding_rows(bias, memory_valid, has_memory)
        if memory_feat is None and blocked is not None:
            # training with query denoising: the matching queries must not see the denoising
            # ones (they carry the ground truth) in the self-attention of
            # docs/official_model.md, quirk 29 either (docs/training.md)
            bias = bias.masked_fill(blocked[None], float('-inf'))              # [B*H, Q, Q]
        out = query_feat + self.attention.attend(query_feat + query_pos, keys, values, bias)
        if memory_feat is not None and has_memory is not None:          # some samples have none
            alone = self._forward(query_feat, query_pos, None, None,
                                  blocked=blocked)  # docs/official_model.md, quirk 29
            out = torch.where(has_memory[:, None, None], out, alone)
        return out

    def mask_padding_rows(self, bias: Tensor, memory_valid: Tensor,
                          has_memory: Tensor | None) -> Tensor:
        """``bias [B*H, Q, R]`` with ``-inf`` where ``memory_valid [B, R]`` is False: a padding
        row of a fixed-shape memory gets softmax weight exactly 0, so the result is the one of
        the valid rows alone (up to float rounding of the longer sums). A sample without any
        valid row (``has_memory [B]`` False) keeps its bias: its result is discarded."""
        usable = memory_valid if has_memory is None else memory_valid | ~has_memory[:, None]
        heads = bias.shape[0] // usable.shape[0]
        blocked = ~usable[:, None, None, :].expand(-1, heads, 1, -1).flatten(0, 1)   # [B*H, 1, R]
        return bias.masked_fill(blocked, float('-inf'))

    def forward(self, query_feat: Tensor, query_pos: Tensor, memory_feat: Tensor | None,
                key_pos: Tensor | None, memory_valid: Tensor | None = None,
                has_memory: Tensor | None = None, blocked: Tensor | None = None) -> Tensor:
        """query_feat / query_pos ``[B, Q, C]``, memory_feat / key_pos ``[B, R, C]`` (R <= the
        memory length; None before the first frame's memory) -> ``[B, Q, C]`` (with residual).

        memory_valid ``[B, R]`` bool (None: every row holds memory): padding rows of a
        fixed-shape memory, never attended to; has_memory ``[B]`` bool (None: every sample has
        a valid row): where False, the no-memory path (docs/official_model.md, quirk 29;
        a batch mixing both);
        blocked ``[Q, Q]`` bool (query denoising in training; True = i may not attend to j):
        applied to that no-memory self-attention only (the memory rows are open to every
        query)."""
        return run_segment(self, self._forward, query_feat, query_pos, memory_feat, key_pos,
                           memory_valid, has_memory, blocked, probe=query_feat)
