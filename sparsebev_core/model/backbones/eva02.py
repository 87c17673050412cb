"""EVA02 ViT with a simple feature pyramid (ViTDet style), as the official EVA02-L preset uses.

Plain PyTorch, attention through ``F.scaled_dot_product_attention``. Per block:
``x + drop_path(attn(LN(x)))`` then ``x + drop_path(SwiGLU(LN(x)))``, where

* attention has separate q/k/v projections (bias on q and v only), 2-D rotary position
  embedding (RoPE) on q and k, and runs either inside 16x16 windows (zero-padded, the padding
  tokens take part as keys, as in the official code) or globally (every third block);
* RoPE: for a head of ``d`` channels, the first ``d/2`` rotate with the token's row and the
  last ``d/2`` with its column, channel pairs ``(2i, 2i+1)`` interleaved, frequencies
  ``theta^(-2i/(d/2))`` on positions rescaled to the 16-token pre-training grid. The window
  table is 16x16; the global table is built for the ``img_size/16`` grid and resized
  (bicubic) to the real token grid, 40x100 for 640x1600 inputs;
* SwiGLU: ``w3(LN(silu(w1 x) * w2 x))`` with hidden size ``dim * 4 * 2/3``.

The pyramid turns the stride-16 map into strides 4 (two 2x2 transposed convs with a
channel LayerNorm and GELU between), 8 (one transposed conv), 16 and 32 (2x2 max-pool),
each followed by 1x1 and 3x3 convs without bias, each with a channel LayerNorm; a fifth
level is ``max_pool2d(kernel 1, stride 2)`` of the fourth. Output: five 256-channel maps.

Module and state-dict names mirror the official module (``backbone.net.blocks.{i}.attn.q_proj``,
``backbone.simfp_{2..5}.{j}``, ...), including the RoPE tables as buffers (``freqs_cos``,
``freqs_sin``), which every block's ``attn.rope`` shares, exactly as the official model saves them.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ...recipe.backbones import EVA02Config
from ..activation_checkpoint import run_segment
from .freezing import freeze

# ------------------------------------------------------------------------ building blocks
def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """Pairs (x_{2i}, x_{2i+1}) -> (-x_{2i+1}, x_{2i}) along the last axis."""
    pairs = x.unflatten(-1, (-1, 2))                                      # [..., d/2, 2]
    return torch.stack((-pairs[..., 1], pairs[..., 0]), dim=-1).flatten(-2)


class VisionRotaryEmbedding(nn.Module):
    """2-D RoPE table for a ``grid x grid`` token square, optionally resized to ``real_grid``."""

    def __init__(self, dim: int, pt_seq_len: int = 16, ft_seq_len: int | None = None,
                 real_grid: tuple[int, int] | None = None, theta: float = 10000.0):
        super().__init__()
        ft_seq_len = ft_seq_len or pt_seq_len
        freqs = 1.0 / (theta ** (torch.arange(0, dim, 2)[:dim // 2].float() / dim))   # [dim/2]
        t = torch.arange(ft_seq_len) / ft_seq_len * pt_seq_len                          # [S]
        f = torch.einsum('s,f->sf', t, freqs).repeat_interleave(2, dim=-1)             # [S, dim]
        grid = torch.cat([f[:, None, :].expand(-1, ft_seq_len, -1),                    # row part
                          f[None, :, :].expand(ft_seq_len, -1, -1)], dim=-1)           # [S, S, 2*dim]
        cos, sin = grid.cos(), grid.sin()
        if real_grid is not None:
            def resize(table: torch.Tensor) -> torch.Tensor:
                table = F.interpolate(table.permute(2, 0, 1)[None], size=tuple(real_grid),
                                      mode='bicubic', align_corners=False)             # [1, 2*dim, h, w]
                return table[0].permute(1, 2, 0)                                        # [h, w, 2*dim]
            cos, sin = resize(cos), resize(sin)
        self.register_buffer('freqs_cos', cos.reshape(-1, cos.shape[-1]))             # [N, 2*dim]
        self.register_buffer('freqs_sin', sin.reshape(-1, sin.shape[-1]))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        """``t [B, N, heads, head_dim]`` -> rotated, same shape."""
        return t * self.freqs_cos[:, None, :] + rotate_half(t) * self.freqs_sin[:, None, :]


class SwiGLU(nn.Module):
    """``w3(LN(silu(w1 x) * w2 x))`` (EVA02's sub-LN SwiGLU)."""

    def __init__(self, dim: int, hidden: int, eps: float = 1e-6):
        super().__init__()
        self.w1 = nn.Linear(dim, hidden)
        self.w2 = nn.Linear(dim, hidden)
        self.act = nn.SiLU()
        self.ffn_ln = nn.LayerNorm(hidden, eps=eps)
        self.w3 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w3(self.ffn_ln(self.act(self.w1(x)) * self.w2(x)))


class Attention(nn.Module):
    """Multi-head attention with RoPE on q, k; bias on q and v only."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool, rope: VisionRotaryEmbedding):
        super().__init__()
        self.num_heads = num_heads
        self.q_proj = nn.Linear(dim, dim, bias=False)
        self.k_proj = nn.Linear(dim, dim, bias=False)
        self.v_proj = nn.Linear(dim, dim, bias=False)
        self.q_bias = nn.Parameter(torch.zeros(dim)) if qkv_bias else None
        self.v_bias = nn.Parameter(torch.zeros(dim)) if qkv_bias else None
        self.rope = rope                                   # shared table (also in the state dict)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, H, W, C = x.shape
        x = x.reshape(B, H * W, C)                                             # [B, N, C]
        q = F.linear(x, self.q_proj.weight, self.q_bias).unflatten(-1, (self.num_heads, -1))
        k = F.linear(x, self.k_proj.weight).unflatten(-1, (self.num_heads, -1))
        v = F.linear(x, self.v_proj.weight, self.v_bias).unflatten(-1, (self.num_heads, -1))
        q = self.rope(q).type_as(v)                                            # [B, N, heads, d]
        k = self.rope(k).type_as(v)
        out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2),
                                             v.transpose(1, 2))                # [B, heads, N, d]
        out = self.proj(out.transpose(1, 2).reshape(B, H * W, C))              # [B, N, C]
        return out.view(B, H, W, C)


class DropPath(nn.Module):
    """Stochastic depth per sample (training only)."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
        return x * mask / keep


def window_partition(x: torch.Tensor, window: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """``[B, H, W, C]`` -> zero-padded windows ``[B * nW, window, window, C]`` and (Hp, Wp)."""
    B, H, W, C = x.shape
    pad_h, pad_w = (-H) % window, (-W) % window
    if pad_h or pad_w:
        x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
    Hp, Wp = H + pad_h, W + pad_w
    x = x.view(B, Hp // window, window, Wp // window, window, C)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window, window, C), (Hp, Wp)


def window_unpartition(windows: torch.Tensor, window: int, padded_hw: tuple[int, int],
                       hw: tuple[int, int]) -> torch.Tensor:
    """Inverse of ``window_partition``, padding removed -> ``[B, H, W, C]``."""
    Hp, Wp = padded_hw
    H, W = hw
    B = windows.shape[0] // (Hp * Wp // window // window)
    x = windows.view(B, Hp // window, Wp // window, window, window, -1)
    x = x.permute(0, 1, 3, 2, 4, 5).reshape(B, Hp, Wp, -1)
    return x[:, :H, :W, :].contiguous()


class Block(nn.Module):
    """Pre-norm transformer block, windowed (``window_size > 0``) or global attention."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, qkv_bias: bool, drop_path: float,
                 window_size: int, rope: VisionRotaryEmbedding, use_act_checkpoint: bool):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads, qkv_bias, rope)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = SwiGLU(dim, int(dim * mlp_ratio))
        self.window_size = window_size
        self.use_act_checkpoint = use_act_checkpoint

    def _inner(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.norm1(x)                                                      # [B, H, W, C]
        if self.window_size > 0:
            H, W = x.shape[1:3]
            x, padded_hw = window_partition(x, self.window_size)               # [B*nW, w, w, C]
            x = window_unpartition(self.attn(x), self.window_size, padded_hw, (H, W))
        else:
            x = self.attn(x)
        x = shortcut + self.drop_path(x)
        return x + self.drop_path(self.mlp(self.norm2(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return run_segment(self, self._inner, x, probe=x, enabled=self.use_act_checkpoint)


class PatchEmbed(nn.Module):
    """16x16/16 conv, channels-last output ``[B, H/16, W/16, C]``."""

    def __init__(self, patch_size: int, in_chans: int, embed_dim: int):
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).permute(0, 2, 3, 1)


def resized_abs_pos(pos_embed: torch.Tensor, hw: tuple[int, int], has_cls_token: bool = True
                    ) -> torch.Tensor:
    """Pre-training position table ``[1, 1 + S*S, C]`` -> ``[1, h, w, C]`` (bicubic)."""
    table = pos_embed[:, 1:] if has_cls_token else pos_embed
    size = math.isqrt(table.shape[1])
    table = table.reshape(1, size, size, -1)
    if (size, size) == tuple(hw):
        return table
    table = F.interpolate(table.permute(0, 3, 1, 2), size=tuple(hw), mode='bicubic', align_corners=False)
    return table.permute(0, 2, 3, 1)


class ViT(nn.Module):
    """EVA02 ViT trunk: patch embed + abs pos + blocks -> ``[B, C, H/16, W/16]``."""

    def __init__(self, cfg: EVA02Config):
        super().__init__()
        self.frozen_blocks = cfg.frozen_blocks
        self.patch_embed = PatchEmbed(cfg.patch_size, cfg.in_chans, cfg.embed_dim)
        if cfg.use_abs_pos:
            num_positions = (cfg.pretrain_img_size // cfg.patch_size) ** 2 + 1     # + cls token
            self.pos_embed = nn.Parameter(torch.zeros(1, num_positions, cfg.embed_dim))
        else:
            self.pos_embed = None
        half_head_dim = cfg.embed_dim // cfg.num_heads // 2
        real_grid = (cfg.real_img_size[0] // cfg.patch_size, cfg.real_img_size[1] // cfg.patch_size)
        self.rope_win = VisionRotaryEmbedding(half_head_dim, cfg.pt_hw_seq_len, cfg.window_size)
        self.rope_glb = VisionRotaryEmbedding(half_head_dim, cfg.pt_hw_seq_len,
                                              cfg.img_size // cfg.patch_size, real_grid=real_grid)
        drop_rates = torch.linspace(0, cfg.drop_path_rate, cfg.depth, device='cpu').tolist()
        windowed = set(cfg.window_block_indexes)
        self.blocks = nn.ModuleList([
            Block(cfg.embed_dim, cfg.num_heads, cfg.mlp_ratio, cfg.qkv_bias, drop_rates[i],
                  cfg.window_size if i in windowed else 0,
                  self.rope_win if i in windowed else self.rope_glb, cfg.use_act_checkpoint)
            for i in range(cfg.depth)])
        self.init_weights()

    def init_weights(self) -> None:
        """Official init: truncated normal (std 0.02) linears and position table, LN 1/0."""
        if self.pos_embed is not None:
            nn.init.trunc_normal_(self.pos_embed, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)                                                # [B, h, w, C]
        if self.pos_embed is not None:
            x = x + resized_abs_pos(self.pos_embed, x.shape[1:3])
        for block in self.blocks:
            x = block(x)
        return x.permute(0, 3, 1, 2)                                           # [B, C, h, w]


class ChannelLayerNorm(nn.Module):
    """LayerNorm over the channel axis of ``[N, C, H, W]`` (detectron2's ``LN``), eps 1e-6."""

    def __init__(self, channels: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u = x.mean(1, keepdim=True)
        s = (x - u).pow(2).mean(1, keepdim=True)
        x = (x - u) / torch.sqrt(s + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


class ConvNorm(nn.Conv2d):
    """Conv without bias followed by ``.norm`` (detectron2's ``Conv2d(..., norm=LN)``)."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int):
        super().__init__(in_ch, out_ch, kernel, padding=kernel // 2, bias=False)
        self.norm = ChannelLayerNorm(out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(super().forward(x))


class LastLevelMaxPool(nn.Module):
    """Extra pyramid level: ``max_pool2d(kernel 1, stride 2)`` of the coarsest map."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.max_pool2d(x, kernel_size=1, stride=2)


class SimpleFeaturePyramid(nn.Module):
    """ViTDet simple pyramid on the ViT's stride-16 map: ``simfp_{2..5}`` (+ top block)."""

    def __init__(self, net: ViT, dim: int, out_channels: int, scale_factors: tuple[float, ...],
                 top_block: bool, patch_size: int = 16):
        super().__init__()
        if tuple(scale_factors) != (4.0, 2.0, 1.0, 0.5):
            raise ValueError(f'only scale factors (4, 2, 1, 0.5) are supported, got {scale_factors}')
        self.net = net
        stages = []
        for scale in scale_factors:
            if scale == 4.0:
                layers = [nn.ConvTranspose2d(dim, dim // 2, 2, stride=2), ChannelLayerNorm(dim // 2),
                          nn.GELU(), nn.ConvTranspose2d(dim // 2, dim // 4, 2, stride=2)]
                in_dim = dim // 4
            elif scale == 2.0:
                layers, in_dim = [nn.ConvTranspose2d(dim, dim // 2, 2, stride=2)], dim // 2
            elif scale == 1.0:
                layers, in_dim = [], dim
            else:
                layers, in_dim = [nn.MaxPool2d(kernel_size=2, stride=2)], dim
            layers += [ConvNorm(in_dim, out_channels, 1), ConvNorm(out_channels, out_channels, 3)]
            stage = int(math.log2(patch_size / scale))                         # 2, 3, 4, 5
            self.add_module(f'simfp_{stage}', nn.Sequential(*layers))
            stages.append(f'simfp_{stage}')
        self.stage_names = stages
        self.top_block = LastLevelMaxPool() if top_block else None

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = self.net(x)                                                 # [B, C, H/16, W/16]
        outs = [getattr(self, name)(features) for name in self.stage_names]   # strides 4, 8, 16, 32
        if self.top_block is not None:
            outs.append(self.top_block(outs[-1]))                              # stride 64
        return outs


class EVA02(nn.Module):
    """EVA02 backbone + simple pyramid; ``forward`` -> five ``[N, 256, h, w]`` maps."""

    def __init__(self, cfg: EVA02Config):
        super().__init__()
        self.cfg = cfg
        self.backbone = SimpleFeaturePyramid(ViT(cfg), cfg.embed_dim, cfg.fpn_out_channels,
                                             tuple(cfg.fpn_scale_factors), cfg.fpn_top_block,
                                             cfg.patch_size)
        self.out_channels = [cfg.fpn_out_channels] * (len(cfg.fpn_scale_factors) + int(cfg.fpn_top_block))
        self._freeze()

    def frozen_modules(self) -> list[nn.Module]:
        """Patch embedding and the first ``frozen_blocks`` blocks (none when < 0)."""
        net = self.backbone.net
        if self.cfg.frozen_blocks < 0:
            return []
        return [net.patch_embed] + [net.blocks[i] for i in range(self.cfg.frozen_blocks)]

    def _freeze(self) -> None:
        freeze(self.frozen_modules())
        if self.cfg.frozen_blocks >= 0 and self.backbone.net.pos_embed is not None:
            self.backbone.net.pos_embed.requires_grad = False

    def train(self, mode: bool = True) -> 'EVA02':
        super().train(mode)
        self._freeze()
        return self

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        grid = (x.shape[-2] // self.cfg.patch_size, x.shape[-1] // self.cfg.patch_size)
        expected = (self.cfg.real_img_size[0] // self.cfg.patch_size,
                    self.cfg.real_img_size[1] // self.cfg.patch_size)
        if grid != expected:
            raise ValueError(f'EVA02 global RoPE is built for {tuple(self.cfg.real_img_size)} inputs '
                             f'(token grid {expected}); got {tuple(x.shape[-2:])}')
        return self.backbone(x)


def build_eva02(cfg: EVA02Config) -> EVA02:
    """Plain constructor from an ``EVA02Config``."""
    return EVA02(cfg)


# Pretrain key table (model.backbones.dispatch): (regex on the file's key, replacement).
# EVA02 detectron2 pretrain (``pretrain/eva02_L_coco_seg_sys_o365.pth``, under ``model``):
# the official EVA02 module loads ``backbone.net.*`` and ``backbone.simfp_*`` into itself,
# i.e. into ``img_backbone.backbone.*`` (the simple pyramid IS loaded, unlike the R50 FPN);
# detector heads (``proposal_generator.*``, ``roi_heads.*``) are ignored.
PRETRAIN_KEY_MAP: tuple[tuple[str, str], ...] = (
    (r'^img_backbone\.', 'img_backbone.'),
    (r'^backbone\.', 'img_backbone.backbone.'),
)
# Buffers computed from the config, not learned: the pretrain file's RoPE tables were built
# for another input size, so they are skipped (ours are recomputed) when loading a pretrain.
DERIVED_KEY_PATTERNS: tuple[str, ...] = (r'\.freqs_(cos|sin)$',)
