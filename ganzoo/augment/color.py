"""``color``: random brightness, saturation and contrast (DiffAugment's ``color`` policy), in order::

    brightness:  x = x + (b - 0.5)                      b ~ U[0, 1), per image
    saturation:  x = (x - mean_c(x)) * (2 s) + mean_c(x)     s ~ U[0, 1)   (mean over channels, per pixel)
    contrast:    x = (x - mean(x)) * (c + 0.5) + mean(x)     c ~ U[0, 1)   (mean over the whole image)

Each of the three can be switched off. With ``strength`` below 1 every factor is pulled towards its
identity value (``b = 0.5``, ``s = 0.5``, ``c = 0.5``): ``strength * u + (1 - strength) / 2``.
"""
from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from ..config import BlockConfig
from ..registry import AUGMENT
from ._common import Augment, Params, uniform


class ColorConfig(BlockConfig):
    """Random brightness, saturation and contrast per image (DiffAugment)."""

    type: Literal["color"] = "color"
    brightness: bool = Field(True, description="add U[-0.5, 0.5) to every pixel")
    saturation: bool = Field(True, description="scale the deviation from the channel mean by U[0, 2)")
    contrast: bool = Field(True, description="scale the deviation from the image mean by U[0.5, 1.5)")
    strength: float = Field(1.0, ge=0, le=1, description="1: DiffAugment's ranges; smaller pulls every "
                            "factor towards the identity (0: no change)")


@AUGMENT.register(ColorConfig)
class Color(Augment):
    """Random brightness, saturation and contrast per image (DiffAugment)."""

    def __init__(self, cfg: ColorConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg or ColorConfig()

    def sample_params(self, shape, device, generator=None) -> Params:
        n, k = shape[0], self.cfg.strength
        draw = lambda: k * uniform(n, device, generator) + (1.0 - k) / 2  # noqa: E731
        return {"b": draw(), "s": draw(), "c": draw()}

    def apply(self, x: torch.Tensor, params: Params) -> torch.Tensor:
        shape = (-1, 1, 1, 1)
        b, s, c = (params[k].to(x.dtype).view(shape) for k in ("b", "s", "c"))
        if self.cfg.brightness:
            x = x + (b - 0.5)
        if self.cfg.saturation:
            m = x.mean(dim=1, keepdim=True)
            x = (x - m) * (s * 2) + m
        if self.cfg.contrast:
            m = x.mean(dim=(1, 2, 3), keepdim=True)
            x = (x - m) * (c + 0.5) + m
        return x

    def reference(self, x: torch.Tensor, params: Params) -> torch.Tensor:
        out = x.to(torch.float64).clone()
        for k in range(x.shape[0]):
            img = out[k]
            b, s, c = (float(params[name][k]) for name in ("b", "s", "c"))
            if self.cfg.brightness:
                img = img + (b - 0.5)
            if self.cfg.saturation:
                img = (img - img.mean(0, keepdim=True)) * (2 * s) + img.mean(0, keepdim=True)
            if self.cfg.contrast:
                img = (img - img.mean()) * (c + 0.5) + img.mean()
            out[k] = img
        return out
