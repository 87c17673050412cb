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

    def forward(self, x: Tensor, attn_mask: Tensor | None) -> Tensor:
        x_seq = x.transpose(0, 1)                                              # [Q, B, C]
        # need_weights=True as mmcv calls it: the explicit softmax(QK^T + mask) V path, not the
        # fused scaled_dot_product_attention one, so the parity numbers match to the last bit
        out = self.attn(x_seq, x_seq, x_seq, attn_mask=attn_mask,
                        need_weights=True)[0]                                  # [Q, B, C]
        return x + out.transpose(0, 1)                                         # [B, Q, C]


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
