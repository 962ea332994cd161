"""``resnet`` discriminator: the SNGAN/SAGAN ResNet discriminator with projection conditioning."""
from __future__ import annotations

import functools
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field, field_validator
from torch import nn

from ..blockref import Block
from ..config import BlockConfig
from ..registry import ATTENTION, DISCRIMINATOR
from . import _arch
from ._layers import DBlock, Layers, resampling
from .resnet_generator import Side, check_sides, nested_problems


class ResNetDiscriminatorConfig(BlockConfig):
    """ResNet discriminator (SNGAN/SAGAN): down-sampling residual blocks, attention slot, projection."""

    type: Literal["resnet"] = "resnet"
    ch: int = Field(64, ge=1, le=1024, description="base width: block channels are multiples of ch (SAGAN: 64)")
    attention: Block("attention") = Field("sagan", description="attention block put at attention_resolutions")
    attention_resolutions: list[Side] = Field(
        [32], description="feature-map sides after which the attention slot goes (e.g. [32]; [] for none)"
    )
    slot: Literal["attention", "residual"] = Field(
        "attention",
        description="what fills the slot: the attention block, or an extra residual block (the paper's "
        "Table-1 'residual' control)",
    )
    weight_norm: Block("weight_norm") = Field("spectral", description="weight norm of every conv, linear and embedding")
    projection: bool = Field(
        True, description="projection conditioning: add <embed(y), pooled features> (only when num_classes > 0)"
    )
    fused_resample: bool = Field(
        False,
        description="speed option, the same maths computed without the full-resolution intermediate: each "
        "down-block's conv3x3 + 2x2 average pool runs as one stride-2 conv with a 4x4 kernel derived from the "
        "conv's (normalised) weight in every forward, and its 1x1 shortcut conv + pool as "
        "one stride-2 conv with a 2x2 kernel; same parameters and state dict either way",
    )

    _sides = field_validator("attention_resolutions")(check_sides)

    def feature_resolutions(self, resolution: int) -> list[int]:
        """Sides of the feature maps the residual blocks produce at image side ``resolution``."""
        return _arch.discriminator_sides(resolution)

    def recipe_problems(self, recipe: Any) -> list[tuple[tuple[str, ...], str]]:
        problems = _arch.placement_problems(
            _arch.D_TABLE, self.feature_resolutions, self.attention_resolutions, "discriminator", recipe.resolution
        )
        if recipe.resolution not in _arch.D_TABLE:
            return problems
        return problems + nested_problems(self, recipe, ("attention", "weight_norm"))


@DISCRIMINATOR.register(ResNetDiscriminatorConfig)
class ResNetDiscriminator(nn.Module):
    """SNGAN/SAGAN ResNet discriminator (32/64/128 px): down-blocks -> ReLU-sum -> linear + projection."""

    def __init__(self, cfg: ResNetDiscriminatorConfig | None = None, resolution: int = 32, num_classes: int = 0,
                 channels: int = 3) -> None:
        super().__init__()
        cfg = cfg or ResNetDiscriminatorConfig()
        if resolution not in _arch.D_TABLE:
            raise ValueError(_arch.unsupported(resolution))
        sides = cfg.feature_resolutions(resolution)
        bad = [r for r in cfg.attention_resolutions if r not in sides]
        if bad:
            raise ValueError("attention_resolutions: " + _arch.not_sides(bad, sides, "discriminator", resolution))
        self.cfg, self.resolution, self.num_classes, self.channels = cfg, resolution, num_classes, channels
        layers = Layers(cfg.weight_norm)
        which_conv = layers.which_conv
        self.rows = _arch.discriminator_rows(resolution, cfg.ch, channels, cfg.attention_resolutions)
        self.blocks = nn.ModuleList()
        # the down-sampling strategy, chosen once (plain, or folded into the convs: fused_resample); the
        # first block reads the image (no pre-activation) and pools its shortcut first
        which_resample = functools.partial(resampling, fused=cfg.fused_resample)
        for i, row in enumerate(self.rows):
            down = which_resample("down" if row.resample else None, pool_first=i == 0)
            stage = nn.ModuleList([DBlock(row.in_channels, row.out_channels, which_conv, i > 0, row.resample,
                                          resample=down)])
            if row.slot:
                if cfg.slot == "attention":
                    stage.append(ATTENTION.build(cfg.attention, row.out_channels))
                else:
                    stage.append(DBlock(row.out_channels, row.out_channels, which_conv, True, False,
                                        resample=which_resample(None)))
            self.blocks.append(stage)
        last = self.rows[-1].out_channels
        self.linear = layers.which_linear(last, 1)
        self.conditional = cfg.projection and num_classes > 0
        self.embed = layers.which_embedding(num_classes, last) if self.conditional else None

    def feature_resolutions(self) -> list[int]:
        """Sides of the feature maps produced by the residual blocks."""
        return self.cfg.feature_resolutions(self.resolution)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """``x [B, channels, res, res]``, ``y [B]`` class indices (required iff projection) -> logits ``[B]``."""
        if x.dim() != 4 or x.shape[1:] != (self.channels, self.resolution, self.resolution):
            raise ValueError(f"x must have shape [B, {self.channels}, {self.resolution}, {self.resolution}], "
                             f"got {tuple(x.shape)}")
        if self.conditional:
            if y is None:
                raise ValueError(f"this discriminator is class-conditional ({self.num_classes} classes): pass labels y")
            if y.shape != (x.shape[0],):
                raise ValueError(f"y must have shape [{x.shape[0]}], got {tuple(y.shape)}")
        h = x
        for stage in self.blocks:
            for block in stage:
                h = block(h)
        h = F.relu(h).sum(dim=(2, 3))
        out = self.linear(h).squeeze(1)
        if self.embed is not None:
            out = out + (self.embed(y) * h).sum(1)
        return out
