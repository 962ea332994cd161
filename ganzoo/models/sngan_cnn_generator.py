"""``sngan_cnn`` generator: the standard CNN generator of Miyato et al. 2018 (Table 3 (a)), and the
plain-CNN generator machinery the ``dcgan`` generator shares (``CNNGeneratorConfig``, ``CNNGenerator``).

A plain CNN generator is ``z -> linear -> reshape 4 x 4 -> norm-ReLU``, then 4x4 stride-2 transposed
convs, each followed by norm-ReLU, doubling the side; then an output layer to the image and tanh. Its
*feature maps* are the 4 x 4 map and the output of every transposed conv: those sides are what
``attention_resolutions`` may name. The slot after a feature map holds the attention block
(``slot: attention``) or, as the CNN version of SAGAN's Table-1 control (``slot: residual``), one
extra conv3x3-norm-ReLU layer of the same width.

The tables give, per image side, the width multipliers (of ``ch``) of the feature maps, smallest side
first. Layers come from ``Layers(weight_norm)`` (orthogonal init, then the weight norm), so spectral
norm is a recipe choice, as in the ResNet backbones.
"""
from __future__ import annotations

import functools
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import Field, field_validator
from torch import nn

from ..blockref import Block
from ..config import BlockConfig
from ..registry import ATTENTION, GENERATOR
from . import _arch
from ._layers import Layers
from ._norm import is_conditional, is_modulated, norm_builder, unconditional
from .resnet_generator import ResNetGeneratorConfig, Side, check_sides, nested_problems

SLOT_SIDES = "feature-map sides after which the attention slot goes (e.g. [16]; [] for none)"
SLOT_KINDS = ("what fills the slot: the attention block, or an extra conv3x3-{act} layer of the same width "
              "(the CNN version of SAGAN's Table-1 'residual' control)")


# ----------------------------------------------------------------------------- shared by the CNN backbones
def cnn_problems(cfg: BlockConfig, what: str, resolution: int) -> list[tuple[tuple[str, ...], str]]:
    """Placement problems of a plain CNN backbone's config (``what``: generator or discriminator) at image
    side ``resolution``, one line each, as ``_arch.placement_problems`` gives the ResNets'."""
    backbone, table, wanted = cfg.backbone, cfg.table, cfg.attention_resolutions
    sides = cfg.feature_resolutions(resolution)
    if resolution not in table:
        return [(("type",), f"the {backbone} {what} has architectures for resolutions "
                            f"{', '.join(map(str, sorted(table)))}, not {resolution}")]
    bad = [r for r in wanted if r not in sides]
    if not bad:
        return []
    verb = "is not a feature-map side" if len(bad) == 1 else "are not feature-map sides"
    return [(("attention_resolutions",), f"{', '.join(map(str, bad))} {verb} of the {backbone} {what} at "
                                         f"resolution {resolution} (choose from {', '.join(map(str, sides))})")]


class CNNBackbone(nn.Module):
    """The constructor the plain CNN backbones share: ``cfg`` (``Config``'s defaults when None), its
    placement checked (the first problem as a one-line ValueError naming its field), the build
    arguments stored, then ``build(cfg, layers)`` makes the network's layers."""

    Config: ClassVar[type[BlockConfig]]  # the backbone's config class
    what: ClassVar[str] = "generator"

    def __init__(self, cfg: BlockConfig | None = None, resolution: int = 32, num_classes: int = 0,
                 channels: int = 3) -> None:
        super().__init__()
        cfg = cfg or self.Config()
        for loc, msg in cnn_problems(cfg, self.what, resolution):
            raise ValueError(f"{'.'.join(loc)}: {msg}")
        self.cfg, self.resolution, self.num_classes, self.channels = cfg, resolution, num_classes, channels
        self.build(cfg, Layers(cfg.weight_norm))

    def build(self, cfg: BlockConfig, layers: Layers) -> None:
        """Make the network's layers from ``cfg`` with the factories ``layers`` (each backbone defines it)."""
        raise NotImplementedError(f"{type(self).__name__} must define build(cfg, layers)")

    def feature_resolutions(self) -> list[int]:
        """Sides of this network's feature maps (its config's ``feature_resolutions`` at its resolution)."""
        return self.cfg.feature_resolutions(self.resolution)


def check_labels(module: nn.Module, batch: int, y: torch.Tensor | None) -> torch.Tensor | None:
    """``y`` for a backbone's forward: required with shape ``[batch]`` iff it is conditional, else None."""
    if not module.conditional:
        return None  # unconditional: labels, if any, are ignored
    if y is None or y.shape != (batch,):
        got = "none" if y is None else f"shape {list(y.shape)}"
        raise ValueError(f"this {module.num_classes}-class conditional model needs labels y of shape "
                         f"[{batch}], got {got}")
    return y


class ConvNormAct(nn.Module):
    """``act(norm(conv(x), y))``: one feature map of a plain CNN backbone (``slope`` 0: ReLU, else LeakyReLU)."""

    def __init__(self, conv: nn.Module, norm: nn.Module, slope: float = 0.0) -> None:
        super().__init__()
        self.conv, self.norm, self.slope = conv, norm, slope

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None, z: torch.Tensor | None = None) -> torch.Tensor:
        """``y``: class labels for the norm; ``z``: G's latent for a norm modulated by it, else None."""
        h = self.norm(self.conv(x), *((y,) if z is None else (y, z)))
        return F.leaky_relu(h, self.slope) if self.slope else F.relu(h)


class Project(nn.Module):
    """``linear(z)`` reshaped to ``[B, channels, side, side]``."""

    def __init__(self, linear: nn.Module, channels: int, side: int) -> None:
        super().__init__()
        self.linear, self.shape = linear, (channels, side, side)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.linear(z).view(z.shape[0], *self.shape)


def run_stages(stages: nn.ModuleList, h: torch.Tensor, y: torch.Tensor | None,
               z: torch.Tensor | None = None) -> torch.Tensor:
    """Each stage's modules in order: feature layers get the labels (and ``z``, the latent for norms
    modulated by it, None otherwise), attention blocks do not."""
    for stage in stages:
        for m in stage:
            h = m(h, y, z) if isinstance(m, ConvNormAct) else m(h)
    return h


def slot_block(cfg: BlockConfig, channels: int, extra_layer) -> nn.Module:
    """What fills a slot: the attention block, or (``slot: residual``) ``extra_layer(channels)``."""
    return ATTENTION.build(cfg.attention, channels) if cfg.slot == "attention" else extra_layer(channels)


def deconv4x4(layers: Layers, in_channels: int, out_channels: int) -> nn.Module:
    """A 4x4 stride-2 transposed conv (doubles the side), initialised and weight-normed by ``layers``."""
    return layers._make(nn.ConvTranspose2d(in_channels, out_channels, 4, stride=2, padding=1))


# ----------------------------------------------------------------------------- the generator
class CNNGeneratorConfig(BlockConfig):
    """Fields of a plain CNN generator (subclassed per backbone, which sets the table and the tag)."""

    backbone: ClassVar[str] = "cnn"
    #: image side -> width multipliers of the feature maps (4 x 4 first, side doubling each)
    table: ClassVar[dict[int, tuple[int, ...]]] = {}
    #: "conv3x3": a 3x3 conv after the last feature map (same side); "deconv": a 4x4 stride-2 transposed conv
    to_image: ClassVar[str] = "conv3x3"

    ch: int = Field(64, ge=1, le=1024, description="base width: feature maps have multiples of ch channels")
    z_dim: int = Field(128, ge=1, le=4096, description="size of the latent vector z")
    attention: Block("attention") = ResNetGeneratorConfig.model_fields["attention"]
    attention_resolutions: list[Side] = Field([], description=SLOT_SIDES)
    slot: Literal["attention", "residual"] = Field("attention", description=SLOT_KINDS.format(act="norm-ReLU"))
    norm: Block("norm") = Field("conditional_batch", description=(
        "feature norm after the linear layer and every conv but the output one; without class labels "
        "(num_classes 0) its unconditional counterpart is used (conditional_batch -> batch); a norm modulated "
        "by the latent (self_modulated_batch) gets z"))
    weight_norm: Block("weight_norm") = ResNetGeneratorConfig.model_fields["weight_norm"]

    _sides = field_validator("attention_resolutions")(check_sides)

    @classmethod
    def for_tests(cls) -> "CNNGeneratorConfig":
        """A tiny config with an attention slot, for the property checks (``ganzoo.testing.models``)."""
        return cls(ch=8, z_dim=16, attention_resolutions=[16])

    def feature_resolutions(self, resolution: int) -> list[int]:
        """Sides of the feature maps at image side ``resolution`` (4, 8, ...)."""
        mults = self.table.get(resolution, ())
        return [_arch.BOTTOM_WIDTH * 2**i for i in range(len(mults))]

    def recipe_problems(self, recipe: Any) -> list[tuple[tuple[str, ...], str]]:
        problems = cnn_problems(self, "generator", recipe.resolution)
        if recipe.resolution not in self.table:
            return problems
        labelless = recipe.num_classes == 0 and unconditional(self.norm) is None
        problems += [(("norm",), f"'{self.norm.type}' needs class labels but num_classes is 0, and it has no "
                                 "unconditional counterpart; choose an unconditional norm such as batch")] * labelless
        return problems + nested_problems(self, recipe, ("attention", "norm", "weight_norm"))


class CNNGenerator(CNNBackbone):
    """A plain CNN generator built from its config's table (see the module docstring)."""

    what: ClassVar[str] = "generator"

    def build(self, cfg: CNNGeneratorConfig, layers: Layers) -> None:
        resolution, num_classes, channels = self.resolution, self.num_classes, self.channels
        self.z_dim = cfg.z_dim
        norm_cfg = cfg.norm if num_classes > 0 else unconditional(cfg.norm)
        if norm_cfg is None:
            raise ValueError(f"norm '{cfg.norm.type}' needs class labels and has no unconditional counterpart")
        self.conditional = num_classes > 0 and is_conditional(norm_cfg)
        self.latent_norms = is_modulated(norm_cfg)  # self-modulation: every norm gets z
        which_norm = norm_builder(norm_cfg, num_classes, cfg.z_dim, layers.which_linear)
        extra = lambda c: ConvNormAct(layers.which_conv(c, c), which_norm(c))  # noqa: E731
        widths = [m * cfg.ch for m in cfg.table[resolution]]
        sides = self.feature_resolutions()
        self.stages = nn.ModuleList()
        for i, (c, side) in enumerate(zip(widths, sides)):
            first = Project(layers.which_linear(cfg.z_dim, c * side * side), c, side) if i == 0 else None
            stage = nn.ModuleList([ConvNormAct(first or deconv4x4(layers, widths[i - 1], c), which_norm(c))])
            if side in cfg.attention_resolutions:
                stage.append(slot_block(cfg, c, extra))
            self.stages.append(stage)
        to_image = layers.which_conv if cfg.to_image == "conv3x3" else functools.partial(deconv4x4, layers)
        self.output_conv = to_image(widths[-1], channels)

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """``z [B, z_dim]``, ``y [B]`` class indices (required iff conditional) -> images in [-1, 1]."""
        if z.dim() != 2 or z.shape[1] != self.z_dim:
            raise ValueError(f"z must have shape [B, {self.z_dim}], got {tuple(z.shape)}")
        h = run_stages(self.stages, z, check_labels(self, z.shape[0], y), z if self.latent_norms else None)
        return torch.tanh(self.output_conv(h))


class SNGANCNNGeneratorConfig(CNNGeneratorConfig):
    """SNGAN's standard CNN generator (Miyato et al. 2018, Table 3 (a)): linear 4x4 -> three 4x4 stride-2
    transposed convs with norm-ReLU -> conv3x3 -> tanh."""

    backbone: ClassVar[str] = "sngan_cnn"
    # Table 3 (a) for CIFAR-10, ch = 64: 4x4x512 -> 8x8x256 -> 16x16x128 -> 32x32x64 -> conv3x3 to the image
    table: ClassVar[dict[int, tuple[int, ...]]] = {32: (8, 4, 2, 1)}
    to_image: ClassVar[str] = "conv3x3"

    type: Literal["sngan_cnn"] = "sngan_cnn"


@GENERATOR.register(SNGANCNNGeneratorConfig)
class SNGANCNNGenerator(CNNGenerator):
    """SNGAN standard CNN generator (Miyato et al. 2018, Table 3 (a)), 32 px: z -> linear 4x4 -> 3 deconvs -> conv3x3-tanh."""

    Config = SNGANCNNGeneratorConfig
