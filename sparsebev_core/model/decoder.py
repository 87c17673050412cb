"""The SparseBEV decoder: one layer, shared, run ``num_layers`` times (docs/official_model.md section 2.5).

Per iteration: position MLP added to the query content -> SASA -> adaptive spatio-temporal
sampling -> adaptive mixing -> FFN -> class logits and box refinement. Boxes are detached
between iterations (docs/official_model.md, quirk 1); all iterations' outputs are returned for deep supervision.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
from torch import nn

from ..recipe.config import HeadConfig
from .attention import ScaleAdaptiveSelfAttention
from .boxes import inverse_sigmoid
from .mixing import AdaptiveMixing
from .sampling import NUM_CAMERAS, SpatioTemporalSampling, group_features_for_sampling

Tensor = torch.Tensor

MIN_TIME_DIFF = 1e-5        # smaller time gaps (duplicated frames) count as 1 s for velocity
_LOW_PRECISION_TIME_DTYPES = (torch.float16, torch.bfloat16, torch.float32, np.float16, np.float32)


def compute_time_diff(timestamps: Tensor | np.ndarray, num_cameras: int = NUM_CAMERAS) -> Tensor:
    """``time_diff[b, t]`` = mean over cameras of ``ts[b, frame 0, cam] - ts[b, t, cam]``.

    timestamps ``[B, T*N]`` seconds, frame-major. Computed in float64 and only then cast to
    float32 (docs/official_model.md, quirk 13: absolute stamps ~1.5e9 s would lose the milliseconds in float32).
    Returns ``[B, T]`` float32 (0 for frame 0, positive for past frames).
    """
    if getattr(timestamps, 'dtype', None) in _LOW_PRECISION_TIME_DTYPES:
        raise TypeError(f'timestamps must be float64 seconds, got {timestamps.dtype}: float32 '
                        'cannot resolve milliseconds at Unix-epoch magnitudes (~1.5e9 s)')
    ts = torch.as_tensor(timestamps, dtype=torch.float64)
    ts = ts.reshape(ts.shape[0], -1, num_cameras)                                # [B, T, N]
    return (ts[:, :1, :] - ts).mean(dim=-1).to(torch.float32)                     # [B, T]


def velocity_time_scale(time_diff: Tensor) -> Tensor:
    """Time gap to the first past frame, ``[B, 1, 1]``; gaps below 1e-5 s become 1.

    The network regresses the displacement over one frame gap; dividing by this turns it
    into m/s ([issue #42], [issue #75]). A duplicated frame (cold start, gap 0) divides by 1.
    """
    gap = time_diff.clone()
    gap[gap < MIN_TIME_DIFF] = 1.0
    return gap[:, 1:2, None]                                                      # [B, 1, 1]


def refine_boxes(query_bbox: Tensor, regression: Tensor) -> Tensor:
    """New query boxes: residual x^, y^, z^ in logit space, everything else re-predicted.

    docs/official_model.md, quirk 4: only the centre is refined (``sigmoid(delta + logit(old))``, logit with eps 1e-5);
    log sizes, sin, cos and velocity come straight from the regression branch.
    """
    xyz = torch.sigmoid(regression[..., 0:3] + inverse_sigmoid(query_bbox[..., 0:3]))  # [B, Q, 3]
    return torch.cat([xyz, regression[..., 3:]], dim=-1)                          # [B, Q, 10]


class FFN(nn.Module):
    """mmcv FFN: ``x + Linear(ReLU(Linear(x)))`` with dropout (names ``layers.0.0``, ``layers.1``)."""

    def __init__(self, embed_dims: int, hidden_dims: int, dropout: float) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Sequential(nn.Linear(embed_dims, hidden_dims), nn.ReLU(inplace=True), nn.Dropout(dropout)),
            nn.Linear(hidden_dims, embed_dims),
            nn.Dropout(dropout),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.layers(x)                                                 # [B, Q, C]


def make_cls_branch(embed_dims: int, num_classes: int) -> nn.Sequential:
    """Class logits: [Linear-LN-ReLU] x 2 -> Linear (docs/official_model.md 2.5.5)."""
    c = embed_dims
    return nn.Sequential(
        nn.Linear(c, c), nn.LayerNorm(c), nn.ReLU(inplace=True),
        nn.Linear(c, c), nn.LayerNorm(c), nn.ReLU(inplace=True),
        nn.Linear(c, num_classes),
    )


def make_reg_branch(embed_dims: int, code_size: int = 10) -> nn.Sequential:
    """Box regression: [Linear-ReLU] x 2 -> Linear, no LayerNorm (docs/official_model.md 2.5.5)."""
    c = embed_dims
    return nn.Sequential(
        nn.Linear(c, c), nn.ReLU(inplace=True),
        nn.Linear(c, c), nn.ReLU(inplace=True),
        nn.Linear(c, code_size),
    )


@torch.no_grad()
def init_cls_prior(cls_branch: nn.Sequential, prior: float = 0.01) -> None:
    """Last class bias = -log((1 - p) / p): every class starts at the focal-loss prior p."""
    nn.init.constant_(cls_branch[-1].bias, -math.log((1 - prior) / prior))


class DecoderLayer(nn.Module):
    """One SparseBEV decoder layer with its own class and box branches."""

    def __init__(self, cfg: HeadConfig, code_size: int = 10) -> None:
        super().__init__()
        c = cfg.embed_dims
        self.pc_range = tuple(cfg.pc_range)
        self.position_encoder = nn.Sequential(
            nn.Linear(3, c), nn.LayerNorm(c), nn.ReLU(inplace=True),
            nn.Linear(c, c), nn.LayerNorm(c), nn.ReLU(inplace=True),
        )
        self.self_attn = ScaleAdaptiveSelfAttention(c, cfg.num_heads, cfg.dropout, cfg.pc_range)
        self.sampling = SpatioTemporalSampling(c, cfg.num_frames, cfg.num_groups, cfg.num_points,
                                               cfg.num_levels, cfg.pc_range)
        self.mixing = AdaptiveMixing(c, cfg.num_points * cfg.num_frames, cfg.num_groups,
                                     cfg.mixing_out_points)
        self.ffn = FFN(c, cfg.ffn_dims, cfg.dropout)
        self.norm1 = nn.LayerNorm(c)
        self.norm2 = nn.LayerNorm(c)
        self.norm3 = nn.LayerNorm(c)
        self.cls_branch = make_cls_branch(c, cfg.num_classes)
        self.reg_branch = make_reg_branch(c, code_size)

    @torch.no_grad()
    def init_weights(self) -> None:
        """Official init on top of PyTorch defaults (docs/official_model.md 2.5.x): tau, offsets, mixing, cls prior."""
        self.self_attn.init_weights()
        self.sampling.init_weights()
        self.mixing.init_weights()
        init_cls_prior(self.cls_branch)

    def forward(self, query_bbox: Tensor, query_feat: Tensor, features: list[Tensor],
                lidar2img: Tensor, time_diff: Tensor, image_hw: tuple[int, int],
                attn_blocked: Tensor | None = None,
                valid_views: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """query_bbox ``[B, Q, 10]`` (query layout), query_feat ``[B, Q, C]``, grouped features
        ``[BTG, C/G, N, h, w]`` per level, valid_views ``[B, T*N]`` bool or None (all valid)
        -> (query_feat ``[B, Q, C]``, cls logits ``[B, Q, classes]``, refined boxes
        ``[B, Q, 10]`` query layout, velocity in m/s)."""
        # docs/official_model.md, quirk 2: the position embedding is added to the content itself, every layer
        query_feat = query_feat + self.position_encoder(query_bbox[..., :3])      # [B, Q, C]
        query_feat = self.norm1(self.self_attn(query_bbox, query_feat, attn_blocked))
        sampled = self.sampling(query_bbox, query_feat, features, lidar2img, time_diff,
                                image_hw, valid_views=valid_views)                # [B, Q, G, TP, C/G]
        query_feat = self.norm2(self.mixing(sampled, query_feat))                 # [B, Q, C]
        query_feat = self.norm3(self.ffn(query_feat))                             # [B, Q, C]

        cls_logits = self.cls_branch(query_feat)                                  # [B, Q, classes]
        bbox = refine_boxes(query_bbox, self.reg_branch(query_feat))              # [B, Q, 10]
        if time_diff.shape[1] > 1:                                                # docs/official_model.md, quirk 5
            bbox = torch.cat([bbox[..., :8], bbox[..., 8:] / velocity_time_scale(time_diff)], dim=-1)
        return query_feat, cls_logits, bbox


class Decoder(nn.Module):
    """``decoder_layer`` applied ``num_layers`` times with shared weights."""

    def __init__(self, cfg: HeadConfig) -> None:
        super().__init__()
        self.num_layers = cfg.num_layers
        self.num_groups = cfg.num_groups
        self.num_frames = cfg.num_frames
        self.decoder_layer = DecoderLayer(cfg)

    def forward(self, query_bbox: Tensor, query_feat: Tensor, features: Sequence[Tensor],
                lidar2img: Tensor, time_diff: Tensor, image_hw: tuple[int, int],
                attn_blocked: Tensor | None = None,
                valid_views: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """FPN levels ``[B, T*N, C, h, w]`` (N views per frame) -> stacked (cls
        ``[L, B, Q, classes]``, boxes ``[L, B, Q, 10]`` query layout). valid_views ``[B, T*N]``
        bool: no point samples an invalid view (None: all valid)."""
        num_views = features[0].shape[1] // self.num_frames
        grouped = group_features_for_sampling(features, self.num_groups, num_views,
                                              valid_views=valid_views)            # [BTG, C/G, N, h, w]
        all_cls, all_bbox = [], []
        for _ in range(self.num_layers):
            query_feat, cls_logits, bbox = self.decoder_layer(
                query_bbox, query_feat, grouped, lidar2img, time_diff, image_hw, attn_blocked,
                valid_views)
            query_bbox = bbox.detach()                                            # docs/official_model.md, quirk 1
            all_cls.append(cls_logits)
            all_bbox.append(bbox)
        return torch.stack(all_cls), torch.stack(all_bbox)                        # [L, B, Q, ...]


class Transformer(nn.Module):
    """Holds the decoder (state-dict prefix ``transformer.decoder``); cleans non-finite values."""

    def __init__(self, cfg: HeadConfig) -> None:
        super().__init__()
        self.decoder = Decoder(cfg)

    def forward(self, query_bbox: Tensor, query_feat: Tensor, features: Sequence[Tensor],
                lidar2img: Tensor, time_diff: Tensor, image_hw: tuple[int, int],
                attn_blocked: Tensor | None = None,
                valid_views: Tensor | None = None) -> tuple[Tensor, Tensor]:
        cls_scores, bbox_preds = self.decoder(query_bbox, query_feat, features, lidar2img,
                                              time_diff, image_hw, attn_blocked, valid_views)
        return torch.nan_to_num(cls_scores), torch.nan_to_num(bbox_preds)         # [L, B, Q, ...]
