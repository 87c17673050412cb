"""EVA02-L ViT with a simple feature pyramid — configuration; the network lands with issue 7."""
from __future__ import annotations

from dataclasses import dataclass

# every block except each third one (2, 5, 8, ...) uses 16x16 window attention
EVA02_L_WINDOW_BLOCKS: tuple[int, ...] = tuple(i for i in range(24) if i % 3 != 2)


@dataclass
class EVA02Config:
    """EVA02 ViT + simple pyramid (official ``vit_eva02_1600x640_trainval_future``)."""
    img_size: int = 1536                     # size the absolute position embedding was trained at
    real_img_size: tuple[int, int] = (640, 1600)
    patch_size: int = 16
    in_chans: int = 3
    embed_dim: int = 1024
    depth: int = 24
    num_heads: int = 16
    mlp_ratio: float = 4 * 2 / 3             # SwiGLU hidden = 2/3 of 4x
    qkv_bias: bool = True
    drop_path_rate: float = 0.3
    use_abs_pos: bool = True
    window_size: int = 16
    window_block_indexes: tuple[int, ...] = EVA02_L_WINDOW_BLOCKS
    use_act_checkpoint: bool = True
    fpn_out_channels: int = 256
    fpn_scale_factors: tuple[float, ...] = (4.0, 2.0, 1.0, 0.5)
    fpn_top_block: bool = True               # 5th level = max-pool of the last
    fpn_norm: str = 'LN'
    fpn_square_pad: int = 1600
    frozen_blocks: int = 3
