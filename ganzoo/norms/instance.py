"""``instance``: InstanceNorm2d (statistics per sample and channel over H x W; needs H*W > 1)."""
from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import nn

from ..config import BlockConfig
from ..registry import NORM


class InstanceNormConfig(BlockConfig):
    """Instance normalisation: per-sample, per-channel statistics over space."""

    type: Literal["instance"] = "instance"
    eps: float = Field(1e-5, gt=0, le=1, description="added to the variance")
    affine: bool = Field(True, description="learn a per-channel gain (init 1) and bias (init 0)")


@NORM.register(InstanceNormConfig)
class InstanceNorm(nn.InstanceNorm2d):
    """InstanceNorm2d (instance statistics in train and eval); class labels are ignored."""

    conditional = False  # ignores class labels (see ganzoo.models._norm)

    def __init__(self, cfg: InstanceNormConfig | None = None, channels: int = 0, num_classes: int = 0) -> None:
        cfg = cfg or InstanceNormConfig()
        if channels < 1:
            raise ValueError(f"instance norm needs channels >= 1, got {channels}")
        super().__init__(channels, eps=cfg.eps, affine=cfg.affine, track_running_stats=False)
        self.cfg = cfg

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return super().forward(x)
