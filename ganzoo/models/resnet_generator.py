"""``resnet`` generator: the SNGAN/SAGAN ResNet generator for 32, 64 and 128 pixel images."""
from __future__ import annotations

import functools
from typing import Annotated, Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field, field_validator
from torch import nn

from ..blockref import Block
from ..config import BlockConfig
from ..registry import ATTENTION, GENERATOR, NORM
from . import _arch
from ._layers import GBlock, Layers, resampling
from ._norm import is_conditional, unconditional

Side = Annotated[int, Field(ge=1, le=1024)]


def check_sides(v: list[int]) -> list[int]:
    twice = sorted({r for r in v if v.count(r) > 1})
    if twice:
        raise ValueError(f"{', '.join(map(str, twice))} listed more than once")
    return v


def nested_problems(cfg: BlockConfig, recipe: Any, fields: tuple[str, ...]) -> list[tuple[tuple[str, ...], str]]:
    """Cross-checks of the blocks nested in a backbone config, with their field paths."""
    out = []
    for name in fields:
        out += [((name, *loc), msg) for loc, msg in getattr(cfg, name).recipe_problems(recipe)]
    return out


class ResNetGeneratorConfig(BlockConfig):
    """ResNet generator (SNGAN/SAGAN): up-sampling residual blocks, conditional BN, attention slot."""

    type: Literal["resnet"] = "resnet"
    ch: int = Field(64, ge=1, le=1024, description="base width: block channels are multiples of ch (SAGAN: 64)")
    z_dim: int = Field(128, ge=1, le=4096, description="size of the latent vector z (SAGAN: 128)")
    attention: Block("attention") = Field("sagan", description="attention block put at attention_resolutions")
    attention_resolutions: list[Side] = Field(
        [32], description="feature-map sides after which the attention slot goes (e.g. [32]; [] for none)"
    )
    slot: Literal["attention", "residual"] = Field(
        "attention",
        description="what fills the slot: the attention block, or an extra residual block (the paper's "
        "Table-1 'residual' control)",
    )
    norm: Block("norm") = Field(
        "conditional_batch",
        description="feature norm of the residual blocks; without class labels (num_classes 0, and the "
        "output layer) its unconditional counterpart is used (conditional_batch -> batch)",
    )
    weight_norm: Block("weight_norm") = Field("spectral", description="weight norm of every conv and linear layer")
    fused_resample: bool = Field(
        False,
        description="speed option, the same maths computed without the up-sampled intermediate: each "
        "up-block's nearest 2x up-sample + conv3x3 runs as one stride-2 transposed conv with a 4x4 kernel "
        "derived from the conv's (normalised) weight in every forward, and its up-sample + 1x1 shortcut conv "
        "as one stride-2 transposed conv with a 2x2 kernel; same parameters and state dict either way",
    )

    _sides = field_validator("attention_resolutions")(check_sides)

    def feature_resolutions(self, resolution: int) -> list[int]:
        """Sides of the feature maps the residual blocks produce at image side ``resolution``."""
        return _arch.generator_sides(resolution)

    def recipe_problems(self, recipe: Any) -> list[tuple[tuple[str, ...], str]]:
        problems = _arch.placement_problems(
            _arch.G_TABLE, self.feature_resolutions, self.attention_resolutions, "generator", recipe.resolution
        )
        if recipe.resolution not in _arch.G_TABLE:
            return problems
        if recipe.num_classes == 0 and unconditional(self.norm) is None:
            problems.append((("norm",), (
                f"'{self.norm.type}' needs class labels but num_classes is 0, and it has no "
                "unconditional counterpart; choose an unconditional norm such as batch")))
        return problems + nested_problems(self, recipe, ("attention", "norm", "weight_norm"))


@GENERATOR.register(ResNetGeneratorConfig)
class ResNetGenerator(nn.Module):
    """SNGAN/SAGAN ResNet generator (32/64/128 px): z -> linear 4x4 -> up-blocks -> BN-ReLU-conv-tanh."""

    def __init__(self, cfg: ResNetGeneratorConfig | None = None, resolution: int = 32, num_classes: int = 0,
                 channels: int = 3) -> None:
        super().__init__()
        cfg = cfg or ResNetGeneratorConfig()
        if resolution not in _arch.G_TABLE:
            raise ValueError(_arch.unsupported(resolution))
        sides = cfg.feature_resolutions(resolution)
        bad = [r for r in cfg.attention_resolutions if r not in sides]
        if bad:
            raise ValueError("attention_resolutions: " + _arch.not_sides(bad, sides, "generator", resolution))
        self.cfg, self.resolution, self.num_classes, self.channels = cfg, resolution, num_classes, channels
        self.z_dim = cfg.z_dim
        out_norm = unconditional(cfg.norm)
        block_norm = cfg.norm if num_classes > 0 else out_norm
        if out_norm is None or block_norm is None:
            raise ValueError(f"norm '{cfg.norm.type}' needs class labels and has no unconditional counterpart")
        self.conditional = num_classes > 0 and is_conditional(block_norm)
        which_norm = functools.partial(NORM.build, block_norm, num_classes=num_classes)
        layers = Layers(cfg.weight_norm)
        which_conv, which_linear = layers.which_conv, layers.which_linear

        self.rows = _arch.generator_rows(resolution, cfg.ch, channels, cfg.attention_resolutions)
        first = self.rows[0].in_channels
        self.linear = which_linear(cfg.z_dim, first * _arch.BOTTOM_WIDTH**2)
        self.blocks = nn.ModuleList()
        # the up-sampling strategy, chosen once (plain, or folded into the convs: fused_resample)
        which_resample = functools.partial(resampling, fused=cfg.fused_resample)
        for row in self.rows:
            up = which_resample("up" if row.resample else None)
            stage = nn.ModuleList([GBlock(row.in_channels, row.out_channels, which_conv, which_norm, row.resample,
                                          resample=up)])
            if row.slot:
                if cfg.slot == "attention":
                    stage.append(ATTENTION.build(cfg.attention, row.out_channels))
                else:
                    stage.append(GBlock(row.out_channels, row.out_channels, which_conv, which_norm, False,
                                        resample=which_resample(None)))
            self.blocks.append(stage)
        last = self.rows[-1].out_channels
        self.output_norm = NORM.build(out_norm, last, num_classes=0)
        self.output_conv = which_conv(last, channels)

    def feature_resolutions(self) -> list[int]:
        """Sides of the feature maps produced by the residual blocks."""
        return self.cfg.feature_resolutions(self.resolution)

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """``z [B, z_dim]``, ``y [B]`` class indices (required iff conditional) -> images in [-1, 1]."""
        if z.dim() != 2 or z.shape[1] != self.z_dim:
            raise ValueError(f"z must have shape [B, {self.z_dim}], got {tuple(z.shape)}")
        if self.conditional:
            if y is None:
                raise ValueError(f"this generator is class-conditional ({self.num_classes} classes): pass labels y")
            if y.shape != (z.shape[0],):
                raise ValueError(f"y must have shape [{z.shape[0]}], got {tuple(y.shape)}")
        else:
            y = None  # unconditional: labels, if any, are ignored
        h = self.linear(z).view(z.shape[0], -1, _arch.BOTTOM_WIDTH, _arch.BOTTOM_WIDTH)
        for stage in self.blocks:
            for block in stage:
                h = block(h, y) if isinstance(block, GBlock) else block(h)
        return torch.tanh(self.output_conv(F.relu(self.output_norm(h))))
