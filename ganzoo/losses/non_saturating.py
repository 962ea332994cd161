"""``non_saturating``: the original GAN's D loss with the non-saturating G loss ``-log D(G(z))``."""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

from ..config import BlockConfig
from ..registry import LOSS
from ._fp32 import fp32, no_autocast


class NonSaturatingLossConfig(BlockConfig):
    """Non-saturating GAN loss: D binary cross-entropy on logits, G -log sigmoid(D(G(z)))."""

    type: Literal["non_saturating"] = "non_saturating"


@LOSS.register(NonSaturatingLossConfig)
class NonSaturatingLoss:
    """Non-saturating loss: D BCE (softplus(-real) + softplus(fake)), G softplus(-fake) = -log D(G(z))."""

    def __init__(self, cfg: NonSaturatingLossConfig | None = None) -> None:
        self.cfg = cfg or NonSaturatingLossConfig()

    def d_loss(self, real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
        # -log sigmoid(r) = softplus(-r);  -log(1 - sigmoid(f)) = softplus(f)
        with no_autocast(real_logits):
            return F.softplus(-fp32(real_logits)).mean() + F.softplus(fp32(fake_logits)).mean()

    def g_loss(self, real_logits: torch.Tensor | None, fake_logits: torch.Tensor) -> torch.Tensor:
        with no_autocast(fake_logits):
            return F.softplus(-fp32(fake_logits)).mean()
