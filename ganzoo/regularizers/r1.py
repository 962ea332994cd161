"""``r1``: R1 penalty (Mescheder et al. 2018) on real data, gamma/2 * E||grad D(x)||^2."""
from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import Field

from ..config import BlockConfig
from ..registry import REGULARIZER
from ._input_grad import as_leaf, input_grad_sq_norm


class R1Config(BlockConfig):
    """R1: gamma/2 * E_real ||grad_x D(x)||^2."""

    type: Literal["r1"] = "r1"
    gamma: float = Field(10.0, ge=0, le=1e6, description="R1 weight gamma (the penalty is gamma/2 * E||grad||^2)")


@REGULARIZER.register(R1Config)
class R1:
    """R1 penalty on real images: gamma/2 * E||grad_x D(x)||^2 (gamma 10)."""

    needs_real_grad = True

    def __init__(self, cfg: R1Config | None = None) -> None:
        self.cfg = cfg or R1Config()

    def penalty(self, D: Any, real: torch.Tensor, fake: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        sq = input_grad_sq_norm(D, as_leaf(real), y)
        return 0.5 * self.cfg.gamma * sq.mean()
