"""Optimiser and learning-rate schedule of the official recipe (docs/official_model.md section 4.3).

AdamW with weight decay on every parameter (no exemption for norms or biases) and learning-rate
multipliers chosen by a substring of the parameter name (``img_backbone`` x0.1,
``sampling_offset`` x0.1). The schedule is cosine annealing down to ``min_lr_ratio * lr``,
stepped *by epoch* (constant within an epoch; the v1 recipe) or *by iteration* (the
SparseBEV++ recipe, ``TrainConfig.lr_by_epoch = False``: mmcv ``CosineAnnealing`` with
``by_epoch=False`` under the ``IterBasedRunner``, docs/official_model.md 13.5), with a linear
warm-up by *iteration* that starts from ``warmup_ratio`` of the scheduled rate.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from ..recipe.config import TrainConfig


def lr_multiplier(name: str, lr_mults: Sequence[tuple[str, float]]) -> float:
    """The multiplier of the first key contained in ``name``, keys tried in reverse
    alphabetical order as mmcv's ``custom_keys`` are; 1.0 when none matches."""
    for key, mult in sorted(lr_mults, key=lambda km: km[0], reverse=True):
        if key in name:
            return mult
    return 1.0


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW over the trainable parameters, one group per lr multiplier.

    Each group remembers its ``base_lr`` (``cfg.lr * multiplier``) for the schedule.
    """
    groups: dict[float, list[nn.Parameter]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        groups.setdefault(lr_multiplier(name, cfg.lr_mults), []).append(param)
    param_groups = [{'params': params, 'lr': cfg.lr * mult, 'base_lr': cfg.lr * mult,
                     'lr_mult': mult} for mult, params in sorted(groups.items(), reverse=True)]
    return torch.optim.AdamW(param_groups, lr=cfg.lr, betas=(0.9, 0.999), eps=1e-8,
                             weight_decay=cfg.weight_decay)


class CosineWarmupSchedule:
    """mmcv ``CosineAnnealing`` by epoch (or by iteration) with linear warm-up by iteration.

    ``lr(epoch, iteration) = cos_p * (1 - (1 - i / W) * (1 - r))`` for i < W, else ``cos_p``,
    where ``cos_p = lr_min + (lr_base - lr_min) * (1 + cos(pi * p)) / 2`` and
    ``lr_min = min_lr_ratio * lr_base`` per parameter group; the progress ``p`` is ``e / E``
    (epochs, the default) or, with ``total_iters`` given, ``i / total_iters`` (by iteration).
    """

    def __init__(self, optimizer: torch.optim.Optimizer, epochs: int, warmup_iters: int = 500,
                 warmup_ratio: float = 1.0 / 3.0, min_lr_ratio: float = 1e-3,
                 total_iters: int | None = None):
        self.optimizer = optimizer
        self.epochs = epochs
        self.warmup_iters = warmup_iters
        self.warmup_ratio = warmup_ratio
        self.min_lr_ratio = min_lr_ratio
        self.total_iters = total_iters           # None: by epoch
        self.last_epoch = 0
        self.last_iteration = 0

    def factor(self, epoch: int, iteration: int) -> float:
        """Learning rate relative to each group's base lr at (epoch, global iteration)."""
        if self.total_iters is None:
            progress = epoch / max(self.epochs, 1)
        else:
            progress = iteration / max(self.total_iters, 1)
        cosine = self.min_lr_ratio + (1 - self.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
        if iteration < self.warmup_iters:
            k = (1 - iteration / self.warmup_iters) * (1 - self.warmup_ratio)
            return cosine * (1 - k)
        return cosine

    def step(self, epoch: int, iteration: int) -> None:
        """Set every group's lr for the coming iteration (call before ``optimizer.step``)."""
        self.last_epoch, self.last_iteration = epoch, iteration
        factor = self.factor(epoch, iteration)
        for group in self.optimizer.param_groups:
            group['lr'] = group['base_lr'] * factor

    def state_dict(self) -> dict:
        return {'epochs': self.epochs, 'warmup_iters': self.warmup_iters,
                'warmup_ratio': self.warmup_ratio, 'min_lr_ratio': self.min_lr_ratio,
                'total_iters': self.total_iters,
                'last_epoch': self.last_epoch, 'last_iteration': self.last_iteration}

    def load_state_dict(self, state: dict) -> None:
        for key, value in state.items():
            setattr(self, key, value)


def build_scaler(device: torch.device, loss_scale: float) -> torch.amp.GradScaler:
    """Static loss scaler: fp16 AMP runs on CUDA only; on CPU the scaler is a no-op.

    The scale is reset to ``loss_scale`` after every step (``scaler.update(loss_scale)``), as
    mmcv's ``Fp16OptimizerHook`` with a float loss scale does; steps with inf/NaN gradients are
    skipped by ``scaler.step``.
    """
    enabled = device.type == 'cuda'
    return torch.amp.GradScaler(device.type, init_scale=loss_scale, enabled=enabled)
