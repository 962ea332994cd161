"""``biggan`` generator: BigGAN's generator (Brock et al. 2019, "Large Scale GAN Training for High Fidelity
Natural Image Synthesis"), for 32, 64 and 128 pixel images.

BigGAN's G is SAGAN's ResNet generator (the same per-resolution table, ``_arch.G_TABLE``, and attention
slot) with two changes to how z and the labels reach the layers, both options of the ``resnet``
generator (``resnet_generator.py``) that this backbone turns on by default:

* a **hierarchical latent** (``hierarchical_z``): z is split into equal chunks, one for the first linear
  layer and one per residual block (z_dim 120 gives 6 chunks of 20 at 128 px, as in the paper; 5 of 24
  at 64 px, 4 of 30 at 32 px);
* a **shared class embedding** (``shared_embedding``: 128): the labels are embedded once, and each
  block's norms get ``[shared(y), z chunk]``, which they project linearly into their gains and biases
  (``norm: {type: self_modulated_batch, hidden: 0}``: bias-free linear heads from G's ``which_linear``,
  spectral norm included, ``gain = 1 + W_g c``), instead of SAGAN's one embedding table per norm.

G's output layer has plain batch norm, as in BigGAN. Without labels (``num_classes: 0``) there is no
embedding and the norms get the chunks alone. BigGAN's other changes (orthogonal init, spectral norm in
G, Adam (0, 0.999), EMA of G, large batches) are ganzoo's defaults or recipe choices; its truncation trick
is a sampling-time choice (``ganzoo sample --truncation``, ``ganzoo eval --truncation``), not a model's.
"""
from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from ..blockref import Block
from ..registry import GENERATOR
from .resnet_generator import ResNetGenerator, ResNetGeneratorConfig


class BigGANGeneratorConfig(ResNetGeneratorConfig):
    """BigGAN generator (Brock et al. 2019): the ResNet generator with a shared class embedding and a hierarchical z."""

    backbone: ClassVar[str] = "biggan"

    type: Literal["biggan"] = "biggan"
    z_dim: int = Field(
        120, ge=1, le=4096,
        description="size of the latent vector z (BigGAN: 120, six chunks of 20 at 128 px); with hierarchical_z "
        "a multiple of the number of blocks + 1",
    )
    norm: Block("norm") = Field(
        {"type": "self_modulated_batch", "hidden": 0},
        description="feature norm of the residual blocks, given [shared(y), z chunk]; the default, bias-free "
        "linear heads, is BigGAN's conditional BN; the output layer has its plain counterpart (batch)",
    )
    shared_embedding: int = Field(
        128, ge=0, le=4096,
        description="size of the shared class embedding put in front of every block's z chunk (BigGAN: 128; "
        "0: off); used only when num_classes > 0",
    )
    hierarchical_z: bool = Field(
        True, description="split z into one chunk for the first linear layer and one per residual block (BigGAN)"
    )

    @classmethod
    def for_tests(cls) -> "BigGANGeneratorConfig":
        """A tiny config (4 chunks of 4 at 32 px, an 8-wide embedding, attention at 16) for the property checks."""
        return cls(ch=8, z_dim=16, shared_embedding=8, attention_resolutions=[16])


@GENERATOR.register(BigGANGeneratorConfig)
class BigGANGenerator(ResNetGenerator):
    """BigGAN generator (Brock et al. 2019), 32/64/128 px: the ResNet G with a shared class embedding and hierarchical z."""

    Config = BigGANGeneratorConfig
