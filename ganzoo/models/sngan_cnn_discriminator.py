"""``sngan_cnn`` discriminator: the standard CNN discriminator of Miyato et al. 2018 (Table 3 (b)), and the
plain-CNN discriminator machinery the ``dcgan`` discriminator shares (``CNNDiscriminatorConfig``,
``CNNDiscriminator``).

A plain CNN discriminator is a stack of convs (3x3 stride 1, or 4x4 stride 2 halving the side), each
followed by a feature norm (``none`` in SNGAN, where spectral norm does the work) and LeakyReLU; then
one linear layer on the flattened last feature map gives the logit, plus, with class labels, the
projection term ``<embed(y), sum over positions of the last feature map>`` (Miyato & Koyama 2018; the
ResNet D's projection). The feature sides are the sides the convs produce; the slot (attention, or for
``slot: residual`` one extra conv3x3-norm-LeakyReLU layer of the same width) follows the first conv
producing a listed side, as in the ResNet D.
"""
from __future__ import annotations

import functools
from typing import Any, ClassVar, Literal

import torch
from pydantic import Field, field_validator
from torch import nn

from ..blockref import Block
from ..config import BlockConfig
from ..registry import DISCRIMINATOR, NORM
from . import _arch
from ._layers import Layers
from .resnet_generator import Side, check_sides, nested_problems
from .resnet_discriminator import ResNetDiscriminatorConfig
from .sngan_cnn_generator import (SLOT_KINDS, SLOT_SIDES, CNNBackbone, ConvNormAct, check_labels, cnn_problems, run_stages,
                                  slot_block)


class CNNDiscriminatorConfig(BlockConfig):
    """Fields of a plain CNN discriminator (subclassed per backbone, which sets the table and the tag)."""

    backbone: ClassVar[str] = "cnn"
    #: image side -> convs as (kernel, stride, width multiplier of ch); kernel 3: padding 1, kernel 4: stride 2
    table: ClassVar[dict[int, tuple[tuple[int, int, int], ...]]] = {}
    slope: ClassVar[float] = 0.1  # LeakyReLU's negative slope

    ch: int = Field(64, ge=1, le=1024, description="base width: convs have multiples of ch channels")
    attention: Block("attention") = ResNetDiscriminatorConfig.model_fields["attention"]
    attention_resolutions: list[Side] = Field([], description=SLOT_SIDES)
    slot: Literal["attention", "residual"] = Field("attention", description=SLOT_KINDS.format(act="LeakyReLU"))
    weight_norm: Block("weight_norm") = ResNetDiscriminatorConfig.model_fields["weight_norm"]
    projection: bool = ResNetDiscriminatorConfig.model_fields["projection"]

    _sides = field_validator("attention_resolutions")(check_sides)

    @classmethod
    def for_tests(cls) -> "CNNDiscriminatorConfig":
        """A tiny config with an attention slot, for the property checks (``ganzoo.testing.models``)."""
        return cls(ch=8, attention_resolutions=[16])

    def layer_sides(self, resolution: int) -> list[int]:
        """Side of the feature map after each conv at image side ``resolution``."""
        sides, side = [], resolution
        for _, stride, _ in self.table.get(resolution, ()):
            side //= stride
            sides.append(side)
        return sides

    def feature_resolutions(self, resolution: int) -> list[int]:
        """Sides of the feature maps the convs produce at image side ``resolution`` (largest first)."""
        return sorted(set(self.layer_sides(resolution)), reverse=True)

    def feature_norm(self, index: int) -> BlockConfig | str:
        """The (unconditional) feature norm after conv ``index``: none (SNGAN's D has no feature norm)."""
        return "none"

    def recipe_problems(self, recipe: Any) -> list[tuple[tuple[str, ...], str]]:
        problems = cnn_problems(self, "discriminator", recipe.resolution)
        if recipe.resolution not in self.table:
            return problems
        return problems + nested_problems(self, recipe, ("attention", "weight_norm"))


class CNNDiscriminator(CNNBackbone):
    """A plain CNN discriminator built from its config's table (see the module docstring)."""

    what: ClassVar[str] = "discriminator"

    def build(self, cfg: CNNDiscriminatorConfig, layers: Layers) -> None:
        resolution, num_classes = self.resolution, self.num_classes
        sides = cfg.layer_sides(resolution)
        slots = _arch._slots(tuple(sides), cfg.attention_resolutions)
        self.stages = nn.ModuleList()
        c_in = self.channels
        for i, ((k, stride, mult), slot) in enumerate(zip(cfg.table[resolution], slots)):
            c = mult * cfg.ch
            norm_cfg = cfg.feature_norm(i)
            if norm_cfg is None:
                raise ValueError("norm: a class-conditional norm with no unconditional counterpart (D's norms get no labels)")
            which_norm = functools.partial(NORM.build, norm_cfg)
            conv = layers._make(nn.Conv2d(c_in, c, k, stride=stride, padding=1))
            stage = nn.ModuleList([ConvNormAct(conv, which_norm(c), cfg.slope)])
            if slot:
                stage.append(slot_block(cfg, c, lambda c: ConvNormAct(layers.which_conv(c, c), which_norm(c), cfg.slope)))
            self.stages.append(stage)
            c_in = c
        self.linear = layers.which_linear(c_in * sides[-1] ** 2, 1)
        self.conditional = cfg.projection and num_classes > 0
        self.embed = layers.which_embedding(num_classes, c_in) if self.conditional else None

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """``x [B, channels, res, res]``, ``y [B]`` class indices (required iff projection) -> logits ``[B]``."""
        want = (self.channels, self.resolution, self.resolution)
        if x.dim() != 4 or tuple(x.shape[1:]) != want:
            raise ValueError(f"x must have shape [B, {', '.join(map(str, want))}], got {tuple(x.shape)}")
        y = check_labels(self, x.shape[0], y)
        h = run_stages(self.stages, x, None)
        out = self.linear(h.flatten(1)).squeeze(1)
        if self.embed is not None:
            out = out + (self.embed(y) * h.sum(dim=(2, 3))).sum(1)
        return out


class SNGANCNNDiscriminatorConfig(CNNDiscriminatorConfig):
    """SNGAN's standard CNN discriminator (Miyato et al. 2018, Table 3 (b)): seven convs with LeakyReLU 0.1,
    spectral norm, linear on the flattened 4x4 map (+ projection)."""

    backbone: ClassVar[str] = "sngan_cnn"
    # Table 3 (b), ch = 64: 3x3 64, 4x4 s2 64, 3x3 128, 4x4 s2 128, 3x3 256, 4x4 s2 256, 3x3 512, linear
    table: ClassVar[dict[int, tuple[tuple[int, int, int], ...]]] = {
        32: ((3, 1, 1), (4, 2, 1), (3, 1, 2), (4, 2, 2), (3, 1, 4), (4, 2, 4), (3, 1, 8)),
    }
    slope: ClassVar[float] = 0.1

    type: Literal["sngan_cnn"] = "sngan_cnn"


@DISCRIMINATOR.register(SNGANCNNDiscriminatorConfig)
class SNGANCNNDiscriminator(CNNDiscriminator):
    """SNGAN standard CNN discriminator (Miyato et al. 2018, Table 3 (b)), 32 px, LeakyReLU 0.1, + projection."""

    Config = SNGANCNNDiscriminatorConfig
