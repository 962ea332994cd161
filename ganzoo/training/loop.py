"""The run driver: :func:`train`, reading top to bottom like the algorithm.

A run is one or more sessions. Each builds everything once (:mod:`.build`, after the options'
rules are resolved by :class:`~ganzoo.training.plan.Plan`), loads its starting state (the latest
checkpoint when resuming), then loops: one :class:`~ganzoo.training.step.TrainStep` per G step
(``d_steps`` D updates, one G update, the EMA update), then the hooks (:mod:`.hooks`: statistics and
NaN checks, log lines, samples, evaluation and the best checkpoint, checkpoints) and the stop
conditions (:mod:`.stops`). A divergence with ``train.on_divergence: rollback`` starts another
session from the last good checkpoint with lower learning rates: a loop, not a recursion.

Networks run under bf16 autocast on CUDA (``precision: auto``), fp32 on CPU; losses are always
computed in fp32. Logged scalars stay on the device and are read every ``log_every`` steps (every
step on CPU, where reading is free), so a CUDA step never waits for the host.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..atomic import remove_stale_temps
from ..errors import GanzooError
from ..recipe import Recipe
from . import distributed, rundir
from .build import Networks, autocast_dtype, build, check_forward, resolve_device
from .checkpoint import CKPT_DIR, latest_checkpoint, load_regularizer_state, restore_rng
from .evaluation import Evaluator, check_eval_ready
from .checkpoint import read_best
from .collapse import CollapseMonitor
from .hooks import Checkpoints, Clock, CollapseWatch, Evaluation, Progress, RunState, Samples, Stats
from .logs import read_metrics
from .logs import RunLog
from .outcome import EXIT_DIVERGED, TrainingDiverged, TrainResult
from .plan import Plan
from .preflight import checkpoint_bytes, preflight
from .step import TrainStep
from .stops import StopSignals, Stops

# autocast_dtype is imported from here by ganzoo/commands/{eval,sample}.py
__all__ = ["EXIT_DIVERGED", "TrainResult", "TrainingDiverged", "autocast_dtype", "resolve_device", "train"]


def train(
    recipe: Recipe | None,
    run_dir: str | Path,
    device: str | torch.device = "auto",
    resume: bool = False,
    *,
    overwrite: bool = False,
    stop_after: int | None = None,
    progress: bool | None = None,
    handle_signals: bool = True,
    source: str = "recipe",
    overrides: tuple[str, ...] = (),
) -> TrainResult:
    """Train ``recipe`` in ``run_dir``.

    ``resume=True`` continues the run in ``run_dir`` from its latest checkpoint (``recipe`` may be
    None: the run's own ``recipe.yaml`` is used, with ``overrides``; otherwise it may differ only in
    the fields of :data:`ganzoo.training.rundir.RESUMABLE_FIELDS`). Without ``resume`` the folder must
    be absent or empty, or an old run folder with ``overwrite=True``. ``stop_after`` stops (with a
    checkpoint) once that many G steps are done, as an interruption would. ``progress`` shows a tqdm
    bar (default: when stderr is a terminal). Raises :class:`TrainingDiverged` on NaN/inf, unless
    ``train.on_divergence: rollback`` continues from the last good checkpoint with lower learning rates.
    """
    run_dir, device = Path(run_dir), resolve_device(device)
    recipe = open_recipe(run_dir, recipe, resume, overwrite, overrides)
    tc, ec = recipe.train, recipe.eval
    rollback: Rollback | None = None
    while True:  # one session, and one more after each rollback
        # ---- 1. every option rule, before anything is built or written
        do_eval = check_eval_ready(recipe, source)  # missing Inception weights fail here, before any file
        world, launched = distributed.world()
        plan = Plan.resolve(recipe, device, world, launched, source)
        check_forward(recipe, source)  # G and D give the shapes the loop needs (meta device: no state)
        dist = distributed.setup(device)  # torchrun: join the process group, take this rank's device
        do_eval = dist.broadcast(do_eval)  # rank 0 evaluates; the others follow its decision
        if plan.eager_d and dist.is_main:  # train.compile without compiling D: said, not silent
            print(f"ganzoo: train.compile: {plan.eager_d}", file=sys.stderr)

        # ---- 2. build once; the starting state; the strategy; the step
        nets, data = build(recipe, plan, dist.device, source)
        state = restore(nets, data, latest_checkpoint(run_dir) if resume else None, dist.device, rollback)
        strategy = distributed.strategy(dist, plan, nets.G, nets.D, data, recipe.seed, state.step)
        train_step = TrainStep(recipe, nets, data, plan, strategy)  # ganzoo/training/step.py

        # ---- 3. the run folder (recipe.yaml first) and the hooks
        log = open_folder(run_dir, recipe, nets, dist, resume, overwrite, state.step)
        state.best = read_best(run_dir, strict=False)
        clock = Clock(state.wall_before)
        watch = CollapseWatch(collapse_monitor(tc, run_dir if resume else None, state.collapse), dist.is_main)
        stats = Stats(tc, dist, plan.check_every, plan.penalty, log, clock, state.step, watch)
        ckpts = Checkpoints(run_dir, recipe, nets, data, dist, stats, clock, log)
        sample_net = nets.G_ema if nets.G_ema is not None else nets.G
        samples = Samples(sample_net, recipe, run_dir / rundir.SAMPLES_DIR, dist, log, clock, plan)
        bar = Progress(recipe, state.step, sys.stderr.isatty() if progress is None else progress, dist.is_main)
        evaluation = Evaluation(Evaluator(recipe, dist.device, plan.amp), sample_net, recipe, dist, log, ckpts, clock,
                                bar.enabled)
        if state.step >= tc.steps:
            print(f"ganzoo: {run_dir} already finished ({state.step} of {tc.steps} steps)", file=sys.stderr)

        # ---- 4. the loop
        status, results = None, {}
        try:
            with StopSignals(handle_signals) as signals:
                stops = Stops(tc.steps, stop_after, tc.time_limit_minutes, dist, signals, clock.start)
                while state.step < stops.stop_at:
                    row = train_step(state.step)  # [STAT_NAMES] on the device; nothing read back here
                    state.step += 1
                    stats.append(row, state)  # NaN/inf checks: TrainingDiverged
                    bar.update()
                    end = stops.check(state.step)  # the last step (or the time limit): final hooks
                    if stats.due(state.step, end):  # every log_every steps, the first step, and by time
                        bar.show(state.step, stats.write_line(state))
                    if state.step % tc.checkpoint_every == 0 or end:  # before the evaluation: a signal
                        ckpts.write_new(state)  # during it loses the evaluation only
                    if do_eval and evaluation.due(state.step, end):
                        results = evaluation.run(state, stops.interrupted) or results
                    if (tc.sample_every and state.step % tc.sample_every == 0) or end:  # with the
                        samples.write(state.step, evaluation.standing_at(state.step))  # evaluated statistics
                    # finished, time limit, a signal, or a collapse with train.collapse.early_stop
                    status = stops.status(state.step) or watch.stop_status()
                    if status is not None:
                        break
                status = status or stops.after_loop(state.step)
                if stats.window:  # interrupted or stopped: log the partial window
                    stats.write_line(state)
                if state.step > 0:  # and checkpoint the state reached
                    ckpts.write_new(state)
        except TrainingDiverged as exc:
            rollback = next_rollback(exc, tc, nets, state)  # re-raised unless train.on_divergence: rollback
            resume = True  # the resume path restores every state of the last good checkpoint
            continue
        finally:
            bar.close()
            log.close()
        signum = stops.signum if status == "interrupted" else None
        return TrainResult(run_dir, state.step, status, state.last_ckpt, signum, results, recipe)


# ----------------------------------------------------------------------------- the session's start
def open_recipe(run_dir: Path, recipe: Recipe | None, resume: bool, overwrite: bool,
                overrides: tuple[str, ...]) -> Recipe:
    """The recipe to train (resuming: checked against, or read from, the run's ``recipe.yaml``);
    without ``resume`` the run folder must be free. Nothing is written here."""
    if resume:
        return rundir.resume_recipe(run_dir, recipe, overrides)
    if recipe is None:
        raise GanzooError("train: a recipe is needed unless resuming")
    rundir.check_free(run_dir, overwrite)
    return recipe


@dataclass
class Rollback:
    """A rollback after a divergence (``train.on_divergence: rollback``): its number and the lower
    learning rates of G's and D's parameter groups."""

    count: int
    g_lrs: list[float]
    d_lrs: list[float]


def restore(nets: Networks, data: Any, found: tuple[Path, dict[str, Any]] | None, device: torch.device,
            rollback: Rollback | None) -> RunState:
    """Load a checkpoint (``found``: its path and contents; None: a fresh start) into the networks,
    optimisers, a stateful regularizer, data order and RNGs; after a rollback, lower the learning rates."""
    state = RunState()
    if found is not None:
        path, ckpt = found
        nets.G.load_state_dict(ckpt["generator"])
        nets.D.load_state_dict(ckpt["discriminator"])
        if nets.G_ema is not None:
            nets.G_ema.load_state_dict(ckpt["ema"] if ckpt.get("ema") is not None else ckpt["generator"])
        nets.g_opt.load_state_dict(ckpt["g_optim"])
        nets.d_opt.load_state_dict(ckpt["d_optim"])
        load_regularizer_state(nets.regularizer, ckpt)  # a stateful one's (checked by check_resumable)
        data.load_state_dict(ckpt["data"])
        restore_rng(ckpt["rng"], device)
        step = int(ckpt["step"])
        state = RunState(step, float(ckpt.get("wall_time", 0.0)), int(ckpt.get("rollbacks", 0)), path, step)
        state.collapse = ckpt.get("collapse")
    if rollback is not None:
        state.rollbacks = rollback.count
        for opt, lrs in ((nets.g_opt, rollback.g_lrs), (nets.d_opt, rollback.d_lrs)):
            for group, lr in zip(opt.param_groups, lrs):
                group["lr"] = lr
    return state


def collapse_monitor(tc: Any, resumed: Path | None, saved: dict[str, Any] | None) -> CollapseMonitor:
    """The collapse watch of a session: a resumed run replays its ``metrics.jsonl`` (already cut at the
    checkpoint's step; it also holds the evaluation of the checkpoint's own step, which ran after the
    checkpoint was written), else takes the checkpoint's saved state; a new run starts empty."""
    rows = read_metrics(resumed) if resumed is not None else []
    return CollapseMonitor.start(tc.collapse, None if rows else saved, rows)


def open_folder(run_dir: Path, recipe: Recipe, nets: Networks, dist: Any, resume: bool, overwrite: bool,
                step: int) -> Any:
    """The run folder, written by rank 0 alone: checked writable with room for the checkpoints (a
    one-line error before anything is written), ``recipe.yaml`` first, then its sub-folders; returns
    the run's log (a null log on other ranks)."""
    ckpt_dir, samples_dir = run_dir / CKPT_DIR, run_dir / rundir.SAMPLES_DIR
    if dist.is_main:
        preflight(run_dir, checkpoint_bytes(nets.G, nets.D, nets.G_ema), recipe.train.keep_last, resume)
        if resume:
            rundir.update_recipe(run_dir, recipe)  # e.g. more train.steps
        else:
            rundir.create(run_dir, recipe, overwrite)
        ckpt_dir.mkdir(exist_ok=True)
        samples_dir.mkdir(exist_ok=True)
        for folder in (run_dir, ckpt_dir, samples_dir):
            remove_stale_temps(folder)
        log = RunLog(run_dir, resume_step=step if resume else None)
    else:
        log = distributed.NullLog()
    dist.barrier()  # the folder is ready before any rank reads it
    return log


def next_rollback(exc: TrainingDiverged, tc: Any, nets: Networks, state: RunState) -> Rollback:
    """The rollback after ``exc``; re-raises it with ``train.on_divergence: stop``, and stops after
    ``train.max_rollbacks``."""
    if tc.on_divergence != "rollback":
        raise exc
    if state.rollbacks >= tc.max_rollbacks:
        raise TrainingDiverged(f"{exc}; gave up after {state.rollbacks} rollback(s) (train.max_rollbacks)") from None
    f = tc.rollback_lr_factor
    rb = Rollback(state.rollbacks + 1, [g["lr"] * f for g in nets.g_opt.param_groups],
                  [g["lr"] * f for g in nets.d_opt.param_groups])
    print(f"ganzoo: {exc}; rollback {rb.count} of {tc.max_rollbacks}: continuing from "
          f"{state.last_ckpt or 'step 0'} with the learning rates multiplied by {f}", file=sys.stderr, flush=True)
    return rb
