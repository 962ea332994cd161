"""ganzoo run RECIPE [--set a.b=v] [--out runs/] [--name N] [--device auto] [--resume RUN_DIR] [--force]"""
from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

from ..errors import GanzooError
from ..recipe import load_recipe
from .validate import add_set_argument

NAME = "run"
HELP = "train a recipe into a run folder (recipe, metrics, TensorBoard, samples, checkpoints); --resume continues one"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("recipe", nargs="?", metavar="RECIPE", help="recipe file (optional with --resume)")
    add_set_argument(p)
    p.add_argument("--out", default="runs", help="folder holding run folders (default: runs/)")
    p.add_argument("--name", default=None, help="run folder name (default: the recipe's name)")
    p.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda or cuda:N")
    p.add_argument("--resume", metavar="RUN_DIR", default=None,
                   help="continue the run in RUN_DIR from its latest checkpoint (RECIPE, if given, must match "
                        "it except train.steps, time limit, logging/sampling/checkpoint intervals and eval)")
    p.add_argument("--force", action="store_true", help="replace an existing run folder of the same name")
    bar = p.add_mutually_exclusive_group()
    bar.add_argument("--progress", dest="progress", action="store_true", default=None,
                     help="show a progress bar (default: when stderr is a terminal)")
    bar.add_argument("--no-progress", dest="progress", action="store_false")


def main(args: argparse.Namespace) -> int:
    from ..training import distributed

    try:
        return _main(args)
    except RuntimeError as exc:  # under torchrun: a peer died or hung inside DDP's own collectives
        if distributed.launched() and distributed.is_collective_error(exc):
            raise distributed.collective_error(exc, "training step") from None
        raise
    finally:
        distributed.teardown()  # torchrun: leave the process group (nothing otherwise)


def _main(args: argparse.Namespace) -> int:
    from ..training import train
    from ..training.distributed import is_main_process
    from ..training.rundir import check_folder_name

    if args.resume and args.force:
        raise GanzooError("run: --resume and --force exclude each other")
    if args.resume:
        run_dir = Path(args.resume)
        # without RECIPE the run's own recipe.yaml (with --set) is resolved by train, once
        recipe = load_recipe(args.recipe, args.overrides) if args.recipe else None
        result = train(recipe, run_dir, args.device, resume=True, progress=args.progress,
                       source=args.recipe or str(run_dir / "recipe.yaml"), overrides=tuple(args.overrides))
    else:
        if not args.recipe:
            raise GanzooError("run: give a RECIPE to train, or --resume RUN_DIR to continue a run")
        recipe = load_recipe(args.recipe, args.overrides)
        name = check_folder_name(args.name, "--name", "") if args.name else check_folder_name(recipe.name, args.recipe)
        run_dir = Path(args.out) / name
        result = train(recipe, run_dir, args.device, overwrite=args.force, progress=args.progress,
                       source=args.recipe)

    where = f"checkpoint {result.checkpoint}" if result.checkpoint else "no checkpoint"
    say = print if is_main_process() else (lambda *a, **k: None)  # torchrun: rank 0 reports
    if result.status == "interrupted":
        name = signal.Signals(result.signal).name if result.signal else "a signal"
        say(f"ganzoo: stopped by {name} at step {result.step}; {where}; continue with: "
              f"ganzoo run --resume {run_dir}", file=sys.stderr)
        return 128 + (result.signal or 2)
    evals = "  ".join(f"{k} {v:.4g}" for k, v in result.eval.items())
    evals = f"; {evals}" if evals else ""
    if result.status == "time_limit":
        say(f"ganzoo: time limit reached at step {result.step} of {result.recipe.train.steps}; {where}{evals}; "
              f"continue with: ganzoo run --resume {run_dir}")
        return 0
    if result.status == "stopped":
        say(f"ganzoo: stopped at step {result.step}; {where}", file=sys.stderr)
        return 0
    say(f"ganzoo: finished {result.step} steps in {run_dir}; {where}{evals}")
    return 0
