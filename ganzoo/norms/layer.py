"""``layer``: layer normalisation of a feature map (Ba et al. 2016), per sample over (C, H, W) (needs C*H*W > 1).

    out = (x - mean_chw(x)) / sqrt(var_chw(x) + eps) * gain[c] + bias[c]

Statistics are taken per sample over all channels and positions (``F.group_norm`` with one group),
so samples never mix, in training and in eval mode alike; the affine part is per channel (gain 1,
bias 0 at initialisation), as in ``nn.GroupNorm(1, C)``, not per element as ``nn.LayerNorm([C, H, W])``
would have it (that would tie the block to one feature-map size).
"""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from ..registry import NORM
from .instance import InstanceNormConfig


class LayerNormConfig(InstanceNormConfig):
    """Layer normalisation: per-sample statistics over channels and positions, per-channel gain and bias."""

    type: Literal["layer"] = "layer"  # eps and affine as instance norm's


@NORM.register(LayerNormConfig)
class LayerNorm(nn.Module):
    """LayerNorm over (C, H, W) per sample, per-channel gain and bias; class labels are ignored."""

    conditional = False  # ignores class labels (see ganzoo.models._norm)

    def __init__(self, cfg: LayerNormConfig | None = None, channels: int = 0, num_classes: int = 0) -> None:
        super().__init__()
        cfg = cfg or LayerNormConfig()
        if channels < 1:
            raise ValueError(f"layer norm needs channels >= 1, got {channels}")
        self.cfg, self.channels = cfg, channels
        self.weight = nn.Parameter(torch.ones(channels)) if cfg.affine else None
        self.bias = nn.Parameter(torch.zeros(channels)) if cfg.affine else None

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return F.group_norm(x, 1, self.weight, self.bias, self.cfg.eps)

    def reference(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """``forward`` in float64, written out from the formula."""
        x = x.to(torch.float64)
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        var = x.var(dim=(1, 2, 3), unbiased=False, keepdim=True)
        out = (x - mean) / torch.sqrt(var + self.cfg.eps)
        if self.weight is None:
            return out
        return out * self.weight.to(torch.float64)[:, None, None] + self.bias.to(torch.float64)[:, None, None]

    def extra_repr(self) -> str:
        return f"channels={self.channels}, eps={self.cfg.eps:g}, affine={self.cfg.affine}"
