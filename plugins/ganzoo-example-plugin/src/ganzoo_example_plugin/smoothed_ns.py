"""``example.smoothed_non_saturating``: non-saturating loss with one-sided label smoothing.

Salimans et al. (2016), "Improved Techniques for Training GANs": D's targets for real images are
``real_label`` (e.g. 0.9) instead of 1, fakes stay at 0; G uses the non-saturating loss::

    d_loss = E[BCE(D(x), real_label)] + E[BCE(D(G(z)), 0)]
    g_loss = E[BCE(D(G(z)), 1)] = E[softplus(-D(G(z)))]

with ``BCE(l, t) = softplus(l) - t * l`` written on logits, which is stable for any logit.
"""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field

from ganzoo.config import BlockConfig


class SmoothedNonSaturatingConfig(BlockConfig):
    """Non-saturating loss with one-sided label smoothing of D's real targets."""

    type: Literal["example.smoothed_non_saturating"] = "example.smoothed_non_saturating"
    real_label: float = Field(0.9, gt=0.5, le=1.0, description="D's target for real images (1: no smoothing)")


class SmoothedNonSaturatingLoss:
    """Non-saturating GAN loss with one-sided label smoothing (real targets < 1)."""

    def __init__(self, cfg: SmoothedNonSaturatingConfig) -> None:
        self.cfg = cfg

    def d_loss(self, real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
        real, fake = real_logits.float(), fake_logits.float()
        t = self.cfg.real_label
        return (F.softplus(real) - t * real).mean() + F.softplus(fake).mean()

    def g_loss(self, real_logits: torch.Tensor | None, fake_logits: torch.Tensor) -> torch.Tensor:
        # ganzoo's loss contract passes both logits, as to d_loss; real_logits is None here because
        # this loss leaves g_needs_real at its default, False (G's update then never runs D on reals)
        return F.softplus(-fake_logits.float()).mean()
