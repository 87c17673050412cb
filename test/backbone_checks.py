"""Checks shared by the backbone tests."""
import torch
from torch import nn


def assert_checkpointing_keeps_gradients(plain: nn.Module, checkpointed: nn.Module,
                                         x: torch.Tensor) -> None:
    """Activation checkpointing must not change the input or parameter gradients.

    ``checkpointed`` gets ``plain``'s weights; both run in train mode on the same input.
    """
    checkpointed.load_state_dict(plain.state_dict())
    grads = []
    for net in (plain, checkpointed):
        net.train()
        xi = x.clone().requires_grad_(True)
        sum((o ** 2).sum() for o in net(xi)).backward()
        grads.append([xi.grad] + [p.grad for p in net.parameters() if p.requires_grad])
    assert len(grads[0]) == len(grads[1]) > 1
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b)
