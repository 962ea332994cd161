"""``pixel``: ProGAN's pixelwise feature normalisation (Karras et al. 2018, section 4.2).

    out = x / sqrt(mean_c(x^2) + eps)

Each pixel's feature vector is scaled to unit root-mean-square over the channels; no parameters, no
statistics, no batch dependence. ProGAN puts it after every 3x3 conv of its generator. The mean
square is computed in float32 at least (a bf16 sum over channels would lose the scale), and the
result is cast back to the input's dtype.
"""
from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import nn

from ..config import BlockConfig
from ..registry import NORM


class PixelNormConfig(BlockConfig):
    """Pixelwise feature normalisation (ProGAN): each pixel's features divided by their RMS over channels."""

    type: Literal["pixel"] = "pixel"
    eps: float = Field(1e-8, gt=0, le=1, description="added to the mean square over channels (ProGAN: 1e-8)")


@NORM.register(PixelNormConfig)
class PixelNorm(nn.Module):
    """ProGAN's pixel norm ``x / sqrt(mean_c(x^2) + eps)``: no parameters; class labels are ignored."""

    conditional = False  # ignores class labels (see ganzoo.models._norm)

    def __init__(self, cfg: PixelNormConfig | None = None, channels: int = 0, num_classes: int = 0) -> None:
        if channels < 1:  # the channel count is not used, but a norm is never built without channels
            raise ValueError(f"pixel norm needs channels >= 1, got {channels}")
        super().__init__()
        self.cfg, self.channels = cfg or PixelNormConfig(), channels

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        x32 = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
        out = x32 * torch.rsqrt(x32.square().mean(dim=1, keepdim=True) + self.cfg.eps)
        return out.to(x.dtype)

    def reference(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """``forward`` in float64."""
        x = x.to(torch.float64)
        return x / torch.sqrt((x * x).mean(dim=1, keepdim=True) + self.cfg.eps)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, eps={self.cfg.eps:g}"
