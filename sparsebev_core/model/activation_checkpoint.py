"""The activation-checkpointing guard, written once for the backbones and the head.

Activation checkpointing trades compute for memory: the segment's activations are not kept
for the backward pass but recomputed. It only pays when a backward pass will come, so a
segment is checkpointed when all of these hold:

* it is switched on (``with_cp`` / ``use_act_checkpoint``; always on in the head);
* the module is in training mode;
* autograd is recording (``torch.is_grad_enabled()``: not under ``no_grad``, e.g. the frames
  that ``stop_prev_grad`` runs without gradients, or inference);
* the segment's input needs a gradient (``probe.requires_grad``, as mmdet's ``with_cp``
  blocks check): a frozen stage's output does not.

Non-reentrant checkpointing is used, so gradients are the same as without it.
"""
from __future__ import annotations

from typing import Callable, TypeVar

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

R = TypeVar('R')


def should_checkpoint(module: nn.Module, probe: torch.Tensor, enabled: bool = True) -> bool:
    """True when ``module``'s segment with input ``probe`` is worth checkpointing (see above)."""
    return enabled and module.training and torch.is_grad_enabled() and probe.requires_grad


def run_segment(module: nn.Module, fn: Callable[..., R], *args, probe: torch.Tensor,
                enabled: bool = True) -> R:
    """``fn(*args)``, through non-reentrant activation checkpointing when
    :func:`should_checkpoint` says so (``probe``: the input whose gradient is wanted)."""
    if should_checkpoint(module, probe, enabled):
        return checkpoint(fn, *args, use_reentrant=False)
    return fn(*args)
