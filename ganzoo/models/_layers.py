"""Layer factories, weight initialisation and the residual blocks shared by the ResNet backbones.

``Layers(weight_norm_cfg)`` gives ``conv``, ``linear`` and ``embedding`` factories: each creates the
plain layer, initialises it, then wraps it with the weight norm (spectral norm in SAGAN), so weight
normalisation is a recipe choice and the initial weights do not depend on it.

Initialisation: orthogonal weights (gain 1) and zero biases for every conv, linear and embedding
layer made here, as SAGAN's and BigGAN's official code do. Norm and attention blocks initialise
their own parameters (norm gains 1 and biases 0; attention ``gamma`` 0).

Folded resampling (the blocks' ``fused_resample``, a speed option): the same maths without the
full-resolution intermediate of a 2x resampling next to a 3x3 conv (``W``: the conv's weight, ``S``:
the sum of ``W`` zero-padded to 4x4 at the four offsets (a, b) in {0, 1}^2, see ``shifted_sum``)::

    avg_pool2d(conv3x3(h, W, b), 2)   == conv2d(h, S / 4, b, stride=2, padding=1)
    conv3x3(up2_nearest(h), W, b)     == conv_transpose2d(h, flip(S).transpose(0, 1), b, stride=2, padding=1)
    avg_pool2d(conv1x1(x, V, c))      == conv2d(x, V / 4 at each of 2x2 taps, c, stride=2)
    up2_nearest(conv1x1(x, V, c))     == conv_transpose2d(x, V^T at each of 2x2 taps, c, stride=2)

(the last two are the shortcuts: no pooled or up-sampled copy of ``x`` is made, and the 1x1 conv's
work is the same as on the quarter-size map).

``S`` is derived in every forward from ``layer.weight``, read once (a spectral-norm layer runs its
power iteration once, as calling the layer would), so parameters and state dicts do not change.
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

    def linear(self, in_features: int, out_features: int, bias: bool = True) -> nn.Module:
        return self._make(nn.Linear(in_features, out_features, bias=bias))

    def embedding(self, num_embeddings: int, dim: int) -> nn.Module:
        return self._make(nn.Embedding(num_embeddings, dim))


def shifted_sum(weight: torch.Tensor) -> torch.Tensor:
    """``[..., 3, 3] -> [..., 4, 4]``: the sum of ``weight`` zero-padded to 4x4 at the offsets (0|1, 0|1).

    Tap (m, n) of it collects every 3x3 tap that reaches input pixel (m - 1, n - 1) from one of the
    2x2 output pixels a stride-2 window covers: the kernel of a 3x3 conv followed by a 2x2 sum pool,
    and (flipped) of nearest 2x up-sampling followed by the 3x3 conv (see the module docstring)."""
    rows = F.pad(weight, (0, 0, 0, 1)) + F.pad(weight, (0, 0, 1, 0))
    return F.pad(rows, (0, 1)) + F.pad(rows, (1, 0))


def _memory_format_of(kernel: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``kernel`` in ``weight``'s memory format (channels_last models keep channels_last kernels)."""
    if not weight.is_contiguous() and weight.is_contiguous(memory_format=torch.channels_last):
        return kernel.contiguous(memory_format=torch.channels_last)
    return kernel.contiguous()


def pooled_conv3x3(layer: nn.Module, h: torch.Tensor) -> torch.Tensor:
    """``avg_pool2d(layer(h), 2)`` for a 3x3, padding-1 conv ``layer``, as one stride-2 4x4 conv."""
    weight = layer.weight  # read once: one power iteration, as layer(h) would run
    kernel = _memory_format_of(shifted_sum(weight) * 0.25, weight)
    return F.conv2d(h, kernel, layer.bias, stride=2, padding=1)


def upsampled_conv3x3(layer: nn.Module, h: torch.Tensor) -> torch.Tensor:
    """``layer(up2_nearest(h))`` for a 3x3, padding-1 conv ``layer``, as one stride-2 transposed conv."""
    weight = layer.weight  # read once: one power iteration, as layer(h) would run
    kernel = _memory_format_of(shifted_sum(weight).flip(2, 3).transpose(0, 1), weight)  # [in, out, 4, 4]
    return F.conv_transpose2d(h, kernel, layer.bias, stride=2, padding=1)


def pooled_conv1x1(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``avg_pool2d(layer(x), 2)`` (= ``layer(avg_pool2d(x, 2))``) for a 1x1 conv ``layer``, as one
    stride-2 2x2 conv whose four taps are the 1x1 weight / 4."""
    weight = layer.weight  # read once: one power iteration, as layer(x) would run
    kernel = _memory_format_of(weight.expand(-1, -1, 2, 2) * 0.25, weight)
    return F.conv2d(x, kernel, layer.bias, stride=2)


def upsampled_conv1x1(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``up2_nearest(layer(x))`` (= ``layer(up2_nearest(x))``) for a 1x1 conv ``layer``, as one stride-2
    2x2 transposed conv whose four taps are the 1x1 weight (each output pixel gets one input pixel)."""
    weight = layer.weight  # read once: one power iteration, as layer(x) would run
    kernel = _memory_format_of(weight.transpose(0, 1).expand(-1, -1, 2, 2), weight)  # [in, out, 2, 2]
    return F.conv_transpose2d(x, kernel, layer.bias, stride=2)


def check_foldable(layer: nn.Module, kernel_size: int = 3) -> None:
    """Raise ValueError unless ``layer`` is a plain ``kernel_size`` x ``kernel_size`` ``nn.Conv2d``
    (stride 1, "same" zero padding) whose ``weight`` is a parameter or a parametrization (not computed
    by a forward pre-hook), as folded resampling needs."""
    pad = kernel_size // 2
    conv = isinstance(layer, nn.Conv2d) and layer.kernel_size == (kernel_size, kernel_size) \
        and layer.stride == (1, 1) and layer.padding == (pad, pad) and layer.dilation == (1, 1) \
        and layer.groups == 1 and layer.padding_mode == "zeros"
    if not conv or layer._forward_pre_hooks:
        raise ValueError(f"fused_resample needs plain {kernel_size}x{kernel_size} convs with a parameter or "
                         f"parametrized weight (no forward pre-hooks), got {layer!r}; set fused_resample: false "
                         "for this weight norm")


def _up2(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, scale_factor=2, mode="nearest")


def _pool2(x: torch.Tensor) -> torch.Tensor:
    return F.avg_pool2d(x, 2)


# ----------------------------------------------------------------------------- resampling strategies
# A residual block is given one of these (BigGAN-PyTorch passes its resampling in the same way): the
# strategy applies the block's 2x resampling around its 3x3 conv (``conv``) and its 1x1 shortcut
# (``shortcut``); the block's forward has no branch on how. ``resampling(...)`` picks one.
class Resampling:
    """No resampling: ``conv(layer, h) = layer(h)``, ``shortcut(layer, x) = layer(x)`` (or ``x``)."""

    folded = False

    def check(self, conv3x3: nn.Module, conv1x1: nn.Module | None) -> None:
        """Raise ValueError if the block's convs cannot be used by this strategy."""

    def conv(self, layer: nn.Module, h: torch.Tensor) -> torch.Tensor:
        return layer(h)

    def shortcut(self, layer: nn.Module | None, x: torch.Tensor) -> torch.Tensor:
        return x if layer is None else layer(x)


class Upsample(Resampling):
    """G: nearest 2x up-sampling before the 3x3 conv and the shortcut's 1x1 conv."""

    def conv(self, layer, h):
        return layer(_up2(h))

    def shortcut(self, layer, x):
        return super().shortcut(layer, _up2(x))


class _Folded:
    """Resampling folded into the convs: it needs plain convs whose weight it can read (``check_foldable``)."""

    folded = True

    def check(self, conv3x3, conv1x1):
        check_foldable(conv3x3)
        check_foldable(conv1x1, 1)


class FoldedUpsample(_Folded, Upsample):
    """:class:`Upsample` folded into the convs: stride-2 transposed convs (same maths, module doc)."""

    def conv(self, layer, h):
        return upsampled_conv3x3(layer, h)

    def shortcut(self, layer, x):
        return upsampled_conv1x1(layer, x)


class Downsample(Resampling):
    """D: 2x2 average pooling after the 3x3 conv and after the shortcut's 1x1 conv."""

    def conv(self, layer, h):
        return _pool2(layer(h))

    def shortcut(self, layer, x):
        return _pool2(super().shortcut(layer, x))


class PoolFirstDownsample(Downsample):
    """D's first block (it reads the image): its shortcut pools before the 1x1 conv (SNGAN/BigGAN)."""

    def shortcut(self, layer, x):
        return Resampling.shortcut(self, layer, _pool2(x))


class FoldedDownsample(_Folded, Downsample):
    """:class:`Downsample` (either shortcut order: the 1x1 conv and the pooling commute) folded into the
    convs: stride-2 convs (same maths, module doc)."""

    def conv(self, layer, h):
        return pooled_conv3x3(layer, h)

    def shortcut(self, layer, x):
        return pooled_conv1x1(layer, x)


def resampling(direction: str | None, fused: bool = False, pool_first: bool = False) -> Resampling:
    """The strategy for a block: ``direction`` "up" (G), "down" (D) or None; ``fused`` folds the
    resampling into the convs (``fused_resample``); ``pool_first``: D's first block's shortcut order."""
    if direction is None:
        return Resampling()
    if direction == "up":
        return FoldedUpsample() if fused else Upsample()
    if direction == "down":
        return FoldedDownsample() if fused else (PoolFirstDownsample() if pool_first else Downsample())
    raise ValueError(f"resampling direction must be 'up', 'down' or None, got {direction!r}")


class GBlock(nn.Module):
    """Generator residual block: norm-ReLU-(up)-conv3x3-norm-ReLU-conv3x3, shortcut (up)-conv1x1.

    How it up-samples is a :class:`Resampling` strategy (``resample``; by default from ``upsample`` and
    ``fused_resample``), so the forward is the same for plain and folded resampling."""

    def __init__(self, in_channels: int, out_channels: int, which_conv: Callable[..., nn.Module],
                 which_norm: Callable[[int], nn.Module], upsample: bool, fused_resample: bool = False,
                 resample: Resampling | None = None) -> None:
        super().__init__()
        self.resample = resample or resampling("up" if upsample else None, fused_resample)
        self.in_channels, self.out_channels = in_channels, out_channels
        self.upsample = isinstance(self.resample, Upsample)
        self.fused_resample = self.resample.folded  # the up-sampling folded into conv1 and the shortcut
        self.bn1 = which_norm(in_channels)
        self.conv1 = which_conv(in_channels, out_channels)
        self.bn2 = which_norm(out_channels)
        self.conv2 = which_conv(out_channels, out_channels)
        self.learnable_sc = in_channels != out_channels or self.upsample
        self.conv_sc = which_conv(in_channels, out_channels, 1) if self.learnable_sc else None
        self.resample.check(self.conv1, self.conv_sc)

    def shortcut(self, x: torch.Tensor) -> torch.Tensor:
        return self.resample.shortcut(self.conv_sc, x)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None, z: torch.Tensor | None = None) -> torch.Tensor:
        """``y``: class labels for the norms; ``z``: the vector the generator hands norms modulated by the
        latent (``modulated_by_latent``), None when its norms are not."""
        cond = (y,) if z is None else (y, z)
        h = self.resample.conv(self.conv1, F.relu(self.bn1(x, *cond)))
        h = self.conv2(F.relu(self.bn2(h, *cond)))
        return h + self.shortcut(x)


class DBlock(nn.Module):
    """Discriminator residual block: (ReLU)-conv3x3-ReLU-conv3x3-(pool), shortcut conv1x1/(pool).

    The first block of D has no pre-activation (it reads the image); its shortcut pools before the
    1x1 conv, the others convolve first, as in SNGAN/BigGAN (with ``fused_resample`` both are one
    stride-2 conv: the same maths). How it down-samples is a :class:`Resampling` strategy
    (``resample``; by default from ``downsample``, ``fused_resample`` and ``preactivation``).
    """

    def __init__(self, in_channels: int, out_channels: int, which_conv: Callable[..., nn.Module],
                 preactivation: bool, downsample: bool, fused_resample: bool = False,
                 resample: Resampling | None = None) -> None:
        super().__init__()
        self.resample = resample or resampling("down" if downsample else None, fused_resample,
                                               pool_first=not preactivation)
        self.in_channels, self.out_channels = in_channels, out_channels
        self.preactivation, self.downsample = preactivation, isinstance(self.resample, Downsample)
        self.fused_resample = self.resample.folded  # the pooling folded into conv2 and the shortcut
        self.conv1 = which_conv(in_channels, out_channels)
        self.conv2 = which_conv(out_channels, out_channels)
        self.learnable_sc = in_channels != out_channels or self.downsample
        self.conv_sc = which_conv(in_channels, out_channels, 1) if self.learnable_sc else None
        self.resample.check(self.conv2, self.conv_sc)

    def shortcut(self, x: torch.Tensor) -> torch.Tensor:
        return self.resample.shortcut(self.conv_sc, x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(x) if self.preactivation else x
        h = self.resample.conv(self.conv2, F.relu(self.conv1(h)))
        return h + self.shortcut(x)


def count_parameters(module: nn.Module, trainable_only: bool = True) -> int:
    """Number of (trainable) parameters of ``module``."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)
