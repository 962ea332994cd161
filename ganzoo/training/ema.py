"""Exponential moving average of the generator's weights (used for samples and metrics)."""
from __future__ import annotations

import copy

import torch
from torch import nn


def make_ema(generator: nn.Module) -> nn.Module:
    """A frozen copy of ``generator`` in eval mode."""
    ema = copy.deepcopy(generator).eval()
    ema.requires_grad_(False)
    return ema


@torch.no_grad()
def update_ema(ema: nn.Module, generator: nn.Module, decay: float, foreach: bool = True) -> None:
    """``ema = decay * ema + (1 - decay) * generator`` for parameters (one fused ``_foreach_lerp_``);
    buffers (BatchNorm statistics, spectral-norm vectors) are copied. ``decay=0`` copies everything.
    ``foreach=False`` does the same per tensor in a Python loop (``lerp_``/``copy_``: the same
    result, one kernel launch per tensor; kept to measure the fused version against)."""
    ema_params = [p for p in ema.parameters()]
    params = [p.detach() for p in generator.parameters()]
    ema_bufs = [b for b in ema.buffers()]
    bufs = [b for b in generator.buffers()]
    if not foreach:
        for e, p in zip(ema_params, params):
            e.copy_(p) if decay == 0.0 else e.lerp_(p, 1.0 - decay)
        for e, b in zip(ema_bufs, bufs):
            e.copy_(b)
        return
    if decay == 0.0:
        torch._foreach_copy_(ema_params, params)
    else:
        torch._foreach_lerp_(ema_params, params, 1.0 - decay)
    if ema_bufs:
        torch._foreach_copy_(ema_bufs, bufs)
