"""``hinge``: the hinge loss of SAGAN (and SNGAN/BigGAN)."""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field

from ..config import BlockConfig
from ..registry import LOSS
from ._fp32 import fp32, no_autocast


class HingeLossConfig(BlockConfig):
    """Hinge loss: D minimises relu(m - D(x)) + relu(m + D(G(z))); G minimises -D(G(z))."""

    type: Literal["hinge"] = "hinge"
    margin: float = Field(1.0, gt=0, le=1e6, description="hinge margin m (SAGAN: 1)")


@LOSS.register(HingeLossConfig)
class HingeLoss:
    """Hinge loss (SAGAN): D mean(relu(1 - real)) + mean(relu(1 + fake)), G -mean(fake)."""

    def __init__(self, cfg: HingeLossConfig | None = None) -> None:
        self.cfg = cfg or HingeLossConfig()

    def d_loss(self, real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
        m = self.cfg.margin
        with no_autocast(real_logits):
            return F.relu(m - fp32(real_logits)).mean() + F.relu(m + fp32(fake_logits)).mean()

    def g_loss(self, real_logits: torch.Tensor | None, fake_logits: torch.Tensor) -> torch.Tensor:
        with no_autocast(fake_logits):
            return -fp32(fake_logits).mean()
