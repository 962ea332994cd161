"""ganzoo schema"""
from __future__ import annotations

import argparse
import json

from ..recipe import recipe_json_schema

NAME = "schema"
HELP = "print the JSON schema of recipes, with every registered block (plugins included)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--indent", type=int, default=2)


def main(args: argparse.Namespace) -> int:
    print(json.dumps(recipe_json_schema(), indent=args.indent, sort_keys=False))
    return 0
