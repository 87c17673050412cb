"""The SparseBEV detector wrapper: image branch (normalise, pad, backbone, FPN) + head.

Submodule names are the official state-dict prefixes (``img_backbone``, ``img_neck``,
``pts_bbox_head``), so official checkpoints load by name (docs/official_model.md sections 2.1, 10).

Images come in as RGB, uint8 or float in 0..255, ``[B, M, 3, H, W]`` with ``M = T*N``
frame-major (index = frame*N + camera, frame 0 = current; N cameras, any N >= 1, the six
nuScenes cameras by default). The wrapper converts to the
backbone's channel order, applies the preset's mean/std, pads right/bottom with zeros to a
multiple of 32, and runs backbone + neck on all ``B*M`` images as one batch.
"""
from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import InputError
from ..recipe.config import ModelConfig
from .backbones.dispatch import backbone_kind
from .fpn import build_fpn

if TYPE_CHECKING:
    from .recurrent_state import EgoMotion, RecurrentState

PAD_MULTIPLE = 32        # official img_pad_cfg size_divisor
FEATURE_STRIDE_0 = 4     # stride of pyramid level 0 for every backbone we have (C2 / x4 of ViT/16)

ImageHook = Callable[[torch.Tensor], torch.Tensor]


class RecurrentModelError(InputError):
    """A call that does not fit the model's temporal mode (recurrent SparseBEV++ or multi-frame v1)."""


def pad_to_multiple(images: torch.Tensor, multiple: int = PAD_MULTIPLE) -> torch.Tensor:
    """Zero-pad ``[..., H, W]`` on the right/bottom to multiples of ``multiple``."""
    h, w = images.shape[-2:]
    pad_h, pad_w = (-h) % multiple, (-w) % multiple
    if pad_h == 0 and pad_w == 0:
        return images
    return F.pad(images, (0, pad_w, 0, pad_h))


class SparseBEV(nn.Module):
    """Backbone (+ neck) shared over all images, then the sparse query head."""

    def __init__(self, cfg: ModelConfig, img_backbone: nn.Module, img_neck: nn.Module | None,
                 pts_bbox_head: nn.Module | None, amp: bool = False):
        super().__init__()
        self.cfg = cfg
        self.img_backbone = img_backbone
        self.img_neck = img_neck
        self.pts_bbox_head = pts_bbox_head
        self.amp = amp                                   # fp16 autocast of the image branch (CUDA)
        self.stop_prev_grad = int(cfg.train.stop_prev_grad)
        # Training-only image hooks, set by the trainer (None = off):
        #   photometric_aug on float RGB 0..255 images [N, 3, H, W] before normalisation,
        #   grid_mask on normalised images [N, 3, H, W] right before the backbone.
        self.photometric_aug: ImageHook | None = None
        self.grid_mask: ImageHook | None = None
        mean = torch.tensor(cfg.image_mean, dtype=torch.float32).view(1, 3, 1, 1)
        std = torch.tensor(cfg.image_std, dtype=torch.float32).view(1, 3, 1, 1)
        self.register_buffer('image_mean', mean, persistent=False)   # backbone channel order
        self.register_buffer('image_std', std, persistent=False)

    # ---------------------------------------------------------------- image branch
    def normalize_images(self, images: torch.Tensor) -> torch.Tensor:
        """RGB 0..255 ``[N, 3, H, W]`` -> backbone order, ``(x - mean) / std``, padded to 32."""
        x = images.float()
        if self.training and self.photometric_aug is not None:
            x = self.photometric_aug(x)
        if self.cfg.channel_order == 'BGR':
            x = x.flip(1)                                 # RGB -> BGR (VoVNet / detectron2)
        x = (x - self.image_mean) / self.image_std        # [N, 3, H, W] float32
        return pad_to_multiple(x)                         # [N, 3, H', W'] H', W' multiples of 32

    def _image_branch(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Normalised ``[N, 3, H, W]`` -> pyramid ``[N, C, h_l, w_l]`` (float32)."""
        if self.training and self.grid_mask is not None:
            x = self.grid_mask(x)
        use_amp = self.amp and x.device.type == 'cuda'
        ctx = torch.autocast('cuda', dtype=torch.float16) if use_amp else contextlib.nullcontext()
        with ctx:
            feats = self.img_backbone(x)
            if isinstance(feats, dict):
                feats = list(feats.values())
            if self.img_neck is not None:
                feats = self.img_neck(feats)
        return [f.float() for f in feats]

    def extract_features(self, images: torch.Tensor) -> list[torch.Tensor]:
        """``images [B, M, 3, H, W]`` RGB 0..255 -> per level ``[B, M, C, h_l, w_l]`` float32.

        In training with ``stop_prev_grad = k > 0`` (EVA02 preset), the first ``k`` frames run
        with gradients and the remaining frames one at a time under ``no_grad`` with the whole
        detector in eval mode (no drop-path / GridMask / BN updates for them), as the official
        wrapper does to save memory.
        """
        if images.dim() != 5 or images.shape[2] != 3:
            raise ValueError(f'images must be [B, M, 3, H, W], got {tuple(images.shape)}')
        B, M = images.shape[:2]
        x = self.normalize_images(images.flatten(0, 1))            # [B*M, 3, H', W']
        x = x.view(B, M, *x.shape[1:])                              # [B, M, 3, H', W']
        num_views = max(M // self.cfg.num_frames, 1)                # cameras per frame
        k = self.stop_prev_grad * num_views
        if self.training and self.stop_prev_grad > 0 and M > k:
            per_chunk = [self._image_branch(x[:, :k].flatten(0, 1))]
            chunk_sizes = [k]
            self.eval()
            try:
                with torch.no_grad():
                    for start in range(k, M, num_views):
                        chunk = x[:, start:start + num_views]
                        per_chunk.append(self._image_branch(chunk.flatten(0, 1)))
                        chunk_sizes.append(chunk.shape[1])
            finally:
                self.train()
            return [torch.cat([lv[i].view(B, m, *lv[i].shape[1:])
                               for lv, m in zip(per_chunk, chunk_sizes)], dim=1)
                    for i in range(len(per_chunk[0]))]                # [B, M, C, h_l, w_l]
        feats = self._image_branch(x.flatten(0, 1))                 # [B*M, C, h_l, w_l]
        return [f.view(B, M, *f.shape[1:]) for f in feats]          # [B, M, C, h_l, w_l]

    # ---------------------------------------------------------------- head
    @staticmethod
    def input_hw(features: list[torch.Tensor]) -> tuple[int, int]:
        """Padded network-input size implied by pyramid level 0 (stride 4)."""
        h0, w0 = features[0].shape[-2:]
        return int(h0) * FEATURE_STRIDE_0, int(w0) * FEATURE_STRIDE_0

    def _check_head_inputs(self, features: list[torch.Tensor], lidar2img: torch.Tensor,
                           timestamps: torch.Tensor) -> None:
        B, M = features[0].shape[:2]
        if lidar2img.shape != (B, M, 4, 4):
            raise ValueError(f'lidar2img must be [B, T*N, 4, 4] = {[B, M, 4, 4]}, '
                             f'got {list(lidar2img.shape)}')
        if tuple(timestamps.shape) != (B, M):
            raise ValueError(f'timestamps must be [B, T*N] = {[B, M]}, got {list(timestamps.shape)}')
        if timestamps.dtype in (torch.float16, torch.bfloat16, torch.float32):
            raise TypeError('timestamps must be float64 seconds: float32 cannot resolve '
                            'milliseconds at Unix-epoch magnitudes (~1.5e9 s)')
        if M == 0 or M % self.cfg.num_frames:
            raise InputError(f'preset {self.cfg.name!r} expects T*N images per sample '
                             f'(T = {self.cfg.num_frames} frames of N >= 1 cameras), got {M}')

    def forward_head(self, features: list[torch.Tensor], lidar2img: torch.Tensor,
                     timestamps: torch.Tensor, gt_boxes: list[torch.Tensor] | None = None,
                     gt_labels: list[torch.Tensor] | None = None,
                     valid_views: torch.Tensor | None = None) -> dict:
        """Run the head on pyramid features of all ``T*N`` images (N cameras per frame).

        features: per level ``[B, T*N, C, h_l, w_l]``; lidar2img ``[B, T*N, 4, 4]`` for the
        network-input pixels; timestamps ``[B, T*N]`` float64 seconds; gt_boxes / gt_labels
        (training, query denoising): per batch element ``[K, 9]`` gravity-centre boxes and
        ``[K]`` int64 labels; valid_views ``[B, T*N]`` bool, False for a camera that is
        missing in that frame (no sampling point reads it; None = all valid, the official
        computation). Returns the head's dict (``all_cls_scores [L, B, Q, 10]``,
        ``all_bbox_preds [L, B, Q, 10]``, DN outputs in training).
        """
        if self.pts_bbox_head is None:
            raise RuntimeError('this SparseBEV was built without a head (build_model(..., with_head=False))')
        if self.is_recurrent:
            raise RecurrentModelError(
                f'preset {self.cfg.name!r} is a recurrent (SparseBEV++) model: call '
                'forward_recurrent(features, lidar2img, state, motion), which takes and returns '
                'the recurrent state (docs/head.md)')
        lidar2img, timestamps = torch.as_tensor(lidar2img), torch.as_tensor(timestamps)
        self._check_head_inputs(features, lidar2img, timestamps)
        return self.pts_bbox_head(features, lidar2img.float(), timestamps.double(),   # [B, T*N, 4, 4], [B, T*N]
                                  image_hw=self.input_hw(features),
                                  gt_boxes=gt_boxes, gt_labels=gt_labels, valid_views=valid_views)

    def forward(self, images: torch.Tensor, lidar2img: torch.Tensor,
                timestamps: torch.Tensor | None = None,
                gt_boxes: list[torch.Tensor] | None = None,
                gt_labels: list[torch.Tensor] | None = None, *,
                state: 'RecurrentState | None' = None,
                motion: 'EgoMotion | None' = None):
        """``extract_features`` + ``forward_head`` (the official low-level forward); for a
        recurrent model ``extract_features`` + ``forward_recurrent`` of one frame
        (``images [B, N, 3, H, W]``, ``state`` / ``motion`` as there; ``timestamps`` unused:
        one frame has no time difference) -> ``(outputs, next_state)``. The training step
        calls this (a ``DistributedDataParallel`` wrapper only syncs gradients through
        ``forward``)."""
        features = self.extract_features(images)
        if self.is_recurrent:
            return self.forward_recurrent(features, lidar2img, state, motion,
                                          gt_boxes=gt_boxes, gt_labels=gt_labels)
        return self.forward_head(features, lidar2img, timestamps,
                                 gt_boxes=gt_boxes, gt_labels=gt_labels)

    # ---------------------------------------------------------------- recurrent head (v2)
    @property
    def is_recurrent(self) -> bool:
        """True for SparseBEV++ (``cfg.head.memory`` set): the head carries a state between frames."""
        return self.cfg.head.memory is not None

    def forward_recurrent(self, features: list[torch.Tensor], lidar2img: torch.Tensor,
                          state: 'RecurrentState | None' = None, motion: 'EgoMotion | None' = None,
                          valid_views: torch.Tensor | None = None,
                          propagate: torch.Tensor | None = None,
                          gt_boxes: list[torch.Tensor] | None = None,
                          gt_labels: list[torch.Tensor] | None = None
                          ) -> tuple[dict, 'RecurrentState']:
        """One frame of a recurrent (SparseBEV++) model: ``(outputs, next_state)``.

        features: per level ``[B, N, C, h_l, w_l]`` (``extract_features`` of the current
        frame's N images); lidar2img ``[B, N, 4, 4]``; state: what the previous frame returned,
        in the variable or the fixed form (``RecurrentState``; None: a stream's first frame,
        no history); motion: ``EgoMotion`` since that frame; valid_views ``[B, N]`` bool
        (False: a missing camera, never sampled); propagate ``[B]`` bool: the time gate
        computed by the caller (None: from ``motion``); gt_boxes / gt_labels (training with
        query denoising): per element ``[K, 9]`` gravity boxes and ``[K]`` labels. Outputs as
        ``forward_head`` (``all_cls_scores``, ``all_bbox_preds``, rows: learned queries then
        propagated ones; DN outputs in training) plus what the frame started from
        (``RecurrentSparseBEVHead.forward``).
        """
        if not self.is_recurrent or self.pts_bbox_head is None:
            raise RecurrentModelError(f'preset {self.cfg.name!r} has no recurrent head: use forward_head')
        return self.pts_bbox_head(features, torch.as_tensor(lidar2img).float(),
                                  image_hw=self.input_hw(features), state=state, motion=motion,
                                  valid_views=valid_views, propagate=propagate,
                                  gt_boxes=gt_boxes, gt_labels=gt_labels)

    @torch.no_grad()
    def decode(self, outputs: dict, score_threshold: float | None = None,
               max_num: int | None = None) -> list[dict]:
        """Official NMS-free top-k decoding of the last layer, per batch element:
        ``boxes [K, 9]`` (bottom centre), ``scores [K]``, ``labels [K]``, ``query_index [K]``."""
        return self.pts_bbox_head.decode(outputs, score_threshold=score_threshold, max_num=max_num)


def build_backbone(cfg: ModelConfig) -> nn.Module:
    """The image backbone named by ``cfg.backbone``'s type (``backbones.dispatch.BACKBONES``)."""
    return backbone_kind(cfg.backbone).build(cfg.backbone)


def build_head(cfg: ModelConfig) -> nn.Module:
    """The SparseBEV head, or the recurrent SparseBEV++ one when ``cfg.head.memory`` is set
    (``model.head`` / ``model.recurrent_head``, imported lazily)."""
    if cfg.head.memory is not None:
        from .recurrent_head import RecurrentSparseBEVHead
        return RecurrentSparseBEVHead(cfg.head)
    from .head import SparseBEVHead
    return SparseBEVHead(cfg.head)


def build_model(cfg: ModelConfig, with_head: bool = True, amp: bool = False) -> SparseBEV:
    """Build the detector for a ``ModelConfig`` (see ``sparsebev_core.recipe.presets``)."""
    img_backbone = build_backbone(cfg)
    img_neck = build_fpn(cfg.neck) if cfg.neck is not None else None
    pts_bbox_head = build_head(cfg) if with_head else None
    return SparseBEV(cfg, img_backbone, img_neck, pts_bbox_head, amp=amp)
