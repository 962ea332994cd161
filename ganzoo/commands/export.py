"""ganzoo export RUN_DIR|CKPT --out DIR [--best]"""
from __future__ import annotations

import argparse

NAME = "export"
HELP = "export EMA-G as generator.safetensors + recipe.yaml (load with ganzoo.training.load_generator)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("target", metavar="RUN_DIR|CKPT", help="run folder (latest checkpoint) or checkpoint file")
    p.add_argument("--out", required=True, help="folder to write generator.safetensors and recipe.yaml into")
    p.add_argument("--best", action="store_true", help="from a run folder, export the best-FID checkpoint")


def main(args: argparse.Namespace) -> int:
    from ..training.export import RECIPE_FILE, WEIGHTS_FILE, export_generator

    out = export_generator(args.target, args.out, best=args.best)
    print(f"wrote {out / WEIGHTS_FILE} and {out / RECIPE_FILE}")
    return 0
