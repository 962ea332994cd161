"""ganzoo export RUN_DIR|CKPT --out DIR [--checkpoint best|last] [--standing-stats B]"""
from __future__ import annotations

import argparse
import sys

from ._options import add_checkpoint_argument, add_standing_stats_argument, check_standing_stats

NAME = "export"
HELP = "export EMA-G as generator.safetensors + recipe.yaml (load with ganzoo.training.load_generator)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("target", metavar="RUN_DIR|CKPT", help="run folder (its best or last checkpoint: --checkpoint) "
                   "or checkpoint file")
    p.add_argument("--out", required=True, help="folder to write generator.safetensors and recipe.yaml into: a new or "
                   "empty one, or an earlier export folder (replaced); never a run folder or one holding other files")
    add_checkpoint_argument(p)
    add_standing_stats_argument(p)
    p.add_argument("--device", default="auto", help="where standing statistics are computed (default: CUDA if there "
                   "is one); the export is written from the CPU")


def main(args: argparse.Namespace) -> int:
    check_standing_stats(NAME, args.standing_stats)

    from ..training.build import resolve_device
    from ..training.checkpoint import select_checkpoint
    from ..training.export import RECIPE_FILE, WEIGHTS_FILE, check_export_folder, describe, export_choice

    out = check_export_folder(args.out, "export: --out")  # before reading anything
    choice = select_checkpoint(args.target, args.checkpoint)
    if choice.warning:
        print(f"ganzoo: warning: {choice.warning}", file=sys.stderr)
    step, standing = export_choice(choice, out, args.standing_stats, resolve_device(args.device))
    print(f"wrote {out / WEIGHTS_FILE} and {out / RECIPE_FILE} from {describe(choice.path, step, choice.why, standing)}")
    return 0
