"""``flip``: random horizontal mirroring, each image with probability p (differentiable: a gather).

Unlike ``train.hflip`` (which mirrors the real images of the data stream only), as an ``augment``
block it applies to every image it is given, real or generated, with G's gradient flowing through.
It is the flip of consistency regularization's transform (CR, bCR: flips and shifts of a few
pixels)::

    out[c, i, j] = x[c, i, W - 1 - j]   if the image's draw u < p, else x[c, i, j]
"""
from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from ..config import BlockConfig
from ..registry import AUGMENT
from ._common import Augment, Params, uniform


class FlipConfig(BlockConfig):
    """Random horizontal flip of each image with probability p."""

    type: Literal["flip"] = "flip"
    p: float = Field(0.5, ge=0, le=1, description="probability that an image is mirrored left-right")


@AUGMENT.register(FlipConfig)
class Flip(Augment):
    """Random horizontal flip of each image with probability p (0.5)."""

    def __init__(self, cfg: FlipConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg or FlipConfig()

    def sample_params(self, shape, device, generator=None) -> Params:
        return {"flip": uniform(shape[0], device, generator) < self.cfg.p}

    def apply(self, x: torch.Tensor, params: Params) -> torch.Tensor:
        return torch.where(params["flip"].view(-1, 1, 1, 1), x.flip(-1), x)

    def reference(self, x: torch.Tensor, params: Params) -> torch.Tensor:
        x = x.to(torch.float64)
        out = x.clone()
        width = x.shape[-1]
        for k in range(x.shape[0]):
            if bool(params["flip"][k]):
                for j in range(width):
                    out[k, :, :, j] = x[k, :, :, width - 1 - j]
        return out
