"""``dcgan`` generator: the DCGAN generator of Radford et al. 2016 (their Figure 1), for 32 and 64 px.

``z -> linear 4x4 (the paper's "project and reshape") -> norm-ReLU``, then 4x4 stride-2 transposed
convs with norm-ReLU, and a last 4x4 stride-2 transposed conv to the image with tanh (no norm), built
by the plain-CNN machinery of ``sngan_cnn_generator.py``. Widths for ``ch: 64``: 512-256-128 at 32 px
(feature sides 4, 8, 16) and 512-256-128-64 at 64 px (4, 8, 16, 32); the paper's 64 px net is
``ch: 128``. Weight norm defaults to none, as in the paper (recipes may set spectral); weights are
orthogonally initialised like every ganzoo backbone (the paper draws N(0, 0.02)).
"""
from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from ..blockref import Block
from ..registry import GENERATOR
from .sngan_cnn_generator import CNNGenerator, CNNGeneratorConfig


class DCGANGeneratorConfig(CNNGeneratorConfig):
    """DCGAN generator (Radford et al. 2016): linear 4x4, 4x4 stride-2 transposed convs with norm-ReLU, tanh."""

    backbone: ClassVar[str] = "dcgan"
    table: ClassVar[dict[int, tuple[int, ...]]] = {32: (8, 4, 2), 64: (8, 4, 2, 1)}
    to_image: ClassVar[str] = "deconv"

    type: Literal["dcgan"] = "dcgan"
    weight_norm: Block("weight_norm") = Field(
        "none", description="weight norm of every conv and linear layer (DCGAN: none)"
    )


@GENERATOR.register(DCGANGeneratorConfig)
class DCGANGenerator(CNNGenerator):
    """DCGAN generator (Radford et al. 2016), 32/64 px: z -> linear 4x4 -> 4x4 stride-2 deconvs with norm-ReLU -> tanh."""

    Config = DCGANGeneratorConfig
