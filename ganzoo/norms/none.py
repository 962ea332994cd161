"""``none``: no feature normalisation (NORM) and no weight normalisation (WEIGHT_NORM)."""
from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from ..config import BlockConfig
from ..registry import NORM, WEIGHT_NORM


class NoNormConfig(BlockConfig):
    """No feature normalisation: the block is the identity."""

    type: Literal["none"] = "none"


@NORM.register(NoNormConfig)
class NoNorm(nn.Module):
    """Identity: no feature normalisation (class labels are ignored)."""

    conditional = False  # ignores class labels (see ganzoo.models._norm)

    def __init__(self, cfg: NoNormConfig | None = None, channels: int = 0, num_classes: int = 0) -> None:
        super().__init__()
        self.cfg = cfg or NoNormConfig()
        self.channels = channels
        self.num_classes = num_classes

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return x


class NoWeightNormConfig(BlockConfig):
    """No weight normalisation: layers are used as they are."""

    type: Literal["none"] = "none"


@WEIGHT_NORM.register(NoWeightNormConfig)
class NoWeightNorm:
    """No weight normalisation: wrap(module) returns the module unchanged."""

    def __init__(self, cfg: NoWeightNormConfig | None = None) -> None:
        self.cfg = cfg or NoWeightNormConfig()

    def __call__(self, module: nn.Module) -> nn.Module:
        return self.wrap(module)

    def wrap(self, module: nn.Module) -> nn.Module:
        return module
