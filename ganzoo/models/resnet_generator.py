"""``resnet`` generator: the SNGAN/SAGAN ResNet generator for 32, 64 and 128 pixel images.

Two options give BigGAN's conditioning (Brock et al. 2019; the ``biggan`` generator in
``biggan_generator.py`` is this network with them on): ``hierarchical_z`` splits z into equal chunks,
one for the first linear layer and one per residual block, and ``shared_embedding`` embeds the labels
once and puts the embedding in front of every block's chunk. What a block's chunk reaches is its norms,
so both need a norm modulated by the latent (``modulated_by_latent``, e.g. ``self_modulated_batch``;
with ``hidden: 0`` it is BigGAN's conditional BN). Without the options, such a norm gets all of z
(self-modulation, Chen et al. 2019). The architecture table is the same either way.
"""
from __future__ import annotations

import functools
from typing import Annotated, Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import Field, field_validator
from torch import nn

from ..blockref import Block
from ..config import BlockConfig
from ..registry import ATTENTION, GENERATOR, NORM
from . import _arch
from ._layers import GBlock, Layers, init_orthogonal, resampling
from ._norm import is_conditional, is_modulated, norm_builder, plain, unconditional

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

    backbone: ClassVar[str] = "resnet"  # the name in error messages

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
        "output layer) its unconditional counterpart is used (conditional_batch -> batch); a norm modulated "
        "by the latent (self_modulated_batch) gets z, or its block's chunk of it, and plain batch norm in the "
        "output layer",
    )
    weight_norm: Block("weight_norm") = Field("spectral", description="weight norm of every conv and linear layer")
    fused_resample: bool = Field(
        False,
        description="speed option, the same maths computed without the up-sampled intermediate: each "
        "up-block's nearest 2x up-sample + conv3x3 runs as one stride-2 transposed conv with a 4x4 kernel "
        "derived from the conv's (normalised) weight in every forward, and its up-sample + 1x1 shortcut conv "
        "as one stride-2 transposed conv with a 2x2 kernel; same parameters and state dict either way",
    )
    shared_embedding: int = Field(
        0, ge=0, le=4096,
        description="BigGAN's shared class embedding: its size (0: off). The labels are embedded once and "
        "the embedding is put in front of the z (chunk) every block's norms get, which project it into their "
        "gains and biases; needs a norm modulated by the latent; used only when num_classes > 0",
    )
    hierarchical_z: bool = Field(
        False,
        description="BigGAN's hierarchical latent: z is split into equal chunks, one for the first linear "
        "layer and one per residual block (for its norms, which must be modulated by the latent); z_dim must "
        "be a multiple of the number of blocks + 1",
    )

    _sides = field_validator("attention_resolutions")(check_sides)

    def feature_resolutions(self, resolution: int) -> list[int]:
        """Sides of the feature maps the residual blocks produce at image side ``resolution``."""
        return _arch.generator_sides(resolution)

    def latent_chunks(self, resolution: int) -> int:
        """How many equal pieces z is split into at image side ``resolution``: with ``hierarchical_z`` one
        for the first linear layer and one per residual block, else 1 (every consumer gets all of z)."""
        return len(self.feature_resolutions(resolution)) + 1 if self.hierarchical_z else 1

    def latent_problems(self, resolution: int) -> list[tuple[tuple[str, ...], str]]:
        """Problems of the latent's routing at ``resolution``: the BigGAN options need a norm modulated by
        the latent, such a norm needs a plain counterpart for the output layer, z_dim must split evenly."""
        problems = []
        modulated = is_modulated(self.norm)
        options = [n for n, on in (("shared_embedding", self.shared_embedding > 0),
                                   ("hierarchical_z", self.hierarchical_z)) if on]
        if options and not modulated:
            problems.append((("norm",), (
                f"'{self.norm.type}' is not modulated by the latent, so {' and '.join(options)} would reach no "
                "layer; choose a norm that is, e.g. self_modulated_batch ({type: self_modulated_batch, hidden: 0} "
                "is BigGAN's conditional BN)")))
        if modulated and plain(self.norm) is None:
            problems.append((("norm",), (
                f"'{self.norm.type}' is modulated by the latent but its config has no unmodulated() "
                "counterpart for G's output layer")))
        n = self.latent_chunks(resolution)
        if self.z_dim % n:
            problems.append((("z_dim",), (
                f"{self.z_dim} does not split into {n} equal chunks (hierarchical_z: the first linear layer and "
                f"{n - 1} blocks at resolution {resolution}); use a multiple of {n}, e.g. "
                f"{max(n, self.z_dim // n * n)}")))
        return problems

    def recipe_problems(self, recipe: Any) -> list[tuple[tuple[str, ...], str]]:
        problems = _arch.placement_problems(_arch.G_TABLE, self.feature_resolutions, self.attention_resolutions,
                                            "generator", recipe.resolution, self.backbone)
        if recipe.resolution not in _arch.G_TABLE:
            return problems
        if recipe.num_classes == 0 and unconditional(self.norm) is None:
            problems.append((("norm",), (
                f"'{self.norm.type}' needs class labels but num_classes is 0, and it has no "
                "unconditional counterpart; choose an unconditional norm such as batch")))
        problems += self.latent_problems(recipe.resolution)
        return problems + nested_problems(self, recipe, ("attention", "norm", "weight_norm"))


@GENERATOR.register(ResNetGeneratorConfig)
class ResNetGenerator(nn.Module):
    """SNGAN/SAGAN ResNet generator (32/64/128 px): z -> linear 4x4 -> up-blocks -> BN-ReLU-conv-tanh."""

    Config: ClassVar[type[ResNetGeneratorConfig]] = ResNetGeneratorConfig

    def __init__(self, cfg: ResNetGeneratorConfig | None = None, resolution: int = 32, num_classes: int = 0,
                 channels: int = 3) -> None:
        super().__init__()
        cfg = cfg or self.Config()
        for loc, msg in _arch.placement_problems(_arch.G_TABLE, cfg.feature_resolutions, cfg.attention_resolutions,
                                                 "generator", resolution, cfg.backbone):
            raise ValueError(msg if loc == ("type",) else f"{'.'.join(loc)}: {msg}")
        self.cfg, self.resolution, self.num_classes, self.channels = cfg, resolution, num_classes, channels
        self.z_dim = cfg.z_dim
        for loc, msg in cfg.latent_problems(resolution):
            raise ValueError(f"{'.'.join(loc)}: {msg}")
        block_norm = cfg.norm if num_classes > 0 else unconditional(cfg.norm)
        out_norm = plain(cfg.norm)  # the output layer: neither labels nor the latent reach it
        if block_norm is None or out_norm is None:
            raise ValueError(f"norm '{cfg.norm.type}' needs class labels and has no unconditional counterpart")
        layers = Layers(cfg.weight_norm)
        which_conv, which_linear = layers.which_conv, layers.which_linear
        self.rows = _arch.generator_rows(resolution, cfg.ch, channels, cfg.attention_resolutions)

        # the latent: z, or with hierarchical_z its first chunk, feeds the linear layer; norms modulated by
        # the latent get z or their block's chunk, after the shared class embedding (BigGAN) when there is one
        self.chunks = cfg.latent_chunks(resolution)
        self.chunk_dim = cfg.z_dim // self.chunks
        self.latent_norms = is_modulated(block_norm)
        # not weight-normed, as in BigGAN (its G's shared embedding is a plain nn.Embedding)
        self.shared = (init_orthogonal(nn.Embedding(num_classes, cfg.shared_embedding))
                       if cfg.shared_embedding and num_classes > 0 else None)
        latent_dim = self.chunk_dim + (cfg.shared_embedding if self.shared is not None else 0)
        self.conditional = num_classes > 0 and (is_conditional(block_norm) or self.shared is not None)
        which_norm = norm_builder(block_norm, num_classes, latent_dim, which_linear)

        first = self.rows[0].in_channels
        self.linear = which_linear(self.chunk_dim, first * _arch.BOTTOM_WIDTH**2)
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

    def latents(self, z: torch.Tensor, y: torch.Tensor | None) -> tuple[torch.Tensor, list[torch.Tensor | None]]:
        """The linear layer's input and, per block (stage), the vector its norms modulated by the latent get:
        ``[shared(y), z chunk]`` (None for every block when its norms are not modulated by the latent)."""
        pieces = z.split(self.chunk_dim, dim=1) if self.chunks > 1 else (z,) * (len(self.blocks) + 1)
        first, rest = pieces[0], list(pieces[1:])
        if not self.latent_norms:
            return first, [None] * len(rest)
        if self.shared is not None:
            e = self.shared(y)
            rest = [torch.cat([e, piece.to(e.dtype)], dim=1) for piece in rest]
        return first, rest

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
        z0, cond = self.latents(z, y)
        h = self.linear(z0).view(z.shape[0], -1, _arch.BOTTOM_WIDTH, _arch.BOTTOM_WIDTH)
        for stage, c in zip(self.blocks, cond):
            for block in stage:
                h = block(h, y, c) if isinstance(block, GBlock) else block(h)
        return torch.tanh(self.output_conv(F.relu(self.output_norm(h))))
