"""``translation``: random integer shifts with zero fill (DiffAugment's ``rand_translation``).

Each image is moved by ``(dy, dx)``, both drawn uniformly from ``[-s, s]`` with
``s = round(ratio * size)`` (4 pixels at 32x32 with the paper's ratio 1/8); pixels moved in from
outside the image are 0 (mid-grey in ``[-1, 1]``)::

    out[c, i, j] = x[c, i - dy, j - dx]   if that pixel lies inside the image, else 0
"""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field

from ..config import BlockConfig
from ..registry import AUGMENT
from ._common import Augment, Params, integers


class TranslationConfig(BlockConfig):
    """Random translation by up to ratio x size pixels, zero fill (DiffAugment)."""

    type: Literal["translation"] = "translation"
    ratio: float = Field(0.125, ge=0, le=0.5, description="largest shift as a fraction of the image side "
                         "(DiffAugment: 1/8)")


def _shift(size: int, ratio: float) -> int:
    return int(size * ratio + 0.5)


@AUGMENT.register(TranslationConfig)
class Translation(Augment):
    """Random translation by up to ratio x size pixels per axis, zero fill (DiffAugment)."""

    def __init__(self, cfg: TranslationConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg or TranslationConfig()

    def max_shift(self, shape) -> int:
        return _shift(min(shape[-2], shape[-1]), self.cfg.ratio)

    def sample_params(self, shape, device, generator=None) -> Params:
        n, s = shape[0], self.max_shift(shape)
        return {"dy": integers(-s, s + 1, n, device, generator), "dx": integers(-s, s + 1, n, device, generator)}

    def apply(self, x: torch.Tensor, params: Params) -> torch.Tensor:
        n, _, h, w = x.shape
        s = self.max_shift(x.shape)  # shifts lie in [-s, s] (sample_params): no host read needed
        if s == 0:
            return x
        # gather from the zero-padded image: output pixel (i, j) reads padded (i - dy + s, j - dx + s)
        padded = F.pad(x, (s, s, s, s))
        rows = torch.arange(h, device=x.device)[None, :] - params["dy"][:, None] + s  # [n, h]
        cols = torch.arange(w, device=x.device)[None, :] - params["dx"][:, None] + s  # [n, w]
        b = torch.arange(n, device=x.device)[:, None, None]
        out = padded.permute(0, 2, 3, 1)[b, rows[:, :, None], cols[:, None, :]]  # [n, h, w, c]
        return out.permute(0, 3, 1, 2)

    def reference(self, x: torch.Tensor, params: Params) -> torch.Tensor:
        x = x.to(torch.float64)
        out = torch.zeros_like(x)
        _, _, h, w = x.shape
        for k in range(x.shape[0]):
            dy, dx = int(params["dy"][k]), int(params["dx"][k])
            for i in range(h):
                for j in range(w):
                    si, sj = i - dy, j - dx
                    if 0 <= si < h and 0 <= sj < w:
                        out[k, :, i, j] = x[k, :, si, sj]
        return out
