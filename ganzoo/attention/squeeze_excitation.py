"""``squeeze_excitation``: the Squeeze-and-Excitation block (Hu, Shen, Sun, CVPR 2018), channel attention.

For x [B, C, H, W], with N = H*W and hidden width R = C // reduction (at least min(min_hidden, C))::

    s   = mean over the N positions of x                  -> [B, C]     (squeeze)
    e   = sigmoid(W2 relu(W1 s + b1) + b2)                -> [B, C]     (excitation, gates in (0, 1))
    out = x * e[:, :, None, None]                         (not residual: the paper's scale step)

There is no ``gamma``: the paper multiplies the features by the gates (it puts the block on a
residual branch; here the backbone's residual block is that branch's neighbour). The two fully
connected layers are 1x1 convs with biases and PyTorch's default initialisation.

Attention map: SE's squeeze is global average pooling, i.e. every position pools the context with
the same uniform weights 1/N (GCNet, Cao et al. 2019, reads SE as this special case of its context
modelling), so ``attention_map`` is the [B, N, N] map whose rows are all 1/N, an expanded view.
There is no spatial attention to show; the gates themselves are :meth:`gates`. Since pooling is
over all positions and the rest is per pixel, the block is equivariant to permuting pixels.
"""
from __future__ import annotations

from typing import Literal

import torch
from ..registry import ATTENTION
from ._common import BottleneckBlock, BottleneckOptions, query_independent, ref_sigmoid


class SqueezeExcitationConfig(BottleneckOptions):
    """Squeeze-and-Excitation (Hu et al. 2018): global average pool, C -> C/r -> C gates, x * sigmoid."""

    type: Literal["squeeze_excitation"] = "squeeze_excitation"


@ATTENTION.register(SqueezeExcitationConfig)
class SqueezeExcitation(BottleneckBlock):
    """Squeeze-and-Excitation (Hu et al. 2018): per-channel sigmoid gates from the global average."""

    def __init__(self, cfg: SqueezeExcitationConfig | None = None, channels: int = 0) -> None:
        super().__init__(cfg or SqueezeExcitationConfig(), channels)

    def gates(self, x: torch.Tensor) -> torch.Tensor:
        """The [B, C, 1, 1] excitation gates."""
        self._check(x)
        return torch.sigmoid(self._mlp(x.mean(dim=(2, 3), keepdim=True)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gates(x)

    def attention_map(self, x: torch.Tensor) -> torch.Tensor:
        """The [B, N, N] uniform pooling weights of the squeeze (rows 1/N), an expanded view."""
        self._check(x)
        b, n = x.shape[0], x.shape[2] * x.shape[3]
        return query_independent(torch.full((b, n), 1.0 / n, device=x.device, dtype=torch.float32))

    def _reference(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self._check(x)
        x64 = x.to(torch.float64).flatten(2)  # [B, C, N]
        n = x64.shape[2]
        pool = torch.full((x64.shape[0], n), 1.0 / n, dtype=torch.float64, device=x.device)
        s = (x64 * pool[:, None, :]).sum(-1)  # [B, C]
        e = ref_sigmoid(self._ref_mlp(s))
        return (x64 * e[:, :, None]).reshape(x.shape), pool
