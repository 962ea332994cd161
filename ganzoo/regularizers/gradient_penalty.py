"""``gradient_penalty``: WGAN-GP (Gulrajani et al. 2017), two-sided penalty on random interpolates."""
from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import Field

from ..config import BlockConfig
from ..registry import REGULARIZER
from ._input_grad import as_leaf, input_grad_sq_norm


class GradientPenaltyConfig(BlockConfig):
    """WGAN-GP: weight * E[(||grad D(x_hat)|| - target)^2], x_hat uniform on real-fake segments."""

    type: Literal["gradient_penalty"] = "gradient_penalty"
    weight: float = Field(10.0, ge=0, le=1e6, description="penalty weight lambda (WGAN-GP: 10)")
    target: float = Field(1.0, ge=0, le=1e6, description="target gradient norm (WGAN-GP: 1)")


@REGULARIZER.register(GradientPenaltyConfig)
class GradientPenalty:
    """WGAN-GP gradient penalty on random real/fake interpolates (weight 10, target norm 1)."""

    needs_real_grad = False  # differentiates at interpolates, built here from detached inputs

    def __init__(self, cfg: GradientPenaltyConfig | None = None) -> None:
        self.cfg = cfg or GradientPenaltyConfig()

    def interpolate(self, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        """``real + t (fake - real)`` with one ``t ~ U[0, 1]`` per sample."""
        if real.shape != fake.shape:
            raise ValueError(f"real {tuple(real.shape)} and fake {tuple(fake.shape)} must have the same shape")
        t = torch.rand((real.shape[0],) + (1,) * (real.dim() - 1), device=real.device, dtype=real.dtype)
        return torch.lerp(real.detach(), fake.detach().to(real.dtype), t)

    def penalty(self, D: Any, real: torch.Tensor, fake: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        x_hat = as_leaf(self.interpolate(real, fake))
        norm = (input_grad_sq_norm(D, x_hat, y) + 1e-12).sqrt()
        return self.cfg.weight * (norm - self.cfg.target).square().mean()
