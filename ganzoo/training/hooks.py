"""What the loop does around the steps: scalar statistics (NaN/inf checks, log lines), samples,
evaluation with the best-FID checkpoint, checkpoints and the progress display.

Each hook is called by :func:`ganzoo.training.loop.train` at the steps the recipe asks for; they
share the session's :class:`RunState` (G steps done, the last checkpoint, the best evaluation) and
:class:`Clock` (training time; time spent in hooks is not training time, for img/s).
"""
from __future__ import annotations

import contextlib
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..atomic import atomic_write_text
from .checkpoint import (CKPT_DIR, capture_rng, checkpoint_name, prune_checkpoints, regularizer_state,
                         save_checkpoint, save_standing)
from .collapse import CollapseMonitor
from .evaluation import EvaluationInterrupted
from .gammas import write_gammas
from .outcome import diverged
from .sampling import fixed_noise, generate, save_grid, with_buffers, with_standing_statistics
from .step import STAT_NAMES

MIN_TIMED_SECONDS = 0.05  # a log window shorter than this (one step after an evaluation) is not timed
LOG_SECONDS = 60.0  # a log line at least this often, whatever train.log_every says (slow CPU runs)


@dataclass
class RunState:
    """Where a session is: G steps done, training seconds of earlier sessions, rollbacks so far, the
    last checkpoint written or resumed from (its step; -1: none) and the best evaluation (best.json)."""

    step: int = 0
    wall_before: float = 0.0
    rollbacks: int = 0
    last_ckpt: Path | None = None
    last_ckpt_step: int = -1
    best: dict[str, Any] | None = None
    collapse: dict[str, Any] | None = None  # the collapse monitor's state in the checkpoint resumed from

    def kimg(self, tc: Any) -> float:
        return self.step * tc.d_steps * tc.batch_size / 1000.0


class Clock:
    """Training time of all sessions; :meth:`overhead` marks time that is not training (hooks)."""

    def __init__(self, wall_before: float) -> None:
        self.wall_before = wall_before
        self.start = time.monotonic()
        self.paused = 0.0

    def total(self) -> float:
        return self.wall_before + (time.monotonic() - self.start)

    def elapsed(self) -> float:
        return round(self.total(), 3)

    @contextlib.contextmanager
    def overhead(self):
        """Time spent on samples, evaluation and checkpoints is not training time (img/s)."""
        t0 = time.monotonic()
        try:
            yield
        finally:
            self.paused += time.monotonic() - t0


class Stats:
    """One row of ``STAT_NAMES`` per G step, on the device, read in one transfer: checked for NaN/inf
    every ``check_every`` steps (averaged over ranks under torchrun, so every rank stops at the same
    NaN) and averaged into log lines with the speed."""

    def __init__(self, tc: Any, dist: Any, check_every: int, penalty: bool, log: Any, clock: Clock, step: int,
                 watch: "CollapseWatch") -> None:
        self.tc, self.dist, self.check_every, self.penalty = tc, dist, check_every, penalty
        self.log, self.clock, self.watch = log, clock, watch
        self.window: list[torch.Tensor] = []  # rows since the last log line
        self.checked = 0  # rows of `window` already checked for NaN/inf
        self.t_log, self.step_log, self.last_speed = clock.start, step, None
        self.first = step + 1  # the session's first step is logged: a slow run says it is alive at once

    def due(self, step: int, end: bool) -> bool:
        """Whether ``step`` gets a log line: every ``log_every`` steps, the session's first step, the last
        one, and whenever ``LOG_SECONDS`` have passed since the last line."""
        return (step % self.tc.log_every == 0 or end or step == self.first
                or time.monotonic() - self.t_log >= LOG_SECONDS)

    def append(self, row: torch.Tensor, state: RunState) -> None:
        self.window.append(row)
        self.check(state)

    def check(self, state: RunState, force: bool = False) -> None:
        """Raise :class:`TrainingDiverged` at the first non-finite value not checked yet."""
        if self.checked >= len(self.window) or not (force or state.step % self.check_every == 0):
            return
        rows = torch.stack(self.window[self.checked:]).float()
        if self.dist.sharded:  # averages over ranks: logged values, and every rank stops at the same NaN
            rows = self.dist.mean(rows)
            self.window[self.checked:] = list(rows)
        rows = rows.cpu()
        finite = torch.isfinite(rows)
        if not bool(finite.all()):
            r, c = (~finite).nonzero()[0].tolist()
            bad_step = state.step - (len(self.window) - self.checked) + r + 1
            raise diverged(bad_step, STAT_NAMES[c], float(rows[r, c]), state.last_ckpt)
        self.checked = len(self.window)

    def write_line(self, state: RunState) -> dict[str, float]:
        """Log the window's means and the speed (images/s of training time); start a new window."""
        self.check(state, force=True)
        means = torch.stack(self.window).float().mean(0).cpu().tolist()
        values = {k: v for k, v in zip(STAT_NAMES, means) if self.penalty or k != "loss/reg"}
        now = time.monotonic()
        busy = now - self.t_log - self.clock.paused
        if busy >= MIN_TIMED_SECONDS or self.last_speed is None:
            self.last_speed = (state.step - self.step_log) * self.tc.d_steps * self.tc.batch_size / max(busy, 1e-9)
        # else: a window of a step or two right after an evaluation is too short to time (the GPU work
        # of those steps finished inside the evaluation's time); report the last measured speed.
        values["speed/img_per_s"] = self.last_speed
        signal = self.watch.logits(state.step, values["logits/real"], values["logits/fake"])
        self.log.write(state.step, {**values, **signal}, kimg=round(state.kimg(self.tc), 3), time=self.clock.elapsed())
        self.window, self.checked, self.t_log, self.step_log, self.clock.paused = [], 0, now, state.step, 0.0
        return values


def all_finite(modules: dict[str, nn.Module]) -> str | None:
    """Name of the first network with a non-finite parameter, or None (one host sync)."""
    names, flags = [], []
    for name, m in modules.items():
        params = [p.detach() for p in m.parameters()]
        if params:
            names.append(name)
            flags.append(torch.stack([torch.isfinite(p).all() for p in params]).all())
    if not flags:
        return None
    ok = torch.stack(flags).cpu().tolist()
    return next((n for n, good in zip(names, ok) if not good), None)


class Checkpoints:
    """Writes the session's checkpoints (rank 0; every rank checks its networks first), keeping
    ``train.keep_last`` and the best one."""

    def __init__(self, run_dir: Path, recipe: Any, nets: Any, data: Any, dist: Any, stats: Stats, clock: Clock,
                 log: Any) -> None:
        self.run_dir, self.ckpt_dir, self.recipe = run_dir, run_dir / CKPT_DIR, recipe
        self.nets, self.data, self.dist, self.stats, self.clock, self.log = nets, data, dist, stats, clock, log
        self.watch = stats.watch

    def write_new(self, state: RunState) -> None:
        """A checkpoint of ``state.step`` unless one was written (or resumed from) at that step."""
        if state.last_ckpt_step != state.step:
            self.write(state)

    def write(self, state: RunState) -> Path:
        with self.clock.overhead():
            self.stats.check(state, force=True)  # never save weights after an unnoticed NaN
            n = self.nets
            bad = all_finite({"G": n.G, "D": n.D})
            if bad:
                raise diverged(state.step, f"a weight of {bad}", float("nan"), state.last_ckpt)
            self.dist.check_consistent({"G": n.G, "D": n.D})  # torchrun: every rank holds the same networks
            path = self.ckpt_dir / checkpoint_name(state.step)
            if self.dist.is_main:
                payload = self._payload(state)
                path = save_checkpoint(path, payload)
                write_gammas(self.run_dir, ckpt=payload)  # the attention gates, kept when checkpoints are not
                keep = {state.best["step"]} if state.best else set()
                prune_checkpoints(self.run_dir, self.recipe.train.keep_last, keep)
            state.last_ckpt, state.last_ckpt_step = path, state.step
            self.log.flush()
            return path

    def write_standing(self, step: int, standing: dict[str, Any] | None) -> None:
        """The evaluation's standing batch-norm buffers beside the checkpoint of ``step``, if it has one
        (rank 0; see :func:`~.checkpoint.save_standing`)."""
        path = self.ckpt_dir / checkpoint_name(step)
        if standing and self.dist.is_main and path.is_file():
            with self.clock.overhead():
                save_standing(path, **standing)

    def _payload(self, state: RunState) -> dict[str, Any]:
        n, device = self.nets, self.dist.device
        return {
            "step": state.step,
            "recipe": self.recipe.model_dump(mode="json"),
            "generator": n.G.state_dict(),
            "discriminator": n.D.state_dict(),
            "ema": n.G_ema.state_dict() if n.G_ema is not None else None,
            "g_optim": n.g_opt.state_dict(),
            "d_optim": n.d_opt.state_dict(),
            "rng": self.dist.checkpoint_rng(capture_rng(device)),  # torchrun: the shared noise stream
            "data": self.data.state_dict(),
            "wall_time": self.clock.total(),
            "rollbacks": state.rollbacks,
            "collapse": self.watch.monitor.state_dict(),
            **regularizer_state(n.regularizer),  # a stateful regularizer's state (LeCam's averages)
        }

    def mark_best(self, state: RunState, fid: float) -> None:
        """A new best FID at ``state.step``: checkpoint first (the old best is still kept), then point
        best.json at it, then prune."""
        self.write_new(state)
        state.best = {"step": state.step, "fid": fid, "file": checkpoint_name(state.step)}
        if self.dist.is_main:
            atomic_write_text(self.ckpt_dir / "best.json", json.dumps(state.best) + "\n")
            prune_checkpoints(self.run_dir, self.recipe.train.keep_last, {state.step})


class Samples:
    """The progress grid of G (its EMA copy when there is one) from fixed noise, as PNG and TensorBoard image,
    with the batch-norm statistics the evaluations use (``eval.standing_stats``)."""

    def __init__(self, net: nn.Module, recipe: Any, folder: Path, dist: Any, log: Any, clock: Clock,
                 plan: Any) -> None:
        self.net, self.folder, self.dist, self.log, self.clock, self.plan = net, folder, dist, log, clock, plan
        self.recipe = recipe
        self.z, self.y, self.cols = fixed_noise(int(net.z_dim), recipe.num_classes, recipe.seed)

    def write(self, step: int, standing: dict[str, torch.Tensor] | None = None) -> None:
        """The grid of ``step``; ``standing``: the batch-norm buffers an evaluation of this step used
        (:meth:`Evaluation.standing_at`), so that the grid shows the generator that was measured, else
        they are computed here."""
        with self.clock.overhead():
            if not self.dist.is_main:
                return
            r = self.recipe
            G = with_buffers(self.net, standing) if standing is not None else with_standing_statistics(
                self.net, r.eval.standing_stats, r.eval.batch_size, r.num_classes, r.seed, self.plan.amp)
            images = generate(G, self.z, self.y, batch_size=max(self.plan.micro, 64), autocast_dtype=self.plan.amp)
            save_grid(self.folder / f"step-{step:08d}.png", images, self.cols)
            self.log.image("samples", images, self.cols, step)


class Evaluation:
    """The recipe's metrics on G's EMA copy (rank 0; the others wait for its results), logged; a new
    best FID is checkpointed and recorded in best.json."""

    def __init__(self, evaluator: Any, net: nn.Module, recipe: Any, dist: Any, log: Any, ckpts: Checkpoints,
                 clock: Clock, progress: bool) -> None:
        self.evaluator, self.net, self.recipe, self.dist = evaluator, net, recipe, dist
        self.log, self.ckpts, self.clock, self.progress = log, ckpts, clock, progress
        self.last_step: int | None = None  # the step of this session's last evaluation
        self.last_standing: dict[str, torch.Tensor] | None = None  # the standing buffers it used, if any

    def standing_at(self, step: int) -> dict[str, torch.Tensor] | None:
        """The standing batch-norm buffers of an evaluation at ``step`` (None: none ran there, or it used
        the running statistics)."""
        return self.last_standing if step == self.last_step else None

    def due(self, step: int, end: bool) -> bool:
        """Whether to evaluate after ``step``: every ``eval.every`` steps, and at the run's end unless an
        evaluation ran within the last tenth of ``eval.every`` steps (a time limit that falls one step
        after a scheduled evaluation would measure the same weights again)."""
        every = self.recipe.eval.every
        if every and step % every == 0:
            return True
        recent = every and self.last_step is not None and step - self.last_step < max(1, every // 10)
        return end and not recent

    def run(self, state: RunState, interrupted: Any = None) -> dict[str, float]:
        """Evaluate (rank 0) and log; a signal (``interrupted()``) stops it at the next batch, unlogged."""
        with self.clock.overhead():
            seed = self.recipe.seed + state.step
            self.last_step, self.last_standing = state.step, None
            try:
                results = self.dist.on_main(
                    lambda: self.evaluator(self.net, seed=seed, interrupted=interrupted, progress=self.progress),
                    "evaluation")
            except EvaluationInterrupted:
                print(f"ganzoo: the evaluation at step {state.step} was interrupted (the checkpoint is written; "
                      "ganzoo eval RUN_DIR --checkpoint last computes it)", file=sys.stderr, flush=True)
                return {}
            fid = results.get("fid")
            signal = self.ckpts.watch.fid(state.step, fid)
            self.log.write(state.step, {**{f"eval/{k}": v for k, v in results.items()}, **signal},
                           kimg=round(state.kimg(self.recipe.train), 3), time=self.clock.elapsed())
            if fid is not None and math.isfinite(fid) and (state.best is None or fid < state.best["fid"]):
                self.ckpts.mark_best(state, fid)
            # any evaluator callable works here; Evaluator also keeps the standing buffers it computed
            standing = getattr(self.evaluator, "last_standing", None)
            self.ckpts.write_standing(state.step, standing)
            self.last_standing = standing["buffers"] if standing else None
            return results


class CollapseWatch:
    """The collapse monitor (:mod:`.collapse`) fed with each log line's mean logits and each FID; its
    keys go into the same ``metrics.jsonl`` line, and a new signal is warned about once (rank 0)."""

    def __init__(self, monitor: CollapseMonitor, is_main: bool) -> None:
        self.monitor, self.is_main = monitor, is_main

    def logits(self, step: int, real: float, fake: float) -> dict[str, Any]:
        return self._said(step, self.monitor.observe_logits(step, real, fake))

    def fid(self, step: int, fid: float | None) -> dict[str, Any]:
        return self._said(step, self.monitor.observe_eval(step, fid))

    def _said(self, step: int, status: Any) -> dict[str, Any]:
        if status.new and self.is_main:
            stop = " (train.collapse.early_stop: stopping)" if self.monitor.should_stop() else ""
            print(f"ganzoo: warning: collapse signal at step {step}: {status.reason}{stop}", file=sys.stderr,
                  flush=True)
        return self.monitor.metrics()

    def stop_status(self) -> str | None:
        """"collapsed" when ``train.collapse.early_stop`` asks to stop now, else None."""
        return "collapsed" if self.monitor.should_stop() else None


def _fmt_time(seconds: float) -> str:
    seconds = int(max(0, seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}"


class Progress:
    """A tqdm bar (``progress``, rank 0), or one printed line per log line on rank 0 without it."""

    def __init__(self, recipe: Any, step: int, progress: bool, is_main: bool) -> None:
        from tqdm.auto import tqdm

        self.tc, self.enabled, self.is_main = recipe.train, progress and is_main, is_main
        self.bar = tqdm(total=self.tc.steps, initial=step, disable=not self.enabled, unit="step",
                        dynamic_ncols=True, desc=recipe.name, file=sys.stderr)

    def update(self) -> None:
        self.bar.update(1)

    def show(self, step: int, v: dict[str, float]) -> None:
        tc = self.tc
        self.bar.set_postfix_str(
            f"D {v['loss/d']:.3f} G {v['loss/g']:.3f} {v['speed/img_per_s']:.0f} img/s", refresh=False
        )
        if not self.enabled and self.is_main:
            eta = (tc.steps - step) * tc.d_steps * tc.batch_size / max(v["speed/img_per_s"], 1e-9)
            print(f"step {step}/{tc.steps}  loss/d {v['loss/d']:.4f}  loss/g {v['loss/g']:.4f}  "
                  f"{v['speed/img_per_s']:.1f} img/s  ETA {_fmt_time(eta)}", flush=True)

    def close(self) -> None:
        self.bar.close()
