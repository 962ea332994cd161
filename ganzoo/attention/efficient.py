"""``efficient``: efficient attention, linear in the number of positions (Shen, Zhang, Zhao, Yi, Li, WACV 2021).

For x [B, C, H, W], with N = H*W positions and h heads of d_k = C_k / h key and d_v = C / h value
channels (C_k = C // qk_reduction)::

    q, k, v = W_q x + b_q, W_k x, W_v x + b_v        -> [B, C_k, N], [B, C_k, N], [B, C, N]  (h heads each)
    q^ = softmax of each position's d_k query channels (per head)
    k^ = softmax of each key channel over the N positions
    G  = k^ v^T                                       -> [B, h, d_k, d_v]   (the d_k global context vectors)
    o  = G^T q^                                       -> [B, h, d_v, N]
    out = x + gamma * (W_o o + b_o)                   (gamma initialised to 0, as SAGAN)

Memory and time are O(N), not O(N^2): no N x N matrix exists, in the forward or in the backward.
The implied attention map A = q^T k^ (per head; A_ij = sum_c q^_ci k^_cj) has non-negative rows
summing to 1 (each q^ column and each k^ row sums to 1), so ``attention_map`` is the heads' mean of
it, [B, N, N], built for inspection only. The paper's code adds the reprojection to x directly;
here a ``gamma`` gate starts the block as the identity. W_k has no bias: a per-channel constant
cancels in the softmax over positions. Per-pixel maps plus sums over every position make the block
equivariant to permuting pixels.
"""
from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import nn

from ..registry import ATTENTION
from ._common import ReferenceBlock, SpectralOption, reduced, ref_conv1x1, ref_softmax_rows


class EfficientAttentionConfig(SpectralOption):
    """Efficient attention (Shen et al. 2021): softmax-normalised q and k, keys^T values first, O(N)."""

    type: Literal["efficient"] = "efficient"
    head_count: int = Field(1, ge=1, le=1024, description="heads; C // qk_reduction and C must be multiples of it")
    qk_reduction: int = Field(2, ge=1, le=1024, description="query/key channels are C // qk_reduction")


@ATTENTION.register(EfficientAttentionConfig)
class EfficientAttention(ReferenceBlock):
    """Efficient attention (Shen et al. 2021): linear-complexity attention via k^T v first, x + gamma*o."""

    def __init__(self, cfg: EfficientAttentionConfig | None = None, channels: int = 0) -> None:
        super().__init__(cfg or EfficientAttentionConfig(), channels)
        h = self.cfg.head_count
        self.qk_channels = reduced(channels, self.cfg.qk_reduction, "query/key", self.block_name)
        if self.qk_channels % h or channels % h:
            raise ValueError(f"efficient attention: channels {channels} and query/key channels "
                             f"{self.qk_channels} must be multiples of head_count {h}")
        self.query = self._conv(channels, self.qk_channels)
        self.key = self._conv(channels, self.qk_channels, bias=False)
        self.value = self._conv(channels, channels)
        self.reproject = self._conv(channels, channels)
        self.gamma = nn.Parameter(torch.zeros(()))

    def _normalised(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """q^ and k^ as [B*h, d_k, N]."""
        self._check(x)
        h, b = self.cfg.head_count, x.shape[0]
        q = self.query(x).reshape(b * h, self.qk_channels // h, -1)
        k = self.key(x).reshape(b * h, self.qk_channels // h, -1)
        return torch.softmax(q, dim=1), torch.softmax(k, dim=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k = self._normalised(x)
        v = self.value(x).reshape(q.shape[0], self.channels // self.cfg.head_count, -1)  # [B*h, d_v, N]
        context = torch.bmm(k, v.transpose(1, 2))  # [B*h, d_k, d_v]
        o = torch.bmm(context.transpose(1, 2), q)  # [B*h, d_v, N]
        return x + self.gamma * self.reproject(o.reshape(x.shape))

    def attention_map(self, x: torch.Tensor) -> torch.Tensor:
        """The implied [B, N, N] map q^T k^ (rows sum to 1), the heads' mean, built for inspection."""
        q, k = self._normalised(x)
        a = torch.bmm(q.transpose(1, 2).float(), k.float())
        return a.unflatten(0, (x.shape[0], self.cfg.head_count)).mean(1)

    def _reference(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self._check(x)
        x64, h, b = x.to(torch.float64), self.cfg.head_count, x.shape[0]
        n = x.shape[2] * x.shape[3]
        q, k = (ref_conv1x1(m, x64).reshape(b, h, -1, n) for m in (self.query, self.key))
        v = ref_conv1x1(self.value, x64).reshape(b, h, -1, n)
        q = ref_softmax_rows(q.transpose(2, 3)).transpose(2, 3)  # over each position's channels
        k = ref_softmax_rows(k)  # over positions
        a = q.transpose(2, 3) @ k  # [B, h, N, N]: the implied map, written out
        o = (v @ a.transpose(2, 3)).reshape(b, self.channels, n)
        out = x64 + self.gamma.detach().to(torch.float64) * ref_conv1x1(self.reproject, o).reshape(x64.shape)
        return out, a.mean(1)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, qk={self.qk_channels}, heads={self.cfg.head_count}"
