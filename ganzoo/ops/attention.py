"""Exact attention ``softmax(Q^T K) V`` with no 1/sqrt(d) scale, as SAGAN computes it.

Shapes (channels-first, as the blocks produce them from 1x1 convs):
    q: [B, Cqk, N]   k: [B, Cqk, M]   v: [B, Cv, M]   ->   out: [B, Cv, N]
where N = query positions, M = key/value positions (M < N when key/value are pooled).

``attend(q, k, v, backend="auto", scale=None)`` picks the fastest exact backend for the shape,
device and dtype; ``backend`` forces one. ``scale=None`` means no scaling (SAGAN's choice).
"""
from __future__ import annotations

import torch

BACKENDS = ("auto", "dense")


def attend_dense(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float | None = None) -> torch.Tensor:
    """Reference-shaped dense path: builds the full [B, N, M] attention matrix."""
    logits = torch.bmm(q.transpose(1, 2), k)  # [B, N, M]
    if scale is not None:
        logits = logits * scale
    attn = torch.softmax(logits, dim=-1)
    return torch.bmm(v, attn.transpose(1, 2))  # [B, Cv, N]


def attention_weights(q: torch.Tensor, k: torch.Tensor, scale: float | None = None) -> torch.Tensor:
    """The [B, N, M] attention matrix (rows sum to 1), for inspection and tests."""
    logits = torch.bmm(q.transpose(1, 2), k)
    if scale is not None:
        logits = logits * scale
    return torch.softmax(logits, dim=-1)


def attend(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, backend: str = "auto", scale: float | None = None
) -> torch.Tensor:
    if backend not in BACKENDS:
        raise ValueError(f"unknown attention backend '{backend}'; known: {', '.join(BACKENDS)}")
    return attend_dense(q, k, v, scale)
