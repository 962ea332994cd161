"""``global_context``: the global context block of GCNet (Cao, Xu, Lin, Wei, Hu, ICCVW 2019).

For x [B, C, H, W], with N = H*W and hidden width R = C // reduction (at least min(min_hidden, C))::

    a   = softmax over the N positions of W_k x          -> [B, N]      (one context-pooling map)
    ctx = sum_j a_j x_j                                    -> [B, C]      (context modelling)
    t   = W_v2 relu(LayerNorm(W_v1 ctx))                   -> [B, C]      (transform; fc1, fc2 here)
    out = x + gamma * t[:, :, None, None]                  (fusion by addition; gamma initialised to 0)

GCNet's code zero-initialises W_v2 so the block starts as the identity; here, as in sagan, a scalar
``gamma`` initialised to 0 does that and W_v2 keeps PyTorch's default initialisation (the same
function at the start). W_k has no bias: it would add one constant to every logit of the softmax
over positions, which cancels (GCNet's code keeps that inert bias). The LayerNorm is over the R
hidden channels, with affine parameters, eps 1e-5.

``attention_map`` is the pooling map ``a``, the same for every query (GCNet's finding: the
non-local block's maps barely depend on the query), given as an expanded [B, N, N] view. Pooling
over all positions then adding per pixel is equivariant to permuting the pixels.
"""
from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from ..registry import ATTENTION
from ._common import BottleneckBlock, BottleneckOptions, query_independent, ref_conv1x1, ref_softmax_rows


class GlobalContextConfig(BottleneckOptions):
    """GCNet global context block (Cao et al. 2019): softmax-pooled context, C -> C/r -> C, added to x."""

    type: Literal["global_context"] = "global_context"


@ATTENTION.register(GlobalContextConfig)
class GlobalContext(BottleneckBlock):
    """GCNet global context block (Cao et al. 2019): one softmax-pooled context added to every pixel."""

    eps = 1e-5

    def __init__(self, cfg: GlobalContextConfig | None = None, channels: int = 0) -> None:
        super().__init__(cfg or GlobalContextConfig(), channels)  # fc1, fc2: the transform
        self.mask = self._conv(channels, 1, bias=False)
        self.norm = nn.LayerNorm([self.hidden, 1, 1], eps=self.eps)
        self.gamma = nn.Parameter(torch.zeros(()))

    def _weights(self, x: torch.Tensor) -> torch.Tensor:
        self._check(x)
        return torch.softmax(self.mask(x).flatten(1).float(), dim=-1)  # [B, N]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self._weights(x).to(x.dtype)
        ctx = torch.bmm(x.flatten(2), a[:, :, None])[:, :, :, None]  # [B, C, 1, 1]
        return x + self.gamma * self._mlp(ctx, self.norm)

    def attention_map(self, x: torch.Tensor) -> torch.Tensor:
        """The context-pooling weights (rows sum to 1), one row for all N queries: an expanded [B, N, N] view."""
        return query_independent(self._weights(x))

    def _reference(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self._check(x)
        x64 = x.to(torch.float64)
        a = ref_softmax_rows(ref_conv1x1(self.mask, x64)[:, 0])  # [B, N]
        ctx = (x64.flatten(2) * a[:, None, :]).sum(-1)  # [B, C]
        t = self._ref_mlp(ctx, self.norm)
        return x64 + self.gamma.detach().to(torch.float64) * t[:, :, None, None], a
