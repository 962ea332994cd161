"""Print the architecture tables and the parameter counts of ``docs/models.md`` (markdown).

    .venv/bin/python -m ganzoo.models._table

The tables come from ``_arch.py``; the counts from building the recipes' networks (``RECIPES``: the
SAGAN recipes and BigGAN's G on the SAGAN recipe) with the registered blocks, so the docs
can be checked against the code (``tests/test_models.py`` does).
"""
from __future__ import annotations

from pathlib import Path

import torch

from ..recipe import load_recipe
from ..registry import DISCRIMINATOR, GENERATOR
from . import _arch
from ._layers import count_parameters

RECIPES = ("recipes/sagan.yaml", "recipes/imagenet128/sagan.yaml", "recipes/variants/biggan-g.yaml")
REPO = Path(__file__).resolve().parents[2]


def _mults(ms: tuple[int, ...]) -> str:
    return " ".join("img" if m == 0 else f"{m}" for m in ms)


def arch_tables() -> str:
    lines = ["| net | resolution | in (x ch) | out (x ch) | up/down | feature side after each block |",
             "|---|---|---|---|---|---|"]
    for res, (ins, outs, sides) in sorted(_arch.G_TABLE.items()):
        lines.append(f"| G | {res} | {_mults(ins)} | {_mults(outs)} | up every block | "
                     f"{' '.join(map(str, sides))} |")
    for res, (ins, outs, downs, sides) in sorted(_arch.D_TABLE.items()):
        ud = " ".join("down" if d else "-" for d in downs)
        lines.append(f"| D | {res} | {_mults(ins)} | {_mults(outs)} | {ud} | {' '.join(map(str, sides))} |")
    return "\n".join(lines)


def count_table() -> str:
    lines = ["| recipe | G parameters | D parameters |", "|---|---|---|"]
    torch.manual_seed(0)
    for rel in RECIPES:
        r = load_recipe(REPO / rel, ["data.root=unused"])
        with torch.device("meta"):
            G = GENERATOR.build(r.generator, r.resolution, r.num_classes, r.channels)
            D = DISCRIMINATOR.build(r.discriminator, r.resolution, r.num_classes, r.channels)
        lines.append(f"| `{rel}` | {count_parameters(G):,} | {count_parameters(D):,} |")
    return "\n".join(lines)


def main() -> None:
    print(arch_tables())
    print()
    print(count_table())


if __name__ == "__main__":
    main()
