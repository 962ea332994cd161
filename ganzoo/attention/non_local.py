"""``non_local``: the embedded-Gaussian non-local block (Wang, Girshick, Gupta, He, CVPR 2018).

For x [B, C, H, W], with N = H*W positions, M key positions (N, or N/4 with ``pool``) and
inner width C' = C // inner_reduction (the paper: C/2)::

    theta = W_theta x + b_theta                -> [B, C', N]
    phi   = W_phi x                            -> [B, C', M]   (2x2 max-pooled with ``pool``)
    g     = W_g x + b_g                        -> [B, C', M]   (2x2 max-pooled with ``pool``)
    f     = softmax(theta^T phi)               -> [B, N, M]    (embedded Gaussian; no scale)
    y     = g f^T                              -> [B, C', N]
    out   = x + gamma * (W_z y + b_z)          (gamma initialised to 0)

The paper zero-initialises the scale of the batch norm after W_z so that the block starts as the
identity; here a scalar ``gamma`` initialised to 0 does that (no batch norm: it would mix the
samples of a batch in D). phi has no bias: it would add theta_i . b to every logit of row i, which
the softmax cancels. The product runs on ``backend`` (default ``sdpa``, PyTorch's fused kernels,
so the [B, N, M] matrix is not built in the forward); ``attention_map`` builds it, for inspection.
"""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from ..ops.attention import attend
from ..registry import ATTENTION
from ._common import FusedOptions, ReferenceBlock, reduced, ref_conv1x1, ref_maxpool2x2, ref_softmax_rows


class NonLocalConfig(FusedOptions):
    """Non-local block, embedded Gaussian (Wang et al. 2018): softmax(theta^T phi) g, W_z, x + gamma*z."""

    type: Literal["non_local"] = "non_local"
    inner_reduction: int = Field(2, ge=1, le=1024, description="theta/phi/g channels are C // inner_reduction (the paper: 2)")
    pool: bool = Field(False, description="2x2 max-pool phi and g, the paper's subsampling (needs even H and W)")


@ATTENTION.register(NonLocalConfig)
class NonLocal(ReferenceBlock):
    """Non-local block, embedded Gaussian (Wang et al. 2018): self-attention with W_z, x + gamma*z."""

    def __init__(self, cfg: NonLocalConfig | None = None, channels: int = 0) -> None:
        cfg = cfg or NonLocalConfig()
        super().__init__(cfg, channels)
        self.inner = reduced(channels, cfg.inner_reduction, "inner", self.block_name)
        self.theta, self.phi, self.g = (self._conv(channels, self.inner, bias=b) for b in (True, False, True))
        self.w_z = self._conv(self.inner, channels)
        self.gamma = nn.Parameter(torch.zeros(()))
        #: 1x1 convs and attention over every pixel commute with permuting pixels; pooling does not.
        self.permutation_equivariant = not cfg.pool

    def _check(self, x: torch.Tensor) -> None:
        super()._check(x)
        if self.cfg.pool and (x.shape[2] % 2 or x.shape[3] % 2):
            raise ValueError(f"non_local attention with pool=true needs even H and W, got {x.shape[2]}x{x.shape[3]}")

    def _pool(self, t: torch.Tensor) -> torch.Tensor:
        return (F.max_pool2d(t, kernel_size=2, stride=2) if self.cfg.pool else t).flatten(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check(x)
        y = attend(self.theta(x).flatten(2), self._pool(self.phi(x)), self._pool(self.g(x)), backend=self.cfg.backend)
        return x + self.gamma * self.w_z(y.unflatten(2, x.shape[2:]))

    def attention_map(self, x: torch.Tensor) -> torch.Tensor:
        """The [B, N, M] softmax map f (rows sum to 1), built densely for inspection."""
        self._check(x)
        logits = torch.bmm(self.theta(x).flatten(2).transpose(1, 2), self._pool(self.phi(x))).float()
        return torch.softmax(logits, dim=-1)

    def _reference(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self._check(x)
        h, w = x.shape[2:]
        x64 = x.to(torch.float64)
        theta, phi, g = (ref_conv1x1(m, x64) for m in (self.theta, self.phi, self.g))
        if self.cfg.pool:
            phi, g = ref_maxpool2x2(phi, h, w), ref_maxpool2x2(g, h, w)
        f = ref_softmax_rows(theta.transpose(1, 2) @ phi)
        z = ref_conv1x1(self.w_z, g @ f.transpose(1, 2)).reshape(x64.shape)
        return x64 + self.gamma.detach().to(torch.float64) * z, f

    def extra_repr(self) -> str:
        return f"channels={self.channels}, inner={self.inner}, pool={self.cfg.pool}"
