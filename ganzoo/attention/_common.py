"""Helpers shared by the SAGAN attention blocks: config fields, the backend check, float64 maths."""
from __future__ import annotations

import torch
from pydantic import Field, field_validator
from torch import nn

from ..config import BlockConfig
from ..norms._weights import reference_bias, reference_weight
from ..registry import WEIGHT_NORM


class AttentionOptions(BlockConfig):
    """Fields common to the SAGAN-style attention blocks (``type`` is set by each block)."""

    qk_reduction: int = Field(8, ge=1, le=1024, description="query/key channels are C // qk_reduction (SAGAN: 8)")
    scale: bool = Field(
        False, description="false: softmax(Q^T K) with no scale, as SAGAN; true: scale logits by 1/sqrt(C_qk)"
    )
    backend: str = Field(
        "auto", description="attention kernel from ganzoo.ops.attention.BACKENDS ('auto' picks the fastest exact one)"
    )

    @field_validator("backend")
    @classmethod
    def _known_backend(cls, v: str) -> str:
        from ..ops.attention import BACKENDS

        if v not in BACKENDS:
            raise ValueError(f"unknown attention backend '{v}'; known: {', '.join(BACKENDS)}")
        return v


def reduced(channels: int, reduction: int, what: str, block: str) -> int:
    """``channels // reduction``, with a one-line error when that is 0."""
    if channels < 1:
        raise ValueError(f"{block} attention needs channels >= 1, got {channels}")
    out = channels // reduction
    if out < 1:
        raise ValueError(f"{block} attention: {what} channels {channels} // {reduction} is 0; use channels >= {reduction}")
    return out


def conv1x1(cin: int, cout: int, bias: bool, spectral_norm: bool) -> nn.Module:
    """A 1x1 conv, wrapped by the registry's ``spectral`` weight norm when asked (``none`` otherwise)."""
    conv = nn.Conv2d(cin, cout, kernel_size=1, bias=bias)
    return WEIGHT_NORM.build("spectral" if spectral_norm else "none")(conv)


def ref_conv1x1(conv: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """A 1x1 conv as a float64 matmul: [Cout, Cin] @ [B, Cin, N] (+ bias) -> [B, Cout, N]."""
    w = reference_weight(conv).flatten(1)
    out = torch.matmul(w, x.flatten(2))
    b = reference_bias(conv)
    if b is not None:
        out = out + b[:, None]
    return out


def ref_maxpool2x2(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """2x2/stride-2 max pooling of [B, C, h*w] -> [B, C, (h/2)*(w/2)], written with a reshape."""
    b, c, _ = x.shape
    return x.reshape(b, c, h // 2, 2, w // 2, 2).amax(dim=(3, 5)).reshape(b, c, -1)


def ref_softmax_rows(logits: torch.Tensor) -> torch.Tensor:
    """Softmax over the last dimension, written out (max-subtracted exp over its sum)."""
    e = torch.exp(logits - logits.amax(dim=-1, keepdim=True))
    return e / e.sum(dim=-1, keepdim=True)


def logit_scale(cfg: AttentionOptions, qk_channels: int) -> float | None:
    return qk_channels ** -0.5 if cfg.scale else None
