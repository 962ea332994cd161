"""Per-resolution architecture tables of the ResNet backbones, in the style of BigGAN-PyTorch.

For each output resolution a table gives, per residual block, the input and output channels as
multiples of ``ch``, whether the block up- (G) or down-samples (D), and the side of the feature map
it produces. Attention is a column filled in from the recipe: a block gets the attention block (or,
for the paper's ``residual`` control, an extra residual block) right after it when its feature
side is listed in ``attention_resolutions``. When several blocks produce the same side (D's last
blocks), the slot goes after the first of them.

G starts from a linear layer reshaped to ``4 x 4`` (its in-channels are the first block's) and
ends with BN-ReLU-conv3x3-tanh. D's first block reads the image (``in`` column: image channels),
then D ends with ReLU, a sum over positions, a linear layer and the projection term.

The 128 tables are SAGAN's (and BigGAN's): G 1024-1024-512-256-128-64 channels for ch = 64, D
64-128-256-512-1024-1024. The 64 tables drop G's last and D's first block. The 32 tables follow
SNGAN's CIFAR-10 ResNets (G three up-blocks of width 4 ch); D is SAGAN's widening D cut to four
blocks whose first block keeps 32 x 32, so that D, like G, has a 32 x 32 feature map and the
paper's feat8/feat16/feat32 positions exist in both networks.
"""
from __future__ import annotations

from dataclasses import dataclass

BOTTOM_WIDTH = 4  # G's first feature map is 4 x 4

#: resolution -> (in multipliers, out multipliers, feature side after each block); G up-samples every block
G_TABLE: dict[int, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]] = {
    32: ((4, 4, 4), (4, 4, 4), (8, 16, 32)),
    64: ((16, 16, 8, 4), (16, 8, 4, 2), (8, 16, 32, 64)),
    128: ((16, 16, 8, 4, 2), (16, 8, 4, 2, 1), (8, 16, 32, 64, 128)),
}

#: resolution -> (in multipliers (0: the image), out multipliers, down-sample?, feature side after each block)
D_TABLE: dict[int, tuple[tuple[int, ...], tuple[int, ...], tuple[bool, ...], tuple[int, ...]]] = {
    32: ((0, 1, 2, 4), (1, 2, 4, 4), (False, True, True, False), (32, 16, 8, 8)),
    64: ((0, 1, 2, 4, 8), (1, 2, 4, 8, 16), (True, True, True, True, False), (32, 16, 8, 4, 4)),
    128: ((0, 1, 2, 4, 8, 16), (1, 2, 4, 8, 16, 16), (True, True, True, True, True, False), (64, 32, 16, 8, 4, 4)),
}

RESOLUTIONS = tuple(sorted(G_TABLE))


@dataclass(frozen=True)
class Row:
    """One residual block of a table, with the recipe's attention column filled in."""

    in_channels: int
    out_channels: int
    resample: bool  # G: 2x nearest up-sampling; D: 2x2 average pooling
    resolution: int  # side of the feature map the block produces
    slot: bool  # the attention (or residual-control) block follows this one


def _slots(resolutions: tuple[int, ...], wanted: list[int] | tuple[int, ...]) -> list[bool]:
    out, used = [], set()
    for r in resolutions:
        out.append(r in wanted and r not in used)
        used.add(r)
    return out


def unsupported(resolution: int, subject: str = "the resnet backbones have") -> str:
    sides = ", ".join(str(r) for r in RESOLUTIONS[:-1]) + f" and {RESOLUTIONS[-1]}"
    return f"{subject} architectures for resolutions {sides}, not {resolution}"


def generator_rows(resolution: int, ch: int, image_channels: int, attention_resolutions=()) -> list[Row]:
    """G's table at ``resolution`` with widths ``mult * ch``."""
    if resolution not in G_TABLE:
        raise ValueError(unsupported(resolution))
    ins, outs, sides = G_TABLE[resolution]
    slots = _slots(sides, attention_resolutions)
    return [Row(i * ch, o * ch, True, s, a) for i, o, s, a in zip(ins, outs, sides, slots)]


def discriminator_rows(resolution: int, ch: int, image_channels: int, attention_resolutions=()) -> list[Row]:
    """D's table at ``resolution`` with widths ``mult * ch`` (first block reads ``image_channels``)."""
    if resolution not in D_TABLE:
        raise ValueError(unsupported(resolution))
    ins, outs, downs, sides = D_TABLE[resolution]
    slots = _slots(sides, attention_resolutions)
    return [
        Row(i * ch if i else image_channels, o * ch, d, s, a)
        for i, o, d, s, a in zip(ins, outs, downs, sides, slots)
    ]


def generator_sides(resolution: int) -> list[int]:
    return list(G_TABLE[resolution][2]) if resolution in G_TABLE else []


def discriminator_sides(resolution: int) -> list[int]:
    return sorted(set(D_TABLE[resolution][3]), reverse=True) if resolution in D_TABLE else []


def placement_problems(table: dict, sides_of, attention_resolutions: list[int], what: str, resolution: int,
                       backbone: str = "resnet"):
    """Problems of a backbone at image side ``resolution``: ``[(("type",), ...)]`` when ``table`` has no
    architecture for it (nothing else can be checked then), else one problem per misplaced slot list."""
    if resolution not in table:
        subject = "the resnet backbones have" if backbone == "resnet" else f"the {backbone} {what} has"
        return [(("type",), unsupported(resolution, subject))]
    sides = sides_of(resolution)
    bad = [r for r in attention_resolutions if r not in sides]
    return [(("attention_resolutions",), not_sides(bad, sides, what, resolution, backbone))] if bad else []


def not_sides(bad: list[int], sides: list[int], what: str, resolution: int, backbone: str = "resnet") -> str:
    """"4 is not a feature-map side of the resnet generator at resolution 32 (choose from 8, 16, 32)"."""
    verb = "is not a feature-map side" if len(bad) == 1 else "are not feature-map sides"
    return (f"{', '.join(map(str, bad))} {verb} of the {backbone} {what} at resolution {resolution} "
            f"(choose from {', '.join(map(str, sides))})")
