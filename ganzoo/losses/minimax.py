"""``minimax``: the original (saturating) GAN loss, G minimises ``log(1 - D(G(z)))``."""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

from ..config import BlockConfig
from ..registry import LOSS
from ._fp32 import fp32, no_autocast


class MinimaxLossConfig(BlockConfig):
    """Saturating minimax GAN loss: D binary cross-entropy, G log(1 - sigmoid(D(G(z))))."""

    type: Literal["minimax"] = "minimax"


@LOSS.register(MinimaxLossConfig)
class MinimaxLoss:
    """Minimax (saturating) loss: D BCE, G log(1 - D(G(z))) = -softplus(fake)."""

    def __init__(self, cfg: MinimaxLossConfig | None = None) -> None:
        self.cfg = cfg or MinimaxLossConfig()

    def d_loss(self, real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
        with no_autocast(real_logits):
            return F.softplus(-fp32(real_logits)).mean() + F.softplus(fp32(fake_logits)).mean()

    def g_loss(self, real_logits: torch.Tensor | None, fake_logits: torch.Tensor) -> torch.Tensor:
        # log(1 - sigmoid(f)) = -softplus(f)
        with no_autocast(fake_logits):
            return -F.softplus(fp32(fake_logits)).mean()
