"""``mhsa``: multi-head scaled dot-product self-attention (Vaswani et al. 2017) over the pixels.

For x [B, C, H, W], with N = H*W positions, h heads of width d = C / h::

    q, k, v = W_q x, W_k x, W_v x              -> [B, C, N] each, split into h heads [B, h, d, N]
    o_h     = v_h softmax(q_h^T k_h / sqrt(d))^T  -> [B, h, d, N]   (per head, the 1/sqrt(d) scale)
    out     = x + gamma * W_o concat_h(o_h)     (gamma initialised to 0, as SAGAN)

The four 1x1 convs have no bias (a key bias would be cancelled by the softmax), PyTorch's default
initialisation and, with ``spectral_norm``, the registry's ``spectral`` weight norm as in sagan.
The heads are folded into the batch and run through ``ganzoo.ops.attention.attend`` on ``backend``
(default ``sdpa``: ``F.scaled_dot_product_attention``, so the flash / memory-efficient kernels run
and no [N, N] matrix is built in the forward; gradient penalties get exact double backward).
``attention_map`` is the heads' mean map [B, N, N], built densely for inspection.
"""
from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import nn

from ..ops.attention import attend
from ..registry import ATTENTION
from ._common import FusedOptions, ReferenceBlock, ref_conv1x1, ref_softmax_rows


class MhsaConfig(FusedOptions):
    """Multi-head scaled dot-product self-attention: h heads of C/h channels, 1/sqrt(d), x + gamma*W_o o."""

    type: Literal["mhsa"] = "mhsa"
    heads: int = Field(4, ge=1, le=1024, description="number of heads; C must be a multiple of it")


@ATTENTION.register(MhsaConfig)
class Mhsa(ReferenceBlock):
    """Multi-head scaled dot-product self-attention on PyTorch's fused SDPA kernels, x + gamma*W_o o."""

    def __init__(self, cfg: MhsaConfig | None = None, channels: int = 0) -> None:
        cfg = cfg or MhsaConfig()
        if channels < 1 or channels % cfg.heads:
            raise ValueError(f"{cfg.type} attention: channels {channels} is not a positive multiple of heads {cfg.heads}")
        super().__init__(cfg, channels)
        self.heads = cfg.heads
        self.head_channels = channels // cfg.heads
        self.scale = self.head_channels ** -0.5
        self.query, self.key, self.value, self.out = (self._conv(channels, channels, bias=False) for _ in range(4))
        self.gamma = nn.Parameter(torch.zeros(()))

    def _heads(self, t: torch.Tensor) -> torch.Tensor:
        """[B, C, H, W] -> [B*h, d, N] (heads folded into the batch)."""
        return t.reshape(t.shape[0] * self.heads, self.head_channels, -1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check(x)
        q, k, v = (self._heads(m(x)) for m in (self.query, self.key, self.value))
        o = attend(q, k, v, backend=self.cfg.backend, scale=self.scale)  # [B*h, d, N]
        return x + self.gamma * self.out(o.reshape(x.shape))

    def attention_map(self, x: torch.Tensor) -> torch.Tensor:
        """The heads' mean [B, N, N] attention weights (rows sum to 1), built densely for inspection."""
        self._check(x)
        q, k = self._heads(self.query(x)), self._heads(self.key(x))
        p = torch.softmax(torch.bmm(q.transpose(1, 2), k).float() * self.scale, dim=-1)
        return p.unflatten(0, (x.shape[0], self.heads)).mean(1)

    def _reference(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self._check(x)
        x64 = x.to(torch.float64)
        b, n = x.shape[0], x.shape[2] * x.shape[3]
        q, k, v = (ref_conv1x1(m, x64).reshape(b, self.heads, self.head_channels, n)
                   for m in (self.query, self.key, self.value))
        p = ref_softmax_rows(q.transpose(2, 3) @ k * self.scale)  # [B, h, N, N]
        o = (v @ p.transpose(2, 3)).reshape(b, self.channels, n)
        out = x64 + self.gamma.detach().to(torch.float64) * ref_conv1x1(self.out, o).reshape(x64.shape)
        return out, p.mean(1)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, heads={self.heads}, head_channels={self.head_channels}"
