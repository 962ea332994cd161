"""``axial``: axial attention, along each row then along each column (Ho, Kalchbrenner, Weissenborn,
Salimans 2019, *Axial Attention in Multidimensional Transformers*).

For x [B, C, H, W], with h heads of width d = C / h and the 1/sqrt(d) scale::

    v                      = W_v x                                   (h heads)
    A_row[i] = softmax(q_r^T k_r / sqrt(d)) over the W positions of row i,     q_r, k_r = W_qr x, W_kr x
    A_col[j] = softmax(q_c^T k_c / sqrt(d)) over the H positions of column j,  q_c, k_c = W_qc x, W_kc x
    y(i, j)  = sum_j' A_row[i](j, j') v(i, j')                       (row step)
    o(i, j)  = sum_i' A_col[j](i, i') y(i', j)                       (column step)
    out      = x + gamma * W_o o                                     (gamma initialised to 0, as SAGAN)

Each step is an ordinary attention over H or W positions, run by ``ganzoo.ops.attention.attend`` on
``backend`` (default ``sdpa``: PyTorch's fused kernels) with the rows (then columns) folded into the
batch, so the cost is O(N (H + W)) and nothing N x N is built. The two steps have their own query and
key convs of x and share the values and the output conv: the block is one attention whose map
factorises, A((i, j), (i', j')) = A_col[j](i, i') A_row[i'](j, j'), and reaches every position in
one block. ``attention_map`` is that [B, N, N] map (heads' mean), built for inspection; its rows sum
to 1. Rows and columns are spatial structure: not permutation-equivariant.
"""
from __future__ import annotations

from typing import Literal

import torch

from ..ops.attention import attend
from ..registry import ATTENTION
from ._common import ref_conv1x1, ref_softmax_rows
from .mhsa import Mhsa, MhsaConfig


class AxialAttentionConfig(MhsaConfig):
    """Axial attention (Ho et al. 2019): multi-head attention along rows, then along columns."""

    type: Literal["axial"] = "axial"  # type: ignore[assignment]


@ATTENTION.register(AxialAttentionConfig)
class AxialAttention(Mhsa):
    """Axial attention (Ho et al. 2019): row then column multi-head attention, x + gamma*W_o o."""

    permutation_equivariant = False  # rows and columns

    def __init__(self, cfg: AxialAttentionConfig | None = None, channels: int = 0) -> None:
        super().__init__(cfg or AxialAttentionConfig(), channels)  # query/key: the row step's
        self.query_col, self.key_col = (self._conv(channels, channels, bias=False) for _ in range(2))

    def _fold(self, t: torch.Tensor, axis: int) -> torch.Tensor:
        """[B, C, H, W] -> [B*h*H, d, W] (axis 3: rows) or [B*h*W, d, H] (axis 2: columns)."""
        b, _, hh, ww = t.shape
        t = t.reshape(b, self.heads, self.head_channels, hh, ww)
        t = t.permute(0, 1, 3, 2, 4) if axis == 3 else t.permute(0, 1, 4, 2, 3)
        return t.reshape(-1, self.head_channels, t.shape[-1])

    def _unfold(self, t: torch.Tensor, shape: torch.Size, axis: int) -> torch.Tensor:
        b, _, hh, ww = shape
        if axis == 3:
            return t.reshape(b, self.heads, hh, self.head_channels, ww).permute(0, 1, 3, 2, 4).reshape(shape)
        return t.reshape(b, self.heads, ww, self.head_channels, hh).permute(0, 1, 3, 4, 2).reshape(shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check(x)
        y = self.value(x)
        for axis, (wq, wk) in ((3, (self.query, self.key)), (2, (self.query_col, self.key_col))):
            o = attend(self._fold(wq(x), axis), self._fold(wk(x), axis), self._fold(y, axis),
                       backend=self.cfg.backend, scale=self.scale)
            y = self._unfold(o, x.shape, axis)
        return x + self.gamma * self.out(y)

    def _maps(self, x: torch.Tensor, conv, softmax) -> torch.Tensor:
        """The composed [B, h, N, N] map from the convs ``conv(module, x)`` and a row softmax."""
        b, _, hh, ww = x.shape
        qr, kr, qc, kc = (conv(m, x).reshape(b, self.heads, self.head_channels, hh, ww)
                          for m in (self.query, self.key, self.query_col, self.key_col))
        a_row = softmax(torch.einsum("bhdiw,bhdiv->bhiwv", qr, kr) * self.scale)  # [B, h, H, W, W]
        a_col = softmax(torch.einsum("bhdiw,bhdkw->bhwik", qc, kc) * self.scale)  # [B, h, W, H, H]
        full = torch.einsum("bhjik,bhkjl->bhijkl", a_col, a_row)  # ((i, j), (i', j'))
        return full.reshape(b, self.heads, hh * ww, hh * ww)

    def attention_map(self, x: torch.Tensor) -> torch.Tensor:
        """The factorised [B, N, N] map A_col A_row (heads' mean; rows sum to 1), built for inspection."""
        self._check(x)
        return self._maps(x, lambda m, t: m(t).float(), lambda t: torch.softmax(t, dim=-1)).mean(1)

    def _reference(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self._check(x)
        x64 = x.to(torch.float64)
        b, n = x.shape[0], x.shape[2] * x.shape[3]
        a = self._maps(x64, lambda m, t: ref_conv1x1(m, t).reshape(t.shape[0], -1, *t.shape[2:]), ref_softmax_rows)
        v = ref_conv1x1(self.value, x64).reshape(b, self.heads, self.head_channels, n)
        o = (v @ a.transpose(2, 3)).reshape(b, self.channels, n)  # through the full map, written out
        out = x64 + self.gamma.detach().to(torch.float64) * ref_conv1x1(self.out, o).reshape(x64.shape)
        return out, a.mean(1)
