"""``dcgan`` discriminator: the DCGAN discriminator of Radford et al. 2016, for 32 and 64 px.

4x4 stride-2 convs (widths ``ch``, 2 ``ch``, 4 ``ch`` (, 8 ``ch`` at 64 px)) with LeakyReLU 0.2 and a
feature norm after every conv but the first, then a linear layer on the flattened 4 x 4 map (+ the
projection term with class labels), built by the plain-CNN machinery of ``sngan_cnn_discriminator.py``.

The paper uses batch norm; here ``norm`` defaults to ``none`` and ``weight_norm`` to ``spectral``
(SN-DCGAN, as Miyato et al. 2018 run it): batch norm in D makes each logit depend on the whole batch,
which the gradient penalties rely on not happening (the discriminator contract), and spectral norm
already bounds D. ``norm: batch`` with ``weight_norm: none`` gives the paper's D.
"""
from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field

from ..blockref import Block
from ..config import BlockConfig
from ..registry import DISCRIMINATOR
from ._norm import plain
from .resnet_generator import nested_problems
from .sngan_cnn_discriminator import CNNDiscriminator, CNNDiscriminatorConfig


class DCGANDiscriminatorConfig(CNNDiscriminatorConfig):
    """DCGAN discriminator (Radford et al. 2016): 4x4 stride-2 convs, LeakyReLU 0.2, norm but on the first."""

    backbone: ClassVar[str] = "dcgan"
    table: ClassVar[dict[int, tuple[tuple[int, int, int], ...]]] = {
        32: ((4, 2, 1), (4, 2, 2), (4, 2, 4)),
        64: ((4, 2, 1), (4, 2, 2), (4, 2, 4), (4, 2, 8)),
    }
    slope: ClassVar[float] = 0.2

    type: Literal["dcgan"] = "dcgan"
    norm: Block("norm") = Field(
        "none",
        description="feature norm after every conv but the first (the paper: batch; default none, as "
        "spectral norm is on and batch norm would mix the samples of a batch); class-conditional norms "
        "act as their unconditional counterpart, norms modulated by G's latent as their unmodulated one "
        "(self_modulated_batch -> batch)",
    )

    def feature_norm(self, index: int) -> BlockConfig | str:
        """No norm after the first conv (it reads the image); ``norm``'s plain counterpart (no labels, no
        latent reach D's norms) after the others."""
        return "none" if index == 0 else plain(self.norm)

    def recipe_problems(self, recipe: Any) -> list[tuple[tuple[str, ...], str]]:
        problems = super().recipe_problems(recipe)
        if plain(self.norm) is None:
            problems.append((("norm",), f"'{self.norm.type}' needs class labels or G's latent and has no "
                                        "counterpart without them (D's norms get neither); choose e.g. batch or none"))
        return problems + nested_problems(self, recipe, ("norm",))


@DISCRIMINATOR.register(DCGANDiscriminatorConfig)
class DCGANDiscriminator(CNNDiscriminator):
    """DCGAN discriminator (Radford et al. 2016), 32/64 px: 4x4 stride-2 convs, LeakyReLU 0.2 -> linear (+ projection)."""

    Config = DCGANDiscriminatorConfig
