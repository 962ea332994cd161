"""``sagan``: self-attention exactly as the official SAGAN code computes it (sn_non_local_block_sim).

For x [B, C, H, W], with N = H*W positions and M = N/4 pooled positions::

    theta = SN-conv1x1(x, C/8)              -> [B, C/8, N]      (query)
    phi   = maxpool2x2(SN-conv1x1(x, C/8))  -> [B, C/8, M]      (key)
    g     = maxpool2x2(SN-conv1x1(x, C/2))  -> [B, C/2, M]      (value)
    attn  = softmax(theta^T phi)            -> [B, N, M]        (no 1/sqrt(d) scale)
    o     = SN-conv1x1(g attn^T, C)         -> [B, C, H, W]
    out   = x + gamma * o                   (gamma: scalar parameter, initialised to 0)

The four convs have no bias and are spectrally normalised (the registry's ``spectral`` weight norm);
their weights start Xavier-uniform, as in the official code. The reductions, the pooling, the
spectral norm and the logit scale are options, for ablations.
"""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from ..norms.spectral import refresh_spectral_norms_
from ..ops.attention import attend
from ..registry import ATTENTION
from ._common import (
    AttentionOptions, conv1x1, logit_scale, reduced, ref_conv1x1, ref_maxpool2x2, ref_softmax_rows,
)


class SaganAttentionConfig(AttentionOptions):
    """Official SAGAN self-attention: C/8 query/key, C/2 value, 2x2 max-pooled key/value, SN convs."""

    type: Literal["sagan"] = "sagan"
    v_reduction: int = Field(2, ge=1, le=1024, description="value channels are C // v_reduction (SAGAN: 2)")
    pool: bool = Field(True, description="2x2 max-pool keys and values (SAGAN: true; needs even H and W)")
    spectral_norm: bool = Field(True, description="spectral-normalise the four 1x1 convs (SAGAN: true)")


@ATTENTION.register(SaganAttentionConfig)
class SaganAttention(nn.Module):
    """Self-attention exactly as the official SAGAN code: SN 1x1 convs, pooled key/value, x + gamma*o."""

    def __init__(self, cfg: SaganAttentionConfig | None = None, channels: int = 0) -> None:
        super().__init__()
        cfg = cfg or SaganAttentionConfig()
        self.cfg = cfg
        self.channels = channels
        self.qk_channels = reduced(channels, cfg.qk_reduction, "query/key", "sagan")
        self.v_channels = reduced(channels, cfg.v_reduction, "value", "sagan")
        sn = cfg.spectral_norm
        self.query = conv1x1(channels, self.qk_channels, bias=False, spectral_norm=sn)
        self.key = conv1x1(channels, self.qk_channels, bias=False, spectral_norm=sn)
        self.value = conv1x1(channels, self.v_channels, bias=False, spectral_norm=sn)
        self.out = conv1x1(self.v_channels, channels, bias=False, spectral_norm=sn)
        self.gamma = nn.Parameter(torch.zeros(()))
        self.scale = logit_scale(cfg, self.qk_channels)
        #: 1x1 convs and unpooled attention commute with permuting pixels; pooling does not.
        self.permutation_equivariant = not cfg.pool
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        for conv in (self.query, self.key, self.value, self.out):
            weight = conv.parametrizations.weight.original if hasattr(conv, "parametrizations") else conv.weight
            nn.init.xavier_uniform_(weight)
        refresh_spectral_norms_(self)  # the vectors of the new weights, not of the ones wrapped
        self.gamma.zero_()

    def _check(self, x: torch.Tensor) -> None:
        if x.ndim != 4 or x.shape[1] != self.channels:
            raise ValueError(f"sagan attention expects [B, {self.channels}, H, W], got {list(x.shape)}")
        if self.cfg.pool and (x.shape[2] % 2 or x.shape[3] % 2):
            raise ValueError(f"sagan attention with pool=true needs even H and W, got {x.shape[2]}x{x.shape[3]}")

    def _pool(self, t: torch.Tensor) -> torch.Tensor:
        return F.max_pool2d(t, kernel_size=2, stride=2) if self.cfg.pool else t

    def _qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        self._check(x)
        q = self.query(x).flatten(2)  # [B, Cqk, N]
        k = self._pool(self.key(x)).flatten(2)  # [B, Cqk, M]
        v = self._pool(self.value(x)).flatten(2)  # [B, Cv, M]
        return q, k, v

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self._qkv(x)
        o = attend(q, k, v, backend=self.cfg.backend, scale=self.scale)  # [B, Cv, N]
        o = self.out(o.unflatten(2, x.shape[2:]))
        return x + self.gamma * o

    def attention_map(self, x: torch.Tensor) -> torch.Tensor:
        """The [B, N, M] attention weights (rows sum to 1); in training mode this steps spectral norms like forward."""
        q, k, _ = self._qkv(x)
        logits = torch.bmm(q.transpose(1, 2), k).float()
        if self.scale is not None:
            logits = logits * self.scale
        return torch.softmax(logits, dim=-1)

    # ------------------------------------------------------------------ float64 reference
    def _reference(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self._check(x)
        h, w = x.shape[2:]
        x64 = x.to(torch.float64)
        q = ref_conv1x1(self.query, x64)
        k = ref_conv1x1(self.key, x64)
        v = ref_conv1x1(self.value, x64)
        if self.cfg.pool:
            k, v = ref_maxpool2x2(k, h, w), ref_maxpool2x2(v, h, w)
        logits = q.transpose(1, 2) @ k  # [B, N, M]
        if self.scale is not None:
            logits = logits * self.scale
        attn = ref_softmax_rows(logits)
        o = ref_conv1x1(self.out, v @ attn.transpose(1, 2))  # [B, C, N]
        out = x64 + self.gamma.detach().to(torch.float64) * o.reshape(x64.shape)
        return out, attn

    def reference(self, x: torch.Tensor) -> torch.Tensor:
        """The forward's maths in float64 (explicit matmuls, effective SN weights), without side effects."""
        return self._reference(x)[0]

    def reference_attention_map(self, x: torch.Tensor) -> torch.Tensor:
        """:meth:`attention_map` in float64, without side effects."""
        return self._reference(x)[1]

    def extra_repr(self) -> str:
        return f"channels={self.channels}, qk={self.qk_channels}, v={self.v_channels}, pool={self.cfg.pool}"
