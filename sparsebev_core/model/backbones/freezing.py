"""Frozen stages and ``norm_eval``, shared by every backbone (mmdet semantics)."""
from __future__ import annotations

from typing import Iterable

from torch import nn


def freeze(modules: Iterable[nn.Module]) -> None:
    """Put modules in eval mode and stop their parameters from training."""
    for m in modules:
        m.eval()
        for p in m.parameters():
            p.requires_grad = False


def apply_train_mode_rules(model: nn.Module, frozen: Iterable[nn.Module], norm_eval: bool,
                           mode: bool) -> None:
    """After ``model.train(mode)``: re-freeze ``frozen`` and, if ``norm_eval``, keep BN in eval.

    ``norm_eval`` keeps BatchNorm running statistics fixed during training (their affine
    parameters still train where the stage is not frozen).
    """
    freeze(frozen)
    if mode and norm_eval:
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()
