"""VoVNet-99-eSE backbone (DD3D names) — configuration; the network lands with issue 7."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class VoVNetConfig:
    """VoVNet (OSA blocks with effective squeeze-excitation), defaults = DD3D ``V-99-eSE``."""
    spec_name: str = 'V-99-eSE'
    stem_channels: tuple[int, int, int] = (64, 64, 128)
    stage_conv_channels: tuple[int, ...] = (128, 160, 192, 224)
    stage_out_channels: tuple[int, ...] = (256, 512, 768, 1024)
    layers_per_block: int = 5
    blocks_per_stage: tuple[int, ...] = (1, 3, 9, 3)
    ese: bool = True
    out_features: tuple[str, ...] = ('stage2', 'stage3', 'stage4', 'stage5')
    frozen_stages: int = 1                   # stem + stage2 frozen
    norm_eval: bool = True
    with_cp: bool = True
