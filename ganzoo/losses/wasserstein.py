"""``wasserstein``: the WGAN critic loss (pair it with ``gradient_penalty`` for WGAN-GP)."""
from __future__ import annotations

from typing import Literal

import torch

from ..config import BlockConfig
from ..registry import LOSS
from ._fp32 import fp32, no_autocast


class WassersteinLossConfig(BlockConfig):
    """Wasserstein loss: D minimises mean(D(G(z))) - mean(D(x)); G minimises -mean(D(G(z)))."""

    type: Literal["wasserstein"] = "wasserstein"


@LOSS.register(WassersteinLossConfig)
class WassersteinLoss:
    """Wasserstein (WGAN) loss: D mean(fake) - mean(real), G -mean(fake)."""

    def __init__(self, cfg: WassersteinLossConfig | None = None) -> None:
        self.cfg = cfg or WassersteinLossConfig()

    def d_loss(self, real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
        with no_autocast(real_logits):
            return fp32(fake_logits).mean() - fp32(real_logits).mean()

    def g_loss(self, real_logits: torch.Tensor | None, fake_logits: torch.Tensor) -> torch.Tensor:
        with no_autocast(fake_logits):
            return -fp32(fake_logits).mean()
