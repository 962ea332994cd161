"""``group``: GroupNorm (statistics per sample over groups of channels; no batch dependence)."""
from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import nn

from ..config import BlockConfig
from ..registry import NORM


class GroupNormConfig(BlockConfig):
    """Group normalisation: per-sample statistics over groups of channels."""

    type: Literal["group"] = "group"
    groups: int = Field(8, ge=1, le=4096, description="number of channel groups; must divide the channel count")
    eps: float = Field(1e-5, gt=0, le=1, description="added to the variance")
    affine: bool = Field(True, description="learn a per-channel gain (init 1) and bias (init 0)")


@NORM.register(GroupNormConfig)
class GroupNorm(nn.GroupNorm):
    """GroupNorm over `groups` channel groups; class labels are ignored."""

    conditional = False  # ignores class labels (see ganzoo.models._norm)

    def __init__(self, cfg: GroupNormConfig | None = None, channels: int = 0, num_classes: int = 0) -> None:
        cfg = cfg or GroupNormConfig()
        if channels < 1 or channels % cfg.groups:
            raise ValueError(f"group norm: groups={cfg.groups} must divide the channel count, got {channels} channels")
        super().__init__(cfg.groups, channels, eps=cfg.eps, affine=cfg.affine)
        self.cfg = cfg

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return super().forward(x)
