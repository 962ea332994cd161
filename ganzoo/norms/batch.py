"""``batch``: BatchNorm2d (batch statistics in training, running statistics in eval)."""
from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import nn

from ..config import BlockConfig
from ..registry import NORM


class BatchNormConfig(BlockConfig):
    """Batch normalisation with a learned per-channel gain and bias."""

    type: Literal["batch"] = "batch"
    eps: float = Field(1e-5, gt=0, le=1, description="added to the variance (official SAGAN: 1e-5)")
    momentum: float = Field(
        0.1, gt=0, le=1, description="running-statistics update rate (PyTorch convention; TF decay 0.9 = 0.1)"
    )
    affine: bool = Field(True, description="learn a per-channel gain (init 1) and bias (init 0)")


@NORM.register(BatchNormConfig)
class BatchNorm(nn.BatchNorm2d):
    """Batch normalisation (BatchNorm2d), per-channel gain and bias; class labels are ignored."""

    conditional = False  # ignores class labels (see ganzoo.models._norm)
    mixes_batch = True  # train mode normalises with the batch's statistics (eval mode: running ones)

    def __init__(self, cfg: BatchNormConfig | None = None, channels: int = 0, num_classes: int = 0) -> None:
        cfg = cfg or BatchNormConfig()
        if channels < 1:
            raise ValueError(f"batch norm needs channels >= 1, got {channels}")
        super().__init__(channels, eps=cfg.eps, momentum=cfg.momentum, affine=cfg.affine)
        self.cfg = cfg

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return super().forward(x)
