"""``conditional_batch``: class-conditional batch norm, as SAGAN's generator uses it.

    out = BN(x) * gain[y] + bias[y]

``BN`` has no affine part of its own; ``gain`` and ``bias`` are per-class embeddings
(``[num_classes, C]``) initialised to ``gain_init`` (1) and 0, so at initialisation every class gets
plain batch norm. Needs ``num_classes > 0`` and labels ``y`` ([B] class indices) at every call.
"""
from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import nn

from ..config import BlockConfig
from ..registry import NORM
from .batch import BatchNormConfig


class ConditionalBatchNormConfig(BlockConfig):
    """Class-conditional batch norm: BN without affine, then per-class gain and bias embeddings."""

    type: Literal["conditional_batch"] = "conditional_batch"
    eps: float = Field(1e-5, gt=0, le=1, description="added to the variance (official SAGAN: 1e-5)")
    momentum: float = Field(0.1, gt=0, le=1, description="running-statistics update rate (PyTorch convention)")
    gain_init: float = Field(1.0, ge=-1e3, le=1e3, description="initial value of every class's gains (biases start at 0)")

    def unconditional(self) -> BatchNormConfig:
        """Plain batch norm with the same statistics settings, where there are no class labels."""
        return BatchNormConfig(eps=self.eps, momentum=self.momentum)


@NORM.register(ConditionalBatchNormConfig)
class ConditionalBatchNorm(nn.Module):
    """Class-conditional BatchNorm: BN without affine, then per-class gains (init 1) and biases (init 0)."""

    conditional = True  # needs labels y (see ganzoo.models._norm)
    mixes_batch = True  # train mode normalises with the batch's statistics (eval mode: running ones)

    def __init__(self, cfg: ConditionalBatchNormConfig | None = None, channels: int = 0, num_classes: int = 0) -> None:
        super().__init__()
        cfg = cfg or ConditionalBatchNormConfig()
        if num_classes < 1:
            raise ValueError(
                f"conditional_batch norm needs num_classes > 0 (got {num_classes}); use 'batch' for unconditional models"
            )
        if channels < 1:
            raise ValueError(f"conditional_batch norm needs channels >= 1, got {channels}")
        self.cfg = cfg
        self.channels = channels
        self.num_classes = num_classes
        self.bn = nn.BatchNorm2d(channels, eps=cfg.eps, momentum=cfg.momentum, affine=False)
        self.gain = nn.Embedding(num_classes, channels)
        self.bias = nn.Embedding(num_classes, channels)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        self.bn.reset_running_stats()
        self.gain.weight.fill_(self.cfg.gain_init)
        self.bias.weight.zero_()

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        if y is None:
            raise ValueError("conditional_batch norm needs class labels y (a [B] LongTensor)")
        if y.shape != x.shape[:1]:
            raise ValueError(f"conditional_batch norm: y must have shape [{x.shape[0]}], got {list(y.shape)}")
        out = self.bn(x)
        gain = self.gain(y).to(out.dtype)[:, :, None, None]
        bias = self.bias(y).to(out.dtype)[:, :, None, None]
        return torch.addcmul(bias, out, gain)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, num_classes={self.num_classes}"
