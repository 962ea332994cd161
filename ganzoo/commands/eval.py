"""ganzoo eval RUN_DIR|CKPT [--metrics fid kid] [--num-samples N] [--standing-stats B] [--checkpoint best|last]
[--truncation T]"""
from __future__ import annotations

import argparse
import json
import sys

from ._options import (add_checkpoint_argument, add_standing_stats_argument, add_truncation_argument, check_int,
                       check_seed, check_truncation, truncation_note)

NAME = "eval"
HELP = "compute sample-quality metrics (fid, kid, is) of EMA-G from a run folder, a checkpoint or an export folder"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("target", metavar="RUN_DIR|CKPT",
                   help="run folder (its best or last checkpoint: --checkpoint), checkpoint file or export folder")
    p.add_argument("--metrics", nargs="+", default=None,
                   help="metric names (default: the recipe's eval.metrics, else fid)")
    p.add_argument("--num-samples", type=int, default=None, help="generated samples (default: the recipe's eval.num_samples)")
    p.add_argument("--inception-weights", default=None,
                   help="FID Inception .pth (default: the recipe's eval.inception_weights, else $GANZOO_INCEPTION_WEIGHTS)")
    p.add_argument("--seed", type=int, default=0, help="noise seed of the generated samples, 0 to 2**63-1 (default 0)")
    add_standing_stats_argument(p)
    add_truncation_argument(p)
    add_checkpoint_argument(p)
    p.add_argument("--device", default="auto")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a line per value")


def main(args: argparse.Namespace) -> int:
    if args.num_samples is not None:
        check_int(NAME, "--num-samples", args.num_samples, 2)
    check_seed(NAME, args.seed)
    check_truncation(NAME, args.truncation)

    from ..recipe import validate
    from ..training.evaluation import Evaluator
    from ..training.export import open_generator
    from ..training.build import autocast_dtype, resolve_device

    device = resolve_device(args.device)
    # the statistics as stored: the evaluator recomputes them (the recipe's eval.standing_stats or --standing-stats)
    opened = open_generator(args.target, device, checkpoint=args.checkpoint, standing_stats=0)
    if opened.warning:
        print(f"ganzoo: warning: {opened.warning}", file=sys.stderr)
    G, recipe = opened.G, opened.recipe
    data = recipe.model_dump(mode="json")
    metrics = args.metrics or [m["type"] for m in data["eval"]["metrics"]] or ["fid"]
    data["eval"]["metrics"] = metrics
    if args.num_samples is not None:
        data["eval"]["num_samples"] = args.num_samples
    if args.inception_weights is not None:
        data["eval"]["inception_weights"] = args.inception_weights
    if args.standing_stats is not None:
        data["eval"]["standing_stats"] = args.standing_stats
    recipe = validate(data, "eval (--metrics/--num-samples/--standing-stats)")
    evaluator = Evaluator(recipe, device, autocast_dtype(recipe.train.precision, device))
    results = evaluator(G, seed=args.seed, truncation=args.truncation)
    if args.json:
        print(json.dumps({"source": opened.source, "step": opened.step, "checkpoint": opened.why,
                          "num_samples": recipe.eval.num_samples, "standing_stats": recipe.eval.standing_stats,
                          "truncation": args.truncation, **results}))
    else:
        # opened without them: the Evaluator applies the recipe's standing statistics
        print(f"# {opened._replace(standing=recipe.eval.standing_stats).describe()}, {recipe.eval.num_samples} samples"
              f"{truncation_note(args.truncation)}")
        for k, v in results.items():
            print(f"{k} {v:.6g}")
    return 0
