"""``none``: no discriminator regularization (SAGAN's setting: spectral norm only)."""
from __future__ import annotations

from typing import Any, Literal

import torch

from ..config import BlockConfig
from ..registry import REGULARIZER


class NoRegularizerConfig(BlockConfig):
    """No regularization: the penalty is always 0."""

    type: Literal["none"] = "none"


@REGULARIZER.register(NoRegularizerConfig)
class NoRegularizer:
    """No regularizer: penalty 0 (SAGAN relies on spectral norm alone)."""

    needs_real_grad = False
    active = False  # the penalty is always 0: the trainer need not call it (ganzoo.contracts)

    def __init__(self, cfg: NoRegularizerConfig | None = None) -> None:
        self.cfg = cfg or NoRegularizerConfig()

    def penalty(self, D: Any, real: torch.Tensor, fake: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return torch.zeros((), device=real.device, dtype=torch.float32)
