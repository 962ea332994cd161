"""ganzoo validate RECIPE... [--set a.b=v] [--print]"""
from __future__ import annotations

import argparse
import sys

from ..config import check_run_name
from ..errors import RecipeError, escape, terminal_lines
from ..recipe import dump_recipe, load_recipe

NAME = "validate"
HELP = "check recipes (YAML, fields, block names, cross-field rules); --print shows the resolved recipe"


def add_set_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="PATH=VALUE",
        help="override a recipe field, e.g. --set train.steps=100 (repeatable; VALUE is YAML)",
    )


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("recipes", nargs="+", metavar="RECIPE")
    add_set_argument(p)
    p.add_argument("--print", action="store_true", help="print each fully resolved recipe")


def main(args: argparse.Namespace) -> int:
    bad = 0
    for path in args.recipes:
        try:
            recipe = load_recipe(path, args.overrides)
            check_run_name(recipe.name, path)  # what `ganzoo run` would refuse as the run folder's name
            from ..training.build import check_forward

            check_forward(recipe, path)  # and networks that give the wrong shapes (meta device: instant)
        except RecipeError as exc:
            bad += 1
            print("\n".join(terminal_lines(exc)), file=sys.stderr)
            continue
        if args.print:
            print(f"# {escape(path)}\n{dump_recipe(recipe)}")
        else:
            print(f"{escape(path)}: ok ({recipe.name})")
    return 2 if bad else 0
