"""Adaptive mixing (AdaMixer-style, docs/official_model.md section 2.5.4).

The query generates, per sampling group, a channel-mixing matrix M ``[C_in, C_out]`` and a
point-mixing matrix S ``[out_points, in_points]`` and applies them to its own sampled
features. Frames are just more "points" here, so this is where temporal fusion happens.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .activation_checkpoint import run_segment

Tensor = torch.Tensor


class AdaptiveMixing(nn.Module):
    """``parameter_generator`` (query -> M, S per group) and ``out_proj`` (-> query dims)."""

    def __init__(self, embed_dims: int, in_points: int, num_groups: int, out_points: int) -> None:
        super().__init__()
        self.num_groups = num_groups
        self.in_points = in_points
        self.out_points = out_points
        self.group_dims = embed_dims // num_groups                    # C_in = C_out per group
        self.m_size = self.group_dims * self.group_dims
        self.s_size = in_points * out_points
        self.parameter_generator = nn.Linear(embed_dims, num_groups * (self.m_size + self.s_size))
        self.out_proj = nn.Linear(self.group_dims * out_points * num_groups, embed_dims)

    @torch.no_grad()
    def init_weights(self) -> None:
        """M and S start query-independent (generator weight 0, bias default)."""
        nn.init.zeros_(self.parameter_generator.weight)

    def _forward(self, sampled: Tensor, query_feat: Tensor) -> Tensor:
        b, q, g, p, c = sampled.shape                                  # [B, Q, G, T*P, C/G]
        if g != self.num_groups or p != self.in_points or c != self.group_dims:
            raise ValueError(f'adaptive mixing expects [B, Q, {self.num_groups}, {self.in_points}, '
                             f'{self.group_dims}] sampled features, got {list(sampled.shape)}')
        params = self.parameter_generator(query_feat).reshape(b * q, g, -1)   # [BQ, G, M+S]
        m, s = params.split([self.m_size, self.s_size], dim=2)
        m = m.reshape(b * q, g, c, c)                                  # [BQ, G, C_in, C_out]
        s = s.reshape(b * q, g, self.out_points, p)                    # [BQ, G, P_out, P_in]
        x = sampled.reshape(b * q, g, p, c)                            # [BQ, G, P_in, C]

        # channel mixing, then a LayerNorm over (points, channels) jointly, no affine (docs/official_model.md, quirk 12)
        x = torch.matmul(x, m)                                         # [BQ, G, P_in, C]
        x = F.relu(F.layer_norm(x, [x.size(-2), x.size(-1)]), inplace=True)
        # point mixing
        x = torch.matmul(s, x)                                         # [BQ, G, P_out, C]
        x = F.relu(F.layer_norm(x, [x.size(-2), x.size(-1)]), inplace=True)

        x = x.reshape(b, q, -1)                                        # [B, Q, G*P_out*C] (g, p, c)
        return query_feat + self.out_proj(x)                           # [B, Q, C_query]

    def forward(self, sampled: Tensor, query_feat: Tensor) -> Tensor:
        """sampled ``[B, Q, G, T*P, C/G]``, query_feat ``[B, Q, C]`` -> ``[B, Q, C]`` (residual)."""
        return run_segment(self, self._forward, sampled, query_feat, probe=sampled)
