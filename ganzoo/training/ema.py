"""Exponential moving average of the generator's weights (used for samples and metrics).

Three things make the average usable from the first steps on:

- **Ramp-up** (``train.ema.rampup``, on by default): the decay after ``t`` averaged steps is
  ``min(decay, (1 + t) / (10 + t))`` (TensorFlow's ``ExponentialMovingAverage(num_updates=t)`` rule),
  so early in training the average follows G closely instead of keeping most of the random
  initial weights (with 0.9999 from step 0, half of the average is still the initial weights
  after 7000 steps).
- **Spectral norm follows the averaged weights.** A weight parametrization that estimates state
  from its weight (spectral norm's power-iteration vectors ``u``, ``v``; any such block defines
  ``refresh_(weight)``) is not copied from G: after each update the EMA runs that block's power
  iteration on its own averaged weight. Copying G's ``u``, ``v`` would divide the averaged weight
  by ``u^T W_ema v``, which underestimates its largest singular value when the average differs
  from G: the EMA's layers then amplify and its samples saturate.
- **Other buffers** (batch-norm running statistics) are copied from G.
"""
from __future__ import annotations

import copy

import torch
from torch import nn


def make_ema(generator: nn.Module) -> nn.Module:
    """A frozen copy of ``generator`` in eval mode."""
    ema = copy.deepcopy(generator).eval()
    ema.requires_grad_(False)
    return ema


def ema_decay(decay: float, averaged_steps: int, rampup: bool = True) -> float:
    """The decay of the update after ``averaged_steps`` averaged updates (0: a plain copy)."""
    if averaged_steps <= 0:
        return 0.0
    if rampup:
        return min(decay, (1.0 + averaged_steps) / (10.0 + averaged_steps))
    return decay


def _refreshers(module: nn.Module) -> list[tuple[nn.Module, nn.Parameter]]:
    """(parametrization with ``refresh_``, the raw weight it normalises) for every such one in ``module``."""
    out = []
    for m in module.modules():
        plists = getattr(m, "parametrizations", None)
        if plists is None:
            continue
        for plist in plists.values():
            for p in plist:
                if callable(getattr(p, "refresh_", None)):
                    out.append((p, plist.original))
    return out


def _plan(ema: nn.Module, generator: nn.Module):
    """Matched tensor lists, made once per (ema, generator) pair and cached on the EMA module."""
    key = id(generator)
    plan = getattr(ema, "_ganzoo_ema_plan", None)
    if plan is not None and plan[0] == key:
        return plan[1]
    refreshers = _refreshers(ema)
    own = {id(b) for p, _ in refreshers for b in p.buffers()}
    ema_bufs, bufs = [], []
    for (name, e), (gname, b) in zip(ema.named_buffers(), generator.named_buffers()):
        if name != gname:
            raise RuntimeError(f"EMA and G differ: buffer {name!r} vs {gname!r}")
        if id(e) not in own:
            ema_bufs.append(e)
            bufs.append(b)
    plan = (list(ema.parameters()), list(generator.parameters()), ema_bufs, bufs, refreshers)
    object.__setattr__(ema, "_ganzoo_ema_plan", (key, plan))
    return plan


@torch.no_grad()
def update_ema(ema: nn.Module, generator: nn.Module, decay: float, foreach: bool = True) -> None:
    """``ema = decay * ema + (1 - decay) * generator`` for parameters (one fused ``_foreach_lerp_``);
    batch-norm statistics and other buffers are copied; spectral norm's vectors are updated by one
    round of power iteration on the EMA's own weights (see the module doc). ``decay=0`` copies the
    parameters. ``foreach=False`` does the same per tensor in a Python loop (``lerp_``/``copy_``: the
    same result, one kernel launch per tensor; kept to measure the fused version against)."""
    ema_params, params, ema_bufs, bufs, refreshers = _plan(ema, generator)
    params = [p.detach() for p in params]
    if not foreach:
        for e, p in zip(ema_params, params):
            e.copy_(p) if decay == 0.0 else e.lerp_(p, 1.0 - decay)
        for e, b in zip(ema_bufs, bufs):
            e.copy_(b)
    else:
        if decay == 0.0:
            torch._foreach_copy_(ema_params, params)
        else:
            torch._foreach_lerp_(ema_params, params, 1.0 - decay)
        if ema_bufs:
            torch._foreach_copy_(ema_bufs, bufs)
    for p, weight in refreshers:
        p.refresh_(weight)
