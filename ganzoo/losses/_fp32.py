"""Helper shared by the losses: evaluate a loss in float32 with autocast switched off."""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch


@contextlib.contextmanager
def no_autocast(t: torch.Tensor) -> Iterator[None]:
    """Disable autocast for ``t``'s device type while a loss is evaluated."""
    with torch.autocast(device_type=t.device.type, enabled=False):
        yield


def fp32(t: torch.Tensor) -> torch.Tensor:
    """``t`` as float32 (a no-op when it already is); gradients flow back in ``t``'s dtype."""
    if not torch.is_tensor(t):
        raise TypeError(f"logits must be a torch.Tensor, got {type(t).__name__}")
    if t.numel() == 0:
        raise ValueError("logits are empty: a loss needs at least one logit")
    return t.float()


def relativistic_average(real: torch.Tensor, fake: torch.Tensor, who: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The relativistic average logits (Jolicoeur-Martineau 2019) in float32: each real logit minus
    the mean fake logit, each fake logit minus the mean real one. ``who`` names the loss in the
    one-line error when the real logits are missing (a ``g_loss`` called as for ``g_needs_real = False``)."""
    if real is None:
        raise TypeError(f"{who} needs the real logits (the loss sets g_needs_real = True), got None")
    r, f = fp32(real), fp32(fake)
    return r - f.mean(), f - r.mean()
