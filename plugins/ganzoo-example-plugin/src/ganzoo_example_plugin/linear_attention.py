"""``example.linear_attention``: kernelised (linear-cost) self-attention.

Attention weights are ``phi(q_i) . phi(k_j) / sum_j phi(q_i) . phi(k_j)`` with the positive feature
map ``phi(x) = elu(x) + 1`` (Katharopoulos et al., 2020), so the output costs O(N) in the number of
positions instead of O(N^2). Like SAGAN's block it is residual, ``x + gamma * o`` with gamma = 0 at
initialisation.
"""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from ganzoo.config import BlockConfig
from ganzoo.norms import reference_weight
from ganzoo.registry import WEIGHT_NORM


class LinearAttentionConfig(BlockConfig):
    """Linear-cost attention with an elu+1 feature map (O(N) memory and time)."""

    type: Literal["example.linear_attention"] = "example.linear_attention"
    qk_reduction: int = Field(8, ge=1, le=64, description="query/key channels are C // qk_reduction")
    spectral_norm: bool = Field(True, description="spectral norm on the 1x1 convs")
    eps: float = Field(1e-6, gt=0, le=1e-2, description="added to the normaliser")


def _phi(x: torch.Tensor) -> torch.Tensor:
    return F.elu(x) + 1.0


class LinearAttention(nn.Module):
    """Linear attention (elu+1 kernel): O(N) instead of O(N^2); residual with gamma = 0 at start."""

    def __init__(self, cfg: LinearAttentionConfig, channels: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.channels = channels
        c_qk = max(1, channels // cfg.qk_reduction)
        wrap = WEIGHT_NORM.build("spectral" if cfg.spectral_norm else "none")
        self.query = wrap(nn.Conv2d(channels, c_qk, 1, bias=False))
        self.key = wrap(nn.Conv2d(channels, c_qk, 1, bias=False))
        self.value = wrap(nn.Conv2d(channels, channels, 1, bias=False))
        self.gamma = nn.Parameter(torch.zeros(()))

    def _qkv(self, x: torch.Tensor):
        b, c, h, w = x.shape
        q = _phi(self.query(x).flatten(2).float())  # [B, Cqk, N]
        k = _phi(self.key(x).flatten(2).float())  # [B, Cqk, N]
        v = self.value(x).flatten(2).float()  # [B, C, N]
        return q, k, v

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self._qkv(x)
        kv = torch.einsum("bcn,bdn->bcd", k, v)  # [B, Cqk, C]: sum over positions first: O(N)
        norm = torch.einsum("bcn,bc->bn", q, k.sum(-1)) + self.cfg.eps  # [B, N]
        o = torch.einsum("bcn,bcd->bdn", q, kv) / norm.unsqueeze(1)
        return x + self.gamma.to(x.dtype) * o.reshape(x.shape).to(x.dtype)

    def attention_map(self, x: torch.Tensor) -> torch.Tensor:
        """The implied [B, N, N] attention weights (rows sum to 1); O(N^2), for tests only."""
        q, k, _ = self._qkv(x)
        s = torch.bmm(q.transpose(1, 2), k)
        return s / (s.sum(-1, keepdim=True) + self.cfg.eps)

    def _reference(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        xd = x.double()
        b, c, h, w = x.shape

        def conv(mod, t):  # the weight the next forward uses (spectral norm included), no side effects
            return torch.einsum("oc,bcn->bon", reference_weight(mod).flatten(1), t.flatten(2))

        q, k, v = _phi(conv(self.query, xd)), _phi(conv(self.key, xd)), conv(self.value, xd)
        s = torch.bmm(q.transpose(1, 2), k)  # explicit [B, N, N] weights
        a = s / (s.sum(-1, keepdim=True) + self.cfg.eps)
        o = torch.bmm(v, a.transpose(1, 2)).reshape(b, c, h, w)
        return xd + self.gamma.detach().double() * o, a

    def reference(self, x: torch.Tensor) -> torch.Tensor:
        """The same maths in float64, written plainly with the explicit N x N weights."""
        return self._reference(x)[0]

    def reference_attention_map(self, x: torch.Tensor) -> torch.Tensor:
        return self._reference(x)[1]
