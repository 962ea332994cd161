"""``sagan_full``: the self-attention of the widely copied PyTorch SAGAN snippet (full-resolution keys).

For x [B, C, H, W], with N = H*W::

    q = conv1x1(x, C/8) + bias              -> [B, C/8, N]
    k = conv1x1(x, C/8) + bias              -> [B, C/8, N]
    v = conv1x1(x, C) + bias                -> [B, C, N]
    attn = softmax(q^T k)                   -> [B, N, N]     (no scale, no pooling)
    out  = gamma * (v attn^T) + x           (no output conv; gamma: shape [1], initialised to 0)

Unlike the official block it has biases, keeps all C value channels, attends over every position
and has no output projection; the convs keep PyTorch's default initialisation. Because every
op is per pixel or over all pixels, it is equivariant to permuting spatial positions.
"""
from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import nn

from ..ops.attention import attend
from ..registry import ATTENTION
from ._common import AttentionOptions, conv1x1, logit_scale, reduced, ref_conv1x1, ref_softmax_rows


class SaganFullAttentionConfig(AttentionOptions):
    """Self-attention of the popular PyTorch SAGAN snippet: C/8 query/key with bias, C values, no pooling."""

    type: Literal["sagan_full"] = "sagan_full"
    spectral_norm: bool = Field(False, description="spectral-normalise the three 1x1 convs (the snippet: false)")


@ATTENTION.register(SaganFullAttentionConfig)
class SaganFullAttention(nn.Module):
    """Self-attention of the widely copied PyTorch SAGAN snippet: biased convs, C values, no pooling."""

    permutation_equivariant = True
    #: The key bias b adds q_i . b to every logit of query row i, which the softmax cancels: it never
    #: gets a gradient. Kept, as in the snippet, so its checkpoints load.
    gradient_free_parameters = ("key.bias",)

    def __init__(self, cfg: SaganFullAttentionConfig | None = None, channels: int = 0) -> None:
        super().__init__()
        cfg = cfg or SaganFullAttentionConfig()
        self.cfg = cfg
        self.channels = channels
        self.qk_channels = reduced(channels, cfg.qk_reduction, "query/key", "sagan_full")
        sn = cfg.spectral_norm
        self.query = conv1x1(channels, self.qk_channels, bias=True, spectral_norm=sn)
        self.key = conv1x1(channels, self.qk_channels, bias=True, spectral_norm=sn)
        self.value = conv1x1(channels, channels, bias=True, spectral_norm=sn)
        self.gamma = nn.Parameter(torch.zeros(1))
        self.scale = logit_scale(cfg, self.qk_channels)

    def _check(self, x: torch.Tensor) -> None:
        if x.ndim != 4 or x.shape[1] != self.channels:
            raise ValueError(f"sagan_full attention expects [B, {self.channels}, H, W], got {list(x.shape)}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check(x)
        q, k, v = self.query(x).flatten(2), self.key(x).flatten(2), self.value(x).flatten(2)
        o = attend(q, k, v, backend=self.cfg.backend, scale=self.scale)  # [B, C, N]
        return self.gamma * o.view_as(x) + x

    def attention_map(self, x: torch.Tensor) -> torch.Tensor:
        """The [B, N, N] attention weights (rows sum to 1); in training mode this steps spectral norms like forward."""
        self._check(x)
        q, k = self.query(x).flatten(2), self.key(x).flatten(2)
        logits = torch.bmm(q.transpose(1, 2), k).float()
        if self.scale is not None:
            logits = logits * self.scale
        return torch.softmax(logits, dim=-1)

    # ------------------------------------------------------------------ float64 reference
    def _reference(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self._check(x)
        x64 = x.to(torch.float64)
        q, k, v = (ref_conv1x1(m, x64) for m in (self.query, self.key, self.value))
        logits = q.transpose(1, 2) @ k
        if self.scale is not None:
            logits = logits * self.scale
        attn = ref_softmax_rows(logits)
        o = (v @ attn.transpose(1, 2)).reshape(x64.shape)
        return self.gamma.detach().to(torch.float64) * o + x64, attn

    def reference(self, x: torch.Tensor) -> torch.Tensor:
        """The forward's maths in float64 (explicit matmuls, effective weights), without side effects."""
        return self._reference(x)[0]

    def reference_attention_map(self, x: torch.Tensor) -> torch.Tensor:
        """:meth:`attention_map` in float64, without side effects."""
        return self._reference(x)[1]

    def extra_repr(self) -> str:
        return f"channels={self.channels}, qk={self.qk_channels}"
