"""``cbam``: the Convolutional Block Attention Module (Woo, Park, Lee, Kweon, ECCV 2018).

For x [B, C, H, W], with hidden width R = C // reduction (at least min(min_hidden, C)) and one
MLP (C -> R -> C, ReLU, biases) shared by both pooled descriptors::

    m_c = sigmoid(MLP(avgpool(x)) + MLP(maxpool(x)))                 -> [B, C, 1, 1]  (channel)
    x'  = x * m_c
    m_s = sigmoid(conv7x7([mean over C of x'; max over C of x']))    -> [B, 1, H, W]  (spatial)
    out = x' * m_s                                                    (not residual, as the paper)

No ``gamma``: the paper multiplies by the gates (on a residual branch of its backbones). The
official code follows the 7x7 conv by a BatchNorm without bias; the paper's equation has none and a
batch norm would mix the samples of a batch in D, so here the conv has a bias and no norm.

Attention map: CBAM's spatial attention is a gate per pixel, not a distribution over keys, so
``attention_map`` gives each position i the row (m_s[i], 1 - m_s[i]) (M = 2: the share of the
channel-refined feature kept, and the share suppressed), which sums to 1 and holds the paper's
spatial map exactly. The 7x7 conv mixes neighbours, so the block is not permutation-equivariant.
"""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field

from ..norms._weights import reference_bias, reference_weight
from ..registry import ATTENTION
from ._common import BottleneckBlock, BottleneckOptions, ref_sigmoid


class CbamConfig(BottleneckOptions):
    """CBAM (Woo et al. 2018): channel gates from avg+max pooled MLP, then a 7x7 spatial gate."""

    type: Literal["cbam"] = "cbam"
    kernel_size: int = Field(7, ge=1, le=31, description="spatial-attention conv size, odd (the paper: 7)")


@ATTENTION.register(CbamConfig)
class Cbam(BottleneckBlock):
    """CBAM (Woo et al. 2018): channel attention (avg + max pooled MLP) then 7x7 spatial attention."""

    permutation_equivariant = False  # the spatial conv sees neighbours

    def __init__(self, cfg: CbamConfig | None = None, channels: int = 0) -> None:
        cfg = cfg or CbamConfig()
        if cfg.kernel_size % 2 == 0:
            raise ValueError(f"cbam attention needs an odd kernel_size, got {cfg.kernel_size}")
        super().__init__(cfg, channels)  # fc1, fc2: the shared MLP
        self.spatial = self._conv(2, 1, kernel=cfg.kernel_size)

    def _gates(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self._check(x)
        pooled = torch.cat([x.mean(dim=(2, 3), keepdim=True), x.amax(dim=(2, 3), keepdim=True)])  # [2B, C, 1, 1]
        mlp = self._mlp(pooled)
        xc = x * torch.sigmoid(mlp[: x.shape[0]] + mlp[x.shape[0]:])
        m_s = torch.sigmoid(self.spatial(torch.cat([xc.mean(1, keepdim=True), xc.amax(1, keepdim=True)], 1)))
        return xc, m_s

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xc, m_s = self._gates(x)
        return xc * m_s

    def attention_map(self, x: torch.Tensor) -> torch.Tensor:
        """[B, N, 2]: per position, the spatial gate and its complement (rows sum to 1)."""
        m_s = self._gates(x)[1].flatten(1).float()
        return torch.stack([m_s, 1 - m_s], dim=-1)

    def _reference(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self._check(x)
        x64 = x.to(torch.float64)
        flat = x64.flatten(2)
        mlp = [self._ref_mlp(p) for p in (flat.mean(-1), flat.amax(-1))]
        xc = x64 * ref_sigmoid(mlp[0] + mlp[1])[:, :, None, None]
        desc = torch.cat([xc.mean(1, keepdim=True), xc.amax(1, keepdim=True)], 1)
        # the same-padded conv as a sum over its kernel taps (float64, no conv kernel)
        w, b, k = reference_weight(self.spatial), reference_bias(self.spatial), self.cfg.kernel_size
        h, wd = x.shape[2:]
        padded = F.pad(desc, (k // 2,) * 4)
        logit = sum(
            (w[0, :, i, j][None, :, None, None] * padded[:, :, i:i + h, j:j + wd]).sum(1, keepdim=True)
            for i in range(k) for j in range(k)
        ) + b[None, :, None, None]
        m_s = ref_sigmoid(logit)
        flat_s = m_s.flatten(1)
        return xc * m_s, torch.stack([flat_s, 1 - flat_s], dim=-1)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, kernel={self.cfg.kernel_size}"
