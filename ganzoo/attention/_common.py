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


# ----------------------------------------------------------------------------- issue 20's blocks
def known_backend(v: str) -> str:
    """``v`` if it names a backend of :data:`ganzoo.ops.attention.BACKENDS`, else a one-line ValueError."""
    from ..ops.attention import BACKENDS

    if v not in BACKENDS:
        raise ValueError(f"unknown attention backend '{v}'; known: {', '.join(BACKENDS)}")
    return v


class SpectralOption(BlockConfig):
    """The spectral-norm switch of issue 20's blocks (off, as in their papers; sagan's option otherwise)."""

    spectral_norm: bool = Field(False, description="spectral-normalise the block's convs (the paper: false)")


class FusedOptions(SpectralOption):
    """Fields of the blocks that attend over all positions: the kernel (fused ``sdpa`` by default, so
    the [B, N, M] matrix is never built in the forward) and the spectral norm of their 1x1 convs."""

    backend: str = Field(
        "sdpa", description="attention kernel from ganzoo.ops.attention.BACKENDS ('sdpa': PyTorch's fused kernels)"
    )

    @field_validator("backend")
    @classmethod
    def _backend(cls, v: str) -> str:
        return known_backend(v)


class BottleneckOptions(SpectralOption):
    """Fields of the blocks with a C -> R -> C bottleneck (SE, CBAM, GCNet)."""

    reduction: int = Field(16, ge=1, le=1024, description="hidden width R is C // reduction (SE, CBAM, GCNet: 16)")
    min_hidden: int = Field(8, ge=1, le=1024, description="hidden width at least min(min_hidden, C)")


def bottleneck(channels: int, reduction: int, minimum: int) -> int:
    """Hidden width ``channels // reduction``, but at least ``min(minimum, channels)`` (timm and torchvision
    round SE widths up to 8 likewise: one or two hidden ReLU units are often all dead for a sample)."""
    return max(channels // reduction, min(minimum, channels))


def conv(cin: int, cout: int, kernel: int, bias: bool, spectral_norm: bool) -> nn.Module:
    """A ``kernel`` x ``kernel`` same-padded conv, wrapped by the registry's ``spectral`` norm when asked."""
    layer = nn.Conv2d(cin, cout, kernel_size=kernel, padding=kernel // 2, bias=bias)
    return WEIGHT_NORM.build("spectral" if spectral_norm else "none")(layer)


def ref_linear(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """A 1x1 conv on pooled features as a float64 matmul: [B, Cin] -> [B, Cout]."""
    return ref_conv1x1(layer, x[:, :, None])[:, :, 0]


def ref_sigmoid(t: torch.Tensor) -> torch.Tensor:
    return 1.0 / (1.0 + torch.exp(-t))


def query_independent(weights: torch.Tensor) -> torch.Tensor:
    """[B, N] pooling weights as the [B, N, N] map in which every query row is them (an expanded view:
    nothing N x N is allocated). GCNet's blocks pool one context for all positions."""
    b, n = weights.shape
    return weights[:, None, :].expand(b, n, n)


class ReferenceBlock(nn.Module):
    """Plumbing of issue 20's blocks: the config and channels, their convs (spectrally normalised as
    the config says), the input check and the public float64 methods, all from one
    ``_reference(x) -> (output, [B, N] or [B, N, M] map)`` that subclasses write (a [B, N] map is
    query-independent and is expanded, see :func:`query_independent`).

    ``permutation_equivariant`` defaults to True here: these blocks are per-pixel maps plus pooling or
    attention over every position; a block with a spatial conv or pooling (cbam, non_local with
    ``pool``) sets it False."""

    permutation_equivariant = True

    def __init__(self, cfg: SpectralOption, channels: int) -> None:
        super().__init__()
        self.cfg = cfg
        if channels < 1:
            raise ValueError(f"{self.block_name} attention needs channels >= 1, got {channels}")
        self.channels = channels

    @property
    def block_name(self) -> str:
        """The registry name (the config's ``type``), for error messages."""
        return self.cfg.type

    def _conv(self, cin: int, cout: int, bias: bool = True, kernel: int = 1) -> nn.Module:
        return conv(cin, cout, kernel, bias, self.cfg.spectral_norm)

    def _check(self, x: torch.Tensor) -> None:
        if x.ndim != 4 or x.shape[1] != self.channels:
            raise ValueError(f"{self.block_name} attention expects [B, {self.channels}, H, W], got {list(x.shape)}")

    def _reference(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # pragma: no cover
        raise NotImplementedError

    def reference(self, x: torch.Tensor) -> torch.Tensor:
        """The forward's maths in float64 (explicit matmuls, effective weights), without side effects."""
        return self._reference(x)[0]

    def reference_attention_map(self, x: torch.Tensor) -> torch.Tensor:
        """:meth:`attention_map` in float64, without side effects."""
        amap = self._reference(x)[1]
        return query_independent(amap) if amap.ndim == 2 else amap

    def extra_repr(self) -> str:
        return f"channels={self.channels}"


class BottleneckBlock(ReferenceBlock):
    """A block with the C -> R -> C bottleneck ``fc2(relu(norm(fc1(t))))`` on pooled features (biased
    1x1 convs, PyTorch's default initialisation): SE's excitation, CBAM's shared MLP, GCNet's transform."""

    def __init__(self, cfg: BottleneckOptions, channels: int) -> None:
        super().__init__(cfg, channels)
        self.hidden = bottleneck(channels, cfg.reduction, cfg.min_hidden)
        self.fc1 = self._conv(channels, self.hidden)
        self.fc2 = self._conv(self.hidden, channels)

    def _mlp(self, t: torch.Tensor, norm: nn.Module | None = None) -> torch.Tensor:
        """[B, C, 1, 1] -> [B, C, 1, 1]."""
        h = self.fc1(t)
        return self.fc2(torch.relu(norm(h) if norm is not None else h))

    def _ref_mlp(self, s: torch.Tensor, norm: nn.LayerNorm | None = None) -> torch.Tensor:
        """:meth:`_mlp` in float64 on [B, C] (``norm``: a LayerNorm over the R hidden channels)."""
        h = ref_linear(self.fc1, s)
        if norm is not None:
            mean = h.mean(-1, keepdim=True)
            var = ((h - mean) ** 2).mean(-1, keepdim=True)
            w, b = (p.detach().to(torch.float64).flatten() for p in (norm.weight, norm.bias))
            h = (h - mean) / torch.sqrt(var + norm.eps) * w + b
        return ref_linear(self.fc2, torch.clamp(h, min=0))

    def extra_repr(self) -> str:
        return f"channels={self.channels}, hidden={self.hidden}"
