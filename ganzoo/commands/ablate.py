"""ganzoo ablate RECIPE... [--seeds 0 1] [--steps N | --minutes M] [--device D [D ...]] [--jobs K] [--deadline M]
[--expect M] [--order seeds|warm]"""
from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

from ..config import FLOAT_MAX, check_run_name
from ..errors import GanzooError, escape
from ..recipe import Recipe, load_recipe
from ..reporting import build_report, check_output, read_notes
from ._options import check_int, check_positive, check_seed
from .validate import add_set_argument

NAME = "ablate"
HELP = "run each recipe for each seed with the same budget (skipping finished runs, resuming others), then report"
DONE = "ablate-done.json"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("recipes", nargs="+", metavar="RECIPE")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1],
                   help="one run per recipe and seed (default 0 1); each seed once, 0 to 2**32-1 (the recipe's seed)")
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--steps", type=int, help="G steps per run (the same for every run)")
    budget.add_argument("--minutes", type=float, help="wall-clock minutes per run (the same for every run)")
    p.add_argument("--out", default="runs/ablate", help="folder holding one run folder per recipe and seed (named "
                   "<recipe name>-s<seed>: the recipes' names must differ)")
    p.add_argument("--report", default=None, help="report file (default: OUT/report.md)")
    p.add_argument("--title", default=None)
    p.add_argument("--notes", default=None, help="a file whose text goes under the report's title")
    p.add_argument("--jobs", type=int, default=1,
                   help="runs at once on each device (default 1). Measured on an H100 with eager SAGAN-32 steps "
                        "(launch-bound): 1, 2, 3, 4 runs at once trained 797, 2049, 2447, 2462 img/s in all, so 2-3 "
                        "pay off; 15 at once ran out of memory evaluating. With --steps, images/s in the report are "
                        "per run and shrink with --jobs")
    p.add_argument("--device", nargs="+", default=["auto"], metavar="DEVICE",
                   help="where runs train (default auto); several (--device cuda:0 cuda:1 ...) spread the runs "
                        "over them, --jobs at a time on each: a study on an 8-GPU host runs 8 runs at once, each "
                        "alone on its GPU")
    p.add_argument("--deadline", type=float, default=None, metavar="MINUTES",
                   help="a machine held for a limited time (a batch job's wall time, a lent GPU): start a run only if, "
                        "at the mean duration of the runs this call has finished, it would end within MINUTES of the "
                        "call's start (the first runs start unless --expect says otherwise); the rest are left to the "
                        "next call of the same command, which skips the finished runs")
    p.add_argument("--expect", type=float, default=None, metavar="MINUTES",
                   help="with --deadline: how long one run is expected to take (at this --jobs, e.g. as an earlier "
                        "window measured it), so that the first runs too start only if they would end in time, "
                        "before any run of this call has finished and its own mean takes over")
    p.add_argument("--order", choices=ORDERS, default="seeds",
                   help="the order runs start in. seeds (default): every recipe at the first seed, then every recipe "
                        "at the next, so a study cut short has every variant at its first seeds. warm: as many recipes "
                        "as run at once (devices x --jobs), seed by seed, then the next as many, so a recipe's later "
                        "seeds start after its first one compiled and find the compiler's on-disk cache warm (on one "
                        "machine: a run with train.compile starts ~60 s sooner on an H100)")
    add_set_argument(p)


ORDERS = ("seeds", "warm")


def run_order(recipes: list[str], seeds: list[int], order: str, places: int) -> list[tuple[str, int]]:
    """The (recipe, seed) pairs in the order their runs start (``order`` as ``--order`` says; ``places``:
    runs at once)."""
    chunk = len(recipes) if order == "seeds" else max(1, places)
    return [(path, seed) for i in range(0, len(recipes), chunk) for seed in seeds for path in recipes[i:i + chunk]]


def expected(took: list[float], expect: float | None) -> float | None:
    """Seconds a run is expected to take: the mean of ``took`` (the runs this call finished), or before any,
    ``expect`` (seconds, from ``--expect``); None when nothing says."""
    return statistics.mean(took) if took else expect


def fits(now: float, deadline: float | None, took: list[float], expect: float | None = None) -> bool:
    """Whether a run started at ``now`` should end before ``deadline`` (a time.time(); None: no deadline), judged
    by :func:`expected` (none: it starts, as nothing says otherwise)."""
    seconds = expected(took, expect)
    return deadline is None or seconds is None or now + seconds <= deadline


def _budget(args: argparse.Namespace) -> list[str]:
    if args.steps is not None:
        check_int(NAME, "--steps", args.steps, 1)
        return [f"train.steps={args.steps}"]
    if args.minutes is not None:
        check_positive(NAME, "--minutes", args.minutes, "minutes", FLOAT_MAX)  # the recipe's bound on any float
        return [f"train.time_limit_minutes={args.minutes}", "train.steps=100000000"]
    return []


def finished_steps(run_dir: Path) -> int | None:
    """The step budget a finished run (``ablate-done.json``) reached: recorded there, or for a folder written
    before ablate recorded it, its ``recipe.yaml``'s ``train.steps``; None when unknown."""
    import yaml

    try:
        done = json.loads((run_dir / DONE).read_text())
        if isinstance(done, dict) and isinstance(done.get("steps"), int):
            return done["steps"]
        recipe = yaml.safe_load((run_dir / "recipe.yaml").read_text())
        steps = recipe["train"]["steps"]
        return steps if isinstance(steps, int) else None
    except (OSError, ValueError, yaml.YAMLError, KeyError, TypeError):
        return None


def _state(run_dir: Path, steps: int | None) -> tuple[str, int | None]:
    """done, extend (finished, but at fewer steps than ``--steps`` asks now: it continues), resume or new;
    and the steps a finished run reached (None otherwise, or unknown)."""
    if (run_dir / DONE).is_file():
        reached = finished_steps(run_dir)
        return ("extend" if steps is not None and reached is not None and reached < steps else "done"), reached
    return ("resume" if (run_dir / "recipe.yaml").is_file() else "new"), None


def plan(args: argparse.Namespace, budget: list[str], places: int = 1) -> list[dict]:
    """One job per (recipe, seed): its run folder, command line and state (done / extend / resume / new), in
    ``args.order``'s order (``budget``: the overrides of :func:`_budget`; ``places``: runs at once). The
    options were checked by the caller."""
    out = Path(args.out)
    jobs = []
    sources: dict[str, str] = {}  # run name -> the recipe file that names it
    for path, seed in run_order(args.recipes, args.seeds, args.order, places):
        overrides = [*args.overrides, *budget, f"seed={seed}"]
        recipe = load_recipe(path, overrides)  # validate everything before running anything
        name = check_run_name(f"{recipe.name}-s{seed}", str(path))
        if name in sources:  # two runs in one folder: the second would fail as "another run's"
            first = sources[name]
            raise GanzooError(f"ablate: {path}: given twice" if first == str(path) else
                              f"ablate: {first} and {path} both name their runs {recipe.name!r} (folder {name}); "
                              "give one of them another name (its name: field)")
        sources[name] = str(path)
        run_dir = out / name
        cmd = ["ganzoo", "run", str(path), "--out", str(out), "--name", name]  # + --device when it starts
        cmd += [a for o in overrides for a in ("--set", o)]
        state, reached = _state(run_dir, args.steps)
        if state in ("resume", "extend"):
            cmd += ["--resume", str(run_dir)]
        jobs.append({"name": name, "dir": run_dir, "cmd": cmd, "state": state, "steps": recipe.train.steps,
                     "reached": reached})
    return jobs


def _check_seeds(seeds: list[int]) -> None:
    """``--seeds``: each a recipe seed (its bounds: the recipe's ``seed`` field), each once (one run a seed)."""
    top = next(m.le for m in Recipe.model_fields["seed"].metadata if hasattr(m, "le"))
    for seed in seeds:
        check_seed(NAME, seed, "--seeds", maximum=top)
    twice = sorted({s for s in seeds if seeds.count(s) > 1})
    if twice:
        raise GanzooError(f"ablate: --seeds: {' '.join(map(str, twice))} given more than once (each seed is one run)")


def slots(devices: list[str], jobs: int) -> list[str]:
    """The free places to start a run: each device ``jobs`` times, devices interleaved, so that runs
    spread over the devices before any device takes a second one."""
    check_int(NAME, "--jobs", jobs, 1)
    return [d for _ in range(jobs) for d in devices]


def pace(seconds: list[float], done: int, total: int, left: int, places: int) -> str:
    """Where a study stands after a run: ``done`` of ``total`` runs finished (this call's and earlier ones'),
    and, from the mean time of this call's finished runs (``seconds``) over its ``places`` (devices x jobs),
    about how long the ``left`` runs still to finish will take."""
    text = f"{done} of {total} done"
    if left and seconds:
        eta = statistics.mean(seconds) * math.ceil(left / max(1, places))
        h, m = divmod(round(eta / 60), 60)
        text += f", about {f'{h} h {m} min' if h else f'{m} min'} left at this pace"
    return text


def _start(job: dict, log_dir: Path) -> subprocess.Popen:
    log_dir.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "ganzoo", *job["cmd"][1:]]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with open(log_dir / f"{job['name']}.log", "ab") as log:  # the child keeps its own copy of the fd
        return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env)


def main(args: argparse.Namespace) -> int:
    try:
        return _main(args)
    except OSError as exc:  # a read-only or full --out, say: one line, not a traceback
        raise GanzooError(f"ablate: {exc.filename or args.out}: {exc.strerror or exc}") from None


def _seconds(flag: str, minutes: float | None) -> float | None:
    """``minutes`` (a --deadline or --expect) in seconds, or None if not given; not a positive number: one line."""
    if minutes is None:
        return None
    return 60 * check_positive(NAME, flag, minutes, "minutes")


def _main(args: argparse.Namespace) -> int:
    _check_seeds(args.seeds)  # the options first, at once, before torch is imported
    budget = _budget(args)
    free = slots(args.device, args.jobs)
    places = len(free)  # runs at once (free shrinks as runs start)
    if args.expect is not None and args.deadline is None:
        raise GanzooError("ablate: --expect needs --deadline (it judges runs against the deadline)")
    window = _seconds("--deadline", args.deadline)
    expect = _seconds("--expect", args.expect)

    from ..training.build import resolve_device
    from ..training.export import check_output as check_writable

    out = check_writable(args.out, "ablate: --out", folder=True)  # a file, or under one: one line, nothing written
    for device in args.device:  # a device this machine lacks: one line now, not a failure per run later
        resolve_device(device)
    deadline = None if window is None else time.time() + window
    jobs = plan(args, budget, places=places)
    report = Path(args.report) if args.report else out / "report.md"
    check_output(report)  # before hours of training, not after
    notes = read_notes(args.notes) if args.notes else None
    todo = [j for j in jobs if j["state"] != "done"]
    for j in jobs:
        said = {"done": "finished, skipped",
                "extend": f"finished at {j['reached']} steps, continues to {j['steps']} (--resume)"}
        print(f"{j['name']}: {said.get(j['state'], j['state'])}")
    running: list[tuple[dict, subprocess.Popen, float, str]] = []
    took: list[float] = []  # seconds of each run this call finished
    failed = []
    while todo or running:
        if todo and free and not fits(time.time(), deadline, took, expect):  # none would end in time: next call
            pace_from = "" if took else " (--expect)"
            print(f"deadline: {len(todo)} run(s) not started, as at {expected(took, expect):.0f} s a run{pace_from} "
                  f"they would end after the {args.deadline:g} minutes: {', '.join(j['name'] for j in todo)}; "
                  "rerun the same command to continue", flush=True)
            todo = []
        while todo and free:
            job, device = todo.pop(0), free.pop(0)
            job["cmd"] += ["--device", device]
            (job["dir"] / DONE).unlink(missing_ok=True)  # an extended run is finished again only when it ends
            print(escape(f"start {job['name']}: {shlex.join(job['cmd'])}"), flush=True)
            running.append((job, _start(job, out / "logs"), time.time(), device))
        time.sleep(0.5)
        for item in list(running):
            job, proc, t0, device = item
            if proc.poll() is None:
                continue
            running.remove(item)
            free.insert(0, device)  # its device takes the next run
            if proc.returncode == 0:
                cmd = shlex.join([c for c in job["cmd"] if c != "--resume" and c != str(job["dir"])])
                (job["dir"] / "command.txt").write_text(cmd + "\n")
                (job["dir"] / DONE).write_text(json.dumps({"seconds": round(time.time() - t0, 1),
                                                           "steps": job["steps"]}) + "\n")
                took.append(time.time() - t0)
                done = sum(1 for j in jobs if (j["dir"] / DONE).is_file())
                print(f"done  {job['name']} ({took[-1]:.0f} s; "
                      f"{pace(took, done, len(jobs), len(todo) + len(running), places)})", flush=True)
            else:
                failed.append(job["name"])
                print(escape(f"FAILED {job['name']} (exit {proc.returncode}; log: {out / 'logs' / (job['name'] + '.log')})"),
                      file=sys.stderr, flush=True)
    finished = [j["dir"] for j in jobs if (j["dir"] / DONE).is_file()]
    if finished:
        build_report(finished, report, args.command_line,
                     title=args.title, notes=notes)
        print(f"wrote {escape(str(report))}")
    if failed:
        raise GanzooError(f"ablate: {len(failed)} run(s) failed: {', '.join(failed)}; rerun the same command to resume")
    return 0
