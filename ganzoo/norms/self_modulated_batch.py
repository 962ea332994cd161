"""``self_modulated_batch``: batch norm whose gain and bias are functions of the generator's latent.

Self-modulation (Chen et al. 2019, "On Self Modulation for Generative Adversarial Networks"):

    out = BN(x) * (1 + gain(z)) + bias(z)
    gain(z), bias(z) = W_g h + b_g, W_b h + b_b,  h = ReLU(W_1 z + b_1)    (hidden > 0)
    gain(z), bias(z) = W_g z,       W_b z                                (hidden = 0)

``BN`` has no affine part of its own. With ``hidden > 0`` a one-hidden-layer MLP (``hidden`` ReLU
units, shared by the two heads; the paper's 32) maps ``z`` to the gain and bias, as in the paper;
with ``hidden: 0`` the heads are bias-free linear maps of ``z``, which is BigGAN's conditional BN
(Brock et al. 2019) when ``z`` carries the shared class embedding. ``1 +`` makes a zero modulation
plain batch norm.

``z`` is whatever the generator hands the norms it builds with ``modulated_by_latent``: its latent,
or one block's chunk of it (``hierarchical_z``), after its shared class embedding (``shared_embedding``)
when it has one -- that is how class labels reach this norm, which itself ignores ``y`` and so works
with and without labels. (Chen et al.'s conditional variant instead mixes the labels into ``z``
inside every layer, ``z + E(y) + z * E'(y)``, two embeddings per layer; ganzoo's generators use one
shared embedding, as BigGAN does.) The linear layers come from the generator's ``which_linear``
(orthogonal init, then its weight norm: spectral norm in the SAGAN and BigGAN recipes). Where no
latent reaches (G's output layer, a discriminator's norms) the config's ``unmodulated()``, plain
batch norm, is used.
"""
from __future__ import annotations

from typing import Callable, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from ..config import BlockConfig
from ..registry import NORM
from ._weights import reference_bias, reference_weight
from .batch import BatchNormConfig


class SelfModulatedBatchNormConfig(BlockConfig):
    """Self-modulated batch norm: BN without affine, then a gain and bias computed from the latent z."""

    type: Literal["self_modulated_batch"] = "self_modulated_batch"
    hidden: int = Field(
        32, ge=0, le=4096,
        description="ReLU units of the hidden layer shared by the gain and bias heads (Chen et al.: 32); 0: "
        "the heads are bias-free linear maps of z (BigGAN's conditional BN, with the shared class embedding in z)",
    )
    eps: float = Field(1e-5, gt=0, le=1, description="added to the variance")
    momentum: float = Field(0.1, gt=0, le=1, description="running-statistics update rate (PyTorch convention)")

    def unmodulated(self) -> BatchNormConfig:
        """Plain batch norm with the same statistics settings, where no latent reaches (G's output layer, D)."""
        return BatchNormConfig(eps=self.eps, momentum=self.momentum)


@NORM.register(SelfModulatedBatchNormConfig)
class SelfModulatedBatchNorm(nn.Module):
    """Self-modulated BatchNorm (Chen et al. 2019): gain 1 + g(z) and bias b(z) from the latent; hidden 0 is BigGAN's CBN."""

    conditional = False  # ignores class labels: they reach it through the generator's shared embedding in z
    mixes_batch = True  # train mode normalises with the batch's statistics (eval mode: running ones)
    modulated_by_latent = True  # built with latent_dim and which_linear, called with z

    def __init__(self, cfg: SelfModulatedBatchNormConfig | None = None, channels: int = 0, num_classes: int = 0, *,
                 latent_dim: int = 0, which_linear: Callable[..., nn.Module] | None = None) -> None:
        super().__init__()
        cfg = cfg or SelfModulatedBatchNormConfig()
        if channels < 1:
            raise ValueError(f"self_modulated_batch norm needs channels >= 1, got {channels}")
        if latent_dim < 1 or which_linear is None:
            raise ValueError(
                "self_modulated_batch norm is modulated by the latent: build it with latent_dim >= 1 and which_linear "
                f"(the generator's linear-layer factory), got latent_dim={latent_dim}, which_linear={which_linear!r}"
            )
        self.cfg, self.channels, self.latent_dim = cfg, channels, latent_dim
        self.bn = nn.BatchNorm2d(channels, eps=cfg.eps, momentum=cfg.momentum, affine=False)
        self.fc = which_linear(latent_dim, cfg.hidden) if cfg.hidden else None
        width, biased = (cfg.hidden, True) if cfg.hidden else (latent_dim, False)
        self.gain = which_linear(width, channels, bias=biased)
        self.bias = which_linear(width, channels, bias=biased)

    def _check_z(self, x: torch.Tensor, z: torch.Tensor | None) -> torch.Tensor:
        if z is None:
            raise ValueError(f"self_modulated_batch norm needs the latent z (a [B, {self.latent_dim}] tensor)")
        if z.shape != (x.shape[0], self.latent_dim):
            raise ValueError(f"self_modulated_batch norm: z must have shape [{x.shape[0]}, {self.latent_dim}], "
                             f"got {list(z.shape)}")
        return z

    def modulation(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(1 + gain(z), bias(z))``, each ``[B, C]``."""
        h = F.relu(self.fc(z)) if self.fc is not None else z
        return 1 + self.gain(h), self.bias(h)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None, z: torch.Tensor | None = None) -> torch.Tensor:
        gain, bias = self.modulation(self._check_z(x, z))
        out = self.bn(x)
        return torch.addcmul(bias.to(out.dtype)[:, :, None, None], out, gain.to(out.dtype)[:, :, None, None])

    def reference(self, x: torch.Tensor, y: torch.Tensor | None = None, z: torch.Tensor | None = None) -> torch.Tensor:
        """``forward`` in float64, written out (batch statistics in training mode, running ones in eval), no side effects."""
        z = self._check_z(x, z).to(torch.float64)
        x = x.to(torch.float64)
        if self.training:
            mean, var = x.mean(dim=(0, 2, 3)), x.var(dim=(0, 2, 3), unbiased=False)
        else:
            mean, var = self.bn.running_mean.to(torch.float64), self.bn.running_var.to(torch.float64)
        out = (x - mean[:, None, None]) / torch.sqrt(var[:, None, None] + self.cfg.eps)

        def linear(layer: nn.Module, t: torch.Tensor) -> torch.Tensor:
            return F.linear(t, reference_weight(layer), reference_bias(layer))

        h = torch.relu(linear(self.fc, z)) if self.fc is not None else z
        gain, bias = 1 + linear(self.gain, h), linear(self.bias, h)
        return out * gain[:, :, None, None] + bias[:, :, None, None]

    def extra_repr(self) -> str:
        return f"channels={self.channels}, latent_dim={self.latent_dim}, hidden={self.cfg.hidden}"
