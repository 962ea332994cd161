"""``global_context``: the global context block of GCNet (Cao, Xu, Lin, Wei, Hu, ICCVW 2019).

For x [B, C, H, W], with N = H*W and hidden width R = C // reduction (at least min(min_hidden, C))::

    a   = softmax over the N positions of W_k x          -> [B, N]      (one context-pooling map)
    ctx = sum_j a_j x_j                                    -> [B, C]      (context modelling)
    t   = W_v2 relu(LayerNorm(W_v1 ctx))                   -> [B, C]      (bottleneck transform)
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
from pydantic import Field
from torch import nn

from ..config import BlockConfig
from ..registry import ATTENTION
from ._common import ReferenceBlock, bottleneck, conv1x1, query_independent, ref_conv1x1, ref_linear, ref_softmax_rows


class GlobalContextConfig(BlockConfig):
    """GCNet global context block (Cao et al. 2019): softmax-pooled context, C -> C/r -> C, added to x."""

    type: Literal["global_context"] = "global_context"
    reduction: int = Field(16, ge=1, le=1024, description="hidden width is C // reduction (GCNet: 16 or 4)")
    min_hidden: int = Field(8, ge=1, le=1024, description="hidden width at least min(min_hidden, C)")
    spectral_norm: bool = Field(False, description="spectral-normalise the three 1x1 convs (GCNet: false)")


@ATTENTION.register(GlobalContextConfig)
class GlobalContext(ReferenceBlock):
    """GCNet global context block (Cao et al. 2019): one softmax-pooled context added to every pixel."""

    block_name = "global_context"
    permutation_equivariant = True
    eps = 1e-5

    def __init__(self, cfg: GlobalContextConfig | None = None, channels: int = 0) -> None:
        super().__init__()
        cfg = cfg or GlobalContextConfig()
        self.cfg = cfg
        self.channels = channels
        self.hidden = bottleneck(channels, cfg.reduction, cfg.min_hidden, self.block_name)
        sn = cfg.spectral_norm
        self.mask = conv1x1(channels, 1, bias=False, spectral_norm=sn)
        self.transform_in = conv1x1(channels, self.hidden, bias=True, spectral_norm=sn)
        self.norm = nn.LayerNorm([self.hidden, 1, 1], eps=self.eps)
        self.transform_out = conv1x1(self.hidden, channels, bias=True, spectral_norm=sn)
        self.gamma = nn.Parameter(torch.zeros(()))

    def _weights(self, x: torch.Tensor) -> torch.Tensor:
        self._check(x)
        return torch.softmax(self.mask(x).flatten(1).float(), dim=-1)  # [B, N]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self._weights(x).to(x.dtype)
        ctx = torch.bmm(x.flatten(2), a[:, :, None])[:, :, :, None]  # [B, C, 1, 1]
        t = self.transform_out(torch.relu(self.norm(self.transform_in(ctx))))
        return x + self.gamma * t

    def attention_map(self, x: torch.Tensor) -> torch.Tensor:
        """The context-pooling weights (rows sum to 1), one row for all N queries: an expanded [B, N, N] view."""
        return query_independent(self._weights(x))

    def _reference(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self._check(x)
        x64 = x.to(torch.float64)
        a = ref_softmax_rows(ref_conv1x1(self.mask, x64)[:, 0])  # [B, N]
        ctx = (x64.flatten(2) * a[:, None, :]).sum(-1)  # [B, C]
        h = ref_linear(self.transform_in, ctx)
        mean = h.mean(-1, keepdim=True)
        var = ((h - mean) ** 2).mean(-1, keepdim=True)
        w, b = (p.detach().to(torch.float64).flatten() for p in (self.norm.weight, self.norm.bias))
        h = (h - mean) / torch.sqrt(var + self.eps) * w + b
        t = ref_linear(self.transform_out, torch.clamp(h, min=0))
        return x64 + self.gamma.detach().to(torch.float64) * t[:, :, None, None], a

    def extra_repr(self) -> str:
        return f"channels={self.channels}, hidden={self.hidden}"
