"""``least_squares``: LSGAN (Mao et al.), squared distance of D's output to target values."""
from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from ..config import BlockConfig
from ..registry import LOSS
from ._fp32 import fp32, no_autocast


class LeastSquaresLossConfig(BlockConfig):
    """Least-squares loss: D 0.5 E(D(x)-b)^2 + 0.5 E(D(G(z))-a)^2, G 0.5 E(D(G(z))-c)^2."""

    type: Literal["least_squares"] = "least_squares"
    fake_target: float = Field(0.0, ge=-1e3, le=1e3, description="a: D's target for fakes")
    real_target: float = Field(1.0, ge=-1e3, le=1e3, description="b: D's target for real images")
    gen_target: float = Field(1.0, ge=-1e3, le=1e3, description="c: the value G wants D to output for fakes")


@LOSS.register(LeastSquaresLossConfig)
class LeastSquaresLoss:
    """Least-squares (LSGAN) loss with targets a=0 (fake), b=1 (real), c=1 (G)."""

    def __init__(self, cfg: LeastSquaresLossConfig | None = None) -> None:
        self.cfg = cfg or LeastSquaresLossConfig()

    def d_loss(self, real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
        c = self.cfg
        with no_autocast(real_logits):
            real = (fp32(real_logits) - c.real_target).square().mean()
            fake = (fp32(fake_logits) - c.fake_target).square().mean()
            return 0.5 * (real + fake)

    def g_loss(self, real_logits: torch.Tensor | None, fake_logits: torch.Tensor) -> torch.Tensor:
        with no_autocast(fake_logits):
            return 0.5 * (fp32(fake_logits) - self.cfg.gen_target).square().mean()
