"""Layer factories, weight initialisation and the residual blocks shared by the ResNet backbones.

``Layers(weight_norm_cfg)`` gives ``conv``, ``linear`` and ``embedding`` factories: each creates the
plain layer, initialises it, then wraps it with the weight norm (spectral norm in SAGAN), so weight
normalisation is a recipe choice and the initial weights do not depend on it.

Initialisation: orthogonal weights (gain 1) and zero biases for every conv, linear and embedding
layer made here, as SAGAN's and BigGAN's official code do. Norm and attention blocks initialise
their own parameters (norm gains 1 and biases 0; attention ``gamma`` 0).
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..config import BlockConfig
from ..registry import WEIGHT_NORM


def init_orthogonal(module: nn.Module) -> nn.Module:
    """Orthogonal weight, zero bias (applied before the weight norm wraps the layer)."""
    with torch.no_grad():
        nn.init.orthogonal_(module.weight)
        if getattr(module, "bias", None) is not None:
            module.bias.zero_()
    return module


class Layers:
    """Layer factories (``which_conv``, ``which_linear``, ``which_embedding``) built from a weight norm."""

    def __init__(self, weight_norm: BlockConfig | str) -> None:
        self.weight_norm = WEIGHT_NORM.build(weight_norm)
        self.which_conv: Callable[..., nn.Module] = self.conv
        self.which_linear: Callable[..., nn.Module] = self.linear
        self.which_embedding: Callable[..., nn.Module] = self.embedding

    def _make(self, module: nn.Module) -> nn.Module:
        return self.weight_norm.wrap(init_orthogonal(module))

    def conv(self, in_channels: int, out_channels: int, kernel_size: int = 3) -> nn.Module:
        return self._make(nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2))

    def linear(self, in_features: int, out_features: int) -> nn.Module:
        return self._make(nn.Linear(in_features, out_features))

    def embedding(self, num_embeddings: int, dim: int) -> nn.Module:
        return self._make(nn.Embedding(num_embeddings, dim))


class GBlock(nn.Module):
    """Generator residual block: norm-ReLU-(up)-conv3x3-norm-ReLU-conv3x3, shortcut (up)-conv1x1."""

    def __init__(self, in_channels: int, out_channels: int, which_conv: Callable[..., nn.Module],
                 which_norm: Callable[[int], nn.Module], upsample: bool) -> None:
        super().__init__()
        self.in_channels, self.out_channels, self.upsample = in_channels, out_channels, upsample
        self.bn1 = which_norm(in_channels)
        self.conv1 = which_conv(in_channels, out_channels)
        self.bn2 = which_norm(out_channels)
        self.conv2 = which_conv(out_channels, out_channels)
        self.learnable_sc = in_channels != out_channels or upsample
        self.conv_sc = which_conv(in_channels, out_channels, 1) if self.learnable_sc else None

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        h = F.relu(self.bn1(x, y))
        if self.upsample:
            h = F.interpolate(h, scale_factor=2, mode="nearest")
            x = F.interpolate(x, scale_factor=2, mode="nearest")
        h = self.conv2(F.relu(self.bn2(self.conv1(h), y)))
        if self.conv_sc is not None:
            x = self.conv_sc(x)
        return h + x


class DBlock(nn.Module):
    """Discriminator residual block: (ReLU)-conv3x3-ReLU-conv3x3-(pool), shortcut conv1x1/(pool).

    The first block of D has no pre-activation (it reads the image); its shortcut pools before the
    1x1 conv, the others convolve first, as in SNGAN/BigGAN.
    """

    def __init__(self, in_channels: int, out_channels: int, which_conv: Callable[..., nn.Module],
                 preactivation: bool, downsample: bool) -> None:
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.preactivation, self.downsample = preactivation, downsample
        self.conv1 = which_conv(in_channels, out_channels)
        self.conv2 = which_conv(out_channels, out_channels)
        self.learnable_sc = in_channels != out_channels or downsample
        self.conv_sc = which_conv(in_channels, out_channels, 1) if self.learnable_sc else None

    def shortcut(self, x: torch.Tensor) -> torch.Tensor:
        if self.conv_sc is None:
            return x
        if self.preactivation:
            x = self.conv_sc(x)
            return F.avg_pool2d(x, 2) if self.downsample else x
        if self.downsample:
            x = F.avg_pool2d(x, 2)
        return self.conv_sc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(x) if self.preactivation else x
        h = self.conv2(F.relu(self.conv1(h)))
        if self.downsample:
            h = F.avg_pool2d(h, 2)
        return h + self.shortcut(x)


def count_parameters(module: nn.Module, trainable_only: bool = True) -> int:
    """Number of (trainable) parameters of ``module``."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)
