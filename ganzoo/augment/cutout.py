"""``cutout``: one random square per image set to 0 (DiffAugment's ``rand_cutout``).

The square's side is ``round(ratio * size)`` (16 pixels at 32x32 with the paper's ratio 1/2); its
centre is drawn uniformly over the image, so it may be cut by the border. Pixels inside become 0
(mid-grey in ``[-1, 1]``)::

    out[c, i, j] = 0   if top <= i < top + side and left <= j < left + side, else x[c, i, j]
"""
from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from ..config import BlockConfig
from ..registry import AUGMENT
from ._common import Augment, Params, integers


class CutoutConfig(BlockConfig):
    """One random square of side ratio x size set to zero per image (DiffAugment)."""

    type: Literal["cutout"] = "cutout"
    ratio: float = Field(0.5, gt=0, le=1, description="side of the square as a fraction of the image side "
                         "(DiffAugment: 1/2)")


@AUGMENT.register(CutoutConfig)
class Cutout(Augment):
    """One random square of side ratio x size set to zero per image (DiffAugment)."""

    def __init__(self, cfg: CutoutConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg or CutoutConfig()

    def sides(self, h: int, w: int) -> tuple[int, int]:
        return max(1, int(h * self.cfg.ratio + 0.5)), max(1, int(w * self.cfg.ratio + 0.5))

    def sample_params(self, shape, device, generator=None) -> Params:
        n, h, w = shape[0], shape[-2], shape[-1]
        sh, sw = self.sides(h, w)
        # top-left corner = centre - side // 2, the centre uniform over the image (DiffAugment's range)
        top = integers(0, h + (1 - sh % 2), n, device, generator) - sh // 2
        left = integers(0, w + (1 - sw % 2), n, device, generator) - sw // 2
        return {"top": top, "left": left}

    def apply(self, x: torch.Tensor, params: Params) -> torch.Tensor:
        _, _, h, w = x.shape
        sh, sw = self.sides(h, w)
        i = torch.arange(h, device=x.device)[None, :] - params["top"][:, None]   # [n, h]
        j = torch.arange(w, device=x.device)[None, :] - params["left"][:, None]  # [n, w]
        keep_rows = (i < 0) | (i >= sh)
        keep_cols = (j < 0) | (j >= sw)
        keep = keep_rows[:, :, None] | keep_cols[:, None, :]  # [n, h, w]
        return x * keep[:, None].to(x.dtype)

    def reference(self, x: torch.Tensor, params: Params) -> torch.Tensor:
        out = x.to(torch.float64).clone()
        _, _, h, w = x.shape
        sh, sw = self.sides(h, w)
        for k in range(x.shape[0]):
            t, l = int(params["top"][k]), int(params["left"][k])
            out[k, :, max(t, 0): max(t + sh, 0), max(l, 0): max(l + sw, 0)] = 0.0
        return out
