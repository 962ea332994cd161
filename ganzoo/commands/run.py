"""ganzoo run RECIPE [--set a.b=v] [--out runs/] [--name N] [--device auto] [--resume RUN_DIR] [--force]"""
from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

from ..errors import GanzooError, escape
from ..recipe import load_recipe
from ..training.rundir import RESUMABLE_FIELDS  # no torch: the help stays instant
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
                        "it except " + ", ".join(".".join(f) for f in RESUMABLE_FIELDS) + ")")
    p.add_argument("--force", action="store_true", help="replace an existing run folder of the same name")
    p.add_argument("--threads", type=int, default=None, metavar="N",
                   help="CPU threads for training on the CPU (default: OMP_NUM_THREADS if set, else one per core, "
                        "fewer when the CPU is already busy: see docs/training.md)")
    bar = p.add_mutually_exclusive_group()
    bar.add_argument("--progress", dest="progress", action="store_true", default=None,
                     help="show a progress bar (default: when stderr is a terminal)")
    bar.add_argument("--no-progress", dest="progress", action="store_false")


def main(args: argparse.Namespace) -> int:
    if not args.recipe and not args.resume:  # before anything imports torch: an argument error is instant
        raise GanzooError("run: give a RECIPE to train, or --resume RUN_DIR to continue a run")
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
    if args.threads is not None and args.threads < 1:
        raise GanzooError(f"run: --threads: must be at least 1, got {args.threads}")
    if args.resume:
        run_dir = Path(args.resume)
        # without RECIPE the run's own recipe.yaml (with --set) is resolved by train, once
        recipe = load_recipe(args.recipe, args.overrides) if args.recipe else None
        set_cpu_threads(args.threads, args.device)
        result = train(recipe, run_dir, args.device, resume=True, progress=args.progress,
                       source=args.recipe or str(run_dir / "recipe.yaml"), overrides=tuple(args.overrides))
    else:
        recipe = load_recipe(args.recipe, args.overrides)
        name = (check_folder_name(recipe.name, args.recipe) if args.name is None
                else check_folder_name(args.name, "--name", ""))
        run_dir = Path(args.out) / name
        set_cpu_threads(args.threads, args.device)
        result = train(recipe, run_dir, args.device, overwrite=args.force, progress=args.progress,
                       source=args.recipe)

    where = f"checkpoint {escape(str(result.checkpoint))}" if result.checkpoint else "no checkpoint"
    run_dir = escape(str(run_dir))
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
    if result.status == "collapsed":  # train.collapse.early_stop
        say(f"ganzoo: stopped at step {result.step}: the run collapsed (train.collapse); {where}{evals}; the "
            f"best-FID checkpoint is kept (ganzoo sample/eval/export {run_dir} use it)", file=sys.stderr)
        return 0
    say(f"ganzoo: finished {result.step} steps in {run_dir}; {where}{evals}")
    return 0


def set_cpu_threads(threads: int | None, device: str) -> None:
    """Intra-op threads for a CPU run: ``--threads``, else OMP_NUM_THREADS (PyTorch reads it), else
    PyTorch's default (one per core) unless the CPU is busy now (:func:`busy_cores`): then the cores
    left over, rounded, at least one. Measured on 2 cores (docs/training.md):
    idle, two threads ran the quickstart 1.7x faster than one; with other work running, two threads
    were 4x slower than one. Nothing changes for CUDA runs."""
    if str(device).split(":")[0] not in ("cpu", "auto"):
        return
    import torch

    if str(device) == "auto" and torch.cuda.is_available():
        return
    if threads is None:
        if os.environ.get("OMP_NUM_THREADS"):
            return
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        threads = threads_for(cores, busy_cores(cores))
        if threads is None:
            return
    torch.set_num_threads(threads)


def threads_for(cores: int, busy: float) -> int | None:
    """The thread count for ``cores`` cores of which ``busy`` are in use by others: the cores left over,
    rounded, at least one; ``None`` (PyTorch's default, one per core) when that is all of them."""
    left = max(1, min(cores, round(cores - busy)))
    return None if left == cores else left


def _cpu_times() -> tuple[int, int] | None:
    """(idle, total) jiffies of all CPUs from /proc/stat; None where there is no /proc/stat."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    if len(fields) < 4:
        return None
    return fields[3] + (fields[4] if len(fields) > 4 else 0), sum(fields[:8])  # idle + iowait; no guest time


def busy_cores(cores: int, sample_s: float = 0.3) -> float:
    """How many of ``cores`` other processes keep busy *now*: CPU use over ``sample_s`` seconds from
    /proc/stat (this process is idle meanwhile), scaled to this process's cores. Not the load average:
    its minute-long memory made a run started right after another one take one thread on an idle 2-core
    machine and train 1.7x slower (2026-12-05). Without /proc/stat, the 1-minute load average."""
    import time

    first = _cpu_times()
    if first is None:
        return min(float(cores), os.getloadavg()[0]) if hasattr(os, "getloadavg") else 0.0
    time.sleep(sample_s)
    second = _cpu_times()
    if second is None or second[1] <= first[1]:
        return 0.0
    idle, total = second[0] - first[0], second[1] - first[1]
    all_cores = os.cpu_count() or cores
    return max(0.0, min(float(cores), (1.0 - idle / total) * all_cores))
