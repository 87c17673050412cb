"""The backbone configs: what each backbone this implementation builds is, as plain data
(``ModelConfig.backbone`` is one of them, :data:`BackboneConfig`).

Each has a row in ``model.backbones.dispatch.BACKBONES`` (how to build it, how its pretrain
files map onto it) and one in ``official_backbones.OFFICIAL_BACKBONES`` (its official
``img_backbone`` config, read and written).
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class ResNetConfig:
    """mmdet-style ResNet (``style='pytorch'``: stride on the 3x3 conv)."""
    depth: int = 50                          # 18, 34, 50, 101
    base_channels: int = 64                  # width of the stem and of layer1 (64 = standard)
    out_indices: tuple[int, ...] = (0, 1, 2, 3)
    frozen_stages: int = 1                   # stem + layer1 frozen (requires_grad False, eval)
    norm_eval: bool = True                   # BN layers kept in eval mode during training
    with_cp: bool = True                     # activation checkpointing in training


@dataclass
class VoVNetConfig:
    """VoVNet (OSA blocks with effective squeeze-excitation), defaults = DD3D ``V-99-eSE``."""
    stem_channels: tuple[int, int, int] = (64, 64, 128)
    stage_conv_channels: tuple[int, ...] = (128, 160, 192, 224)
    stage_out_channels: tuple[int, ...] = (256, 512, 768, 1024)
    layers_per_block: int = 5
    blocks_per_stage: tuple[int, ...] = (1, 3, 9, 3)
    out_features: tuple[str, ...] = ('stage2', 'stage3', 'stage4', 'stage5')
    frozen_stages: int = 1                   # stem + stage2 frozen
    norm_eval: bool = True
    with_cp: bool = True


# every block except each third one (2, 5, 8, ...) uses 16x16 window attention
EVA02_L_WINDOW_BLOCKS: tuple[int, ...] = tuple(i for i in range(24) if i % 3 != 2)


@dataclass
class EVA02Config:
    """EVA02 ViT + simple pyramid (official ``vit_eva02_1600x640_trainval_future``)."""
    img_size: int = 1536                     # size the global RoPE table is built for
    real_img_size: tuple[int, int] = (640, 1600)   # network input; fixes the global token grid
    patch_size: int = 16
    in_chans: int = 3
    embed_dim: int = 1024
    depth: int = 24
    num_heads: int = 16
    mlp_ratio: float = 4 * 2 / 3             # SwiGLU hidden = 2/3 of 4x
    qkv_bias: bool = True
    drop_path_rate: float = 0.3
    use_abs_pos: bool = True
    pretrain_img_size: int = 224             # absolute position table: 14x14 + cls token
    pt_hw_seq_len: int = 16                  # RoPE pre-training grid
    window_size: int = 16
    window_block_indexes: tuple[int, ...] = EVA02_L_WINDOW_BLOCKS
    use_act_checkpoint: bool = True
    fpn_out_channels: int = 256
    fpn_scale_factors: tuple[float, ...] = (4.0, 2.0, 1.0, 0.5)
    fpn_top_block: bool = True               # 5th level = max-pool of the last
    frozen_blocks: int = 3                   # patch embed, pos embed, blocks 0..2 frozen


BackboneConfig = ResNetConfig | VoVNetConfig | EVA02Config
"""The backbones this implementation builds (``model.backbones.dispatch.BACKBONES``)."""
