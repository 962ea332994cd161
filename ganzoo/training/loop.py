"""The training loop: one function, :func:`train`, reading top to bottom like the algorithm.

Per G step (an "iteration"): ``d_steps`` D updates, then one G update, then the EMA update. Each
update accumulates ``accumulate`` micro-batches of ``batch_size / accumulate`` images. Networks run
under bf16 autocast on CUDA (``precision: auto``), fp32 on CPU; losses are always computed in fp32.
Logged scalars stay on the device and are read every ``log_every`` steps (every step on CPU, where
reading is free), so a CUDA step never waits for the host.
"""
from __future__ import annotations

import contextlib
import json
import math
import random
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import GanzooError
from ..recipe import Recipe
from ..registry import DATASET, DISCRIMINATOR, GENERATOR
from . import distributed, rundir
from .checkpoint import (
    CKPT_DIR,
    capture_rng,
    checkpoint_name,
    latest_checkpoint,
    prune_checkpoints,
    restore_rng,
    save_checkpoint,
)
from ..atomic import atomic_write_text, remove_stale_temps
from .data import DataSampler
from .step import STAT_NAMES, build_train_step, configure_backends
from .evaluation import Evaluator, check_eval_ready
from .logs import RunLog
from .preflight import checkpoint_bytes, preflight
from .sampling import fixed_noise, generate, save_grid

EXIT_DIVERGED = 3
MIN_TIMED_SECONDS = 0.05  # a log window shorter than this (one step after an evaluation) is not timed


class TrainingDiverged(GanzooError):
    """A loss or a weight became NaN/inf; the run stops, keeping its last good checkpoint."""

    exit_code = EXIT_DIVERGED


@dataclass
class TrainResult:
    """How a call to :func:`train` ended."""

    run_dir: Path
    step: int
    status: str  # "finished", "time_limit", "interrupted" (a signal), "stopped" (stop_after)
    checkpoint: Path | None = None
    signal: int | None = None
    eval: dict[str, float] = field(default_factory=dict)


# ----------------------------------------------------------------------------- small helpers
def resolve_device(spec: str | torch.device = "auto") -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cuda`` without a GPU is a one-line error."""
    if isinstance(spec, torch.device):
        return spec
    spec = str(spec).strip().lower()
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except RuntimeError:
        raise GanzooError(f"--device: unknown device '{spec}' (use auto, cpu, cuda or cuda:N)") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise GanzooError(f"--device {spec}: CUDA is not available on this machine (use --device cpu)")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise GanzooError(f"--device {spec}: only {torch.cuda.device_count()} CUDA device(s) present")
    elif device.type != "cpu":
        raise GanzooError(f"--device: unsupported device '{spec}' (use auto, cpu, cuda or cuda:N)")
    return device


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for networks, or None for plain fp32."""
    if precision == "bf16" or (precision == "auto" and device.type == "cuda"):
        return torch.bfloat16
    return None


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # CPU and every CUDA device


def make_optimizer(params, cfg, device: torch.device, fused: bool = True, capturable: bool = False) -> torch.optim.Adam:
    """Adam with the recipe's settings; the fused kernel on CUDA when ``fused`` (``train.fused_optim``);
    ``capturable`` (CUDA only: its step counter on the device, so a CUDA graph can capture the step,
    ``train.cuda_graph``)."""
    kwargs: dict[str, Any] = {"fused": True} if fused and device.type == "cuda" else {}
    if capturable and device.type == "cuda":
        kwargs["capturable"] = True
    return torch.optim.Adam(
        params, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps, weight_decay=cfg.weight_decay, **kwargs
    )


def build_generator(recipe: Recipe) -> nn.Module:
    return GENERATOR.build(recipe.generator, recipe.resolution, recipe.num_classes, recipe.channels)


def build_discriminator(recipe: Recipe) -> nn.Module:
    return DISCRIMINATOR.build(recipe.discriminator, recipe.resolution, recipe.num_classes, recipe.channels)


def build_dataset(recipe: Recipe, source: str = "recipe"):
    """The training split, checked against the recipe's resolution, channels and classes."""
    ds = DATASET.build(recipe.data, recipe.resolution, split="train")
    shape = tuple(ds.images.shape)
    want = (recipe.channels, recipe.resolution, recipe.resolution)
    if len(shape) != 4 or shape[1:] != want:
        raise GanzooError(
            f"{source}: data: dataset '{recipe.data.type}' gives images of shape {shape}, "
            f"the recipe needs [N, {want[0]}, {want[1]}, {want[2]}] (check resolution and channels)"
        )
    if recipe.num_classes and ds.num_classes != recipe.num_classes:
        raise GanzooError(
            f"{source}: num_classes: is {recipe.num_classes} but dataset '{recipe.data.type}' "
            f"has {ds.num_classes} classes"
        )
    return ds


def _all_finite(modules: dict[str, nn.Module]) -> str | None:
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


class _StopSignals:
    """SIGINT/SIGTERM set a flag the loop checks each step; a second signal interrupts at once."""

    def __init__(self, enabled: bool) -> None:
        self.signum: int | None = None
        self._old: dict[int, Any] = {}
        self.enabled = enabled and threading.current_thread() is threading.main_thread()

    def _handler(self, signum, frame):  # noqa: ARG002
        if self.signum is not None:
            raise KeyboardInterrupt
        self.signum = signum
        print(
            f"\nganzoo: received {signal.Signals(signum).name}; finishing the step and writing a checkpoint "
            "(send again to abort at once)",
            file=sys.stderr, flush=True,
        )

    def __enter__(self):
        if self.enabled:
            for s in (signal.SIGINT, signal.SIGTERM):
                self._old[s] = signal.signal(s, self._handler)
        return self

    def __exit__(self, *exc):
        for s, h in self._old.items():
            signal.signal(s, h)
        return False


def _fmt_time(seconds: float) -> str:
    seconds = int(max(0, seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}"


# ----------------------------------------------------------------------------- the loop
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
    _rollback: tuple[int, list[float], list[float]] | None = None,
) -> TrainResult:
    """Train ``recipe`` in ``run_dir``.

    ``resume=True`` continues the run in ``run_dir`` from its latest checkpoint (``recipe`` may be
    None: the run's own ``recipe.yaml`` is used; otherwise it may differ only in the fields of
    :data:`ganzoo.training.rundir.RESUMABLE_FIELDS`). Without ``resume`` the folder must be absent or
    empty, or an old run folder with ``overwrite=True``. ``stop_after`` stops (with a checkpoint)
    once that many G steps are done, as an interruption would. ``progress`` shows a tqdm bar
    (default: when stderr is a terminal). Raises :class:`TrainingDiverged` on NaN/inf, unless
    ``train.on_divergence: rollback`` continues from the last good checkpoint with lower learning
    rates (``_rollback``: rollbacks so far and the new G and D learning rates, set only by that).
    """
    run_dir = Path(run_dir)
    device = resolve_device(device)

    # ---- 1. recipe and starting state --------------------------------------------------------
    ckpt: dict[str, Any] | None = None
    found = None
    if resume:
        recipe = rundir.resume_recipe(run_dir, recipe)
        found = latest_checkpoint(run_dir)
        ckpt = found[1] if found else None
    else:
        if recipe is None:
            raise GanzooError("train: a recipe is needed unless resuming")
        rundir.check_free(run_dir, overwrite)
    tc, ec = recipe.train, recipe.eval
    do_eval = check_eval_ready(recipe, source)  # missing Inception weights fail here, before any file
    # torchrun: join the process group, take this rank's device (docs/distributed.md); else inactive
    dist = distributed.setup(device, tc.batch_size, tc.accumulate, source)
    device = dist.device
    if tc.cuda_graph and dist.active and device.type == "cuda":
        raise GanzooError(f"{source}: train.cuda_graph: not supported with several processes (torchrun, DDP); "
                          "set train.cuda_graph=false")
    do_eval = dist.broadcast(do_eval)  # rank 0 evaluates; the others follow its decision

    # ---- 2. data, networks, loss, optimisers ---------------------------------------------------
    configure_backends(recipe, device)  # CUDA: TF32 (train.tf32) for the fp32 parts, tuned conv kernels
    seed_everything(recipe.seed)
    dataset = build_dataset(recipe, source)
    data = DataSampler(dataset.images, dataset.labels, recipe.seed, device, tc.channels_last, tc.hflip)
    # G, D, EMA, optimisers and the step (ganzoo/training/step.py; benchmarks/train_step.py times
    # this same object); seeds again first, so network init does not depend on the dataset
    train_step = build_train_step(recipe, data, device)
    G, D, G_ema = train_step.G, train_step.D, train_step.G_ema
    g_opt, d_opt, amp = train_step.g_opt, train_step.d_opt, train_step.amp
    use_reg = train_step.use_reg
    z_dim = train_step.z_dim
    nc = recipe.num_classes
    micro = tc.batch_size // tc.accumulate

    step, wall_before, rollbacks = 0, 0.0, 0
    if ckpt is not None:
        G.load_state_dict(ckpt["generator"])
        D.load_state_dict(ckpt["discriminator"])
        if G_ema is not None:
            G_ema.load_state_dict(ckpt["ema"] if ckpt.get("ema") is not None else ckpt["generator"])
        g_opt.load_state_dict(ckpt["g_optim"])
        d_opt.load_state_dict(ckpt["d_optim"])
        data.load_state_dict(ckpt["data"])
        restore_rng(ckpt["rng"], device)
        step, wall_before = int(ckpt["step"]), float(ckpt.get("wall_time", 0.0))
        rollbacks = int(ckpt.get("rollbacks", 0))
    resumed_from = found[0] if found else None
    if _rollback is not None:  # rolled back after a divergence: lower learning rates from here on
        rollbacks = _rollback[0]
        for opt, lrs in ((g_opt, _rollback[1]), (d_opt, _rollback[2])):
            for group, lr in zip(opt.param_groups, lrs):
                group["lr"] = lr
    del ckpt, found  # the loaded copy of every tensor is not kept for the whole run
    train_step.invalidate_graph()  # train.cuda_graph: capture after the weights, state and lrs are final
    if dist.active:  # torchrun: data and noise shards, per-rank seeds, sync BN, DDP wrappers
        distributed.prepare(dist, train_step, recipe, step)

    # ---- 3. the run folder: recipe.yaml first ----------------------------------------------
    # writable and room for the checkpoints, or a one-line error before anything is written
    ckpt_dir, samples_dir = run_dir / CKPT_DIR, run_dir / rundir.SAMPLES_DIR
    if dist.is_main:  # under torchrun rank 0 alone writes the run folder
        preflight(run_dir, checkpoint_bytes(G, D, G_ema), tc.keep_last, resume)
        if resume:
            rundir.update_recipe(run_dir, recipe)  # e.g. more train.steps
        else:
            rundir.create(run_dir, recipe, overwrite)
        ckpt_dir.mkdir(exist_ok=True)
        samples_dir.mkdir(exist_ok=True)
        remove_stale_temps(run_dir)
        remove_stale_temps(ckpt_dir)
        remove_stale_temps(samples_dir)
        log = RunLog(run_dir, resume_step=step if resume else None)
    else:
        log = distributed.NullLog()
    dist.barrier()  # the folder is ready before any rank reads it
    best = _read_best(ckpt_dir)
    grid_z, grid_y, grid_cols = fixed_noise(z_dim, nc, recipe.seed)
    sample_net = G_ema if G_ema is not None else G
    evaluator = Evaluator(recipe, device, amp)

    last_ckpt: Path | None = resumed_from
    last_ckpt_step = step if resumed_from else -1

    def write_checkpoint() -> Path:
        with _overhead():
            return _write_checkpoint()

    def _write_checkpoint() -> Path:
        nonlocal last_ckpt, last_ckpt_step
        flush_stats(force=True)  # never save weights after an unnoticed NaN
        bad = _all_finite({"G": G, "D": D})
        if bad:
            raise _diverged(step, f"a weight of {bad}", float("nan"), last_ckpt)
        dist.check_consistent({"G": G, "D": D})  # torchrun: every rank holds the same networks
        payload = {
            "step": step,
            "recipe": recipe.model_dump(mode="json"),
            "generator": G.state_dict(),
            "discriminator": D.state_dict(),
            "ema": G_ema.state_dict() if G_ema is not None else None,
            "g_optim": g_opt.state_dict(),
            "d_optim": d_opt.state_dict(),
            "rng": dist.checkpoint_rng(capture_rng(device)),  # torchrun: the shared noise stream
            "data": data.state_dict(),
            "wall_time": wall_before + (time.monotonic() - t_start),
            "rollbacks": rollbacks,
        }
        path = ckpt_dir / checkpoint_name(step)
        if dist.is_main:
            path = save_checkpoint(path, payload)
            prune_checkpoints(run_dir, tc.keep_last, {best["step"]} if best else set())
        last_ckpt, last_ckpt_step = path, step
        log.flush()
        return path

    @contextlib.contextmanager
    def _overhead():
        """Time spent on samples, evaluation and checkpoints is not training time (img/s)."""
        nonlocal paused
        t0 = time.monotonic()
        try:
            yield
        finally:
            paused += time.monotonic() - t0

    def write_samples() -> None:
        with _overhead():
            _write_samples()

    def _write_samples() -> None:
        if not dist.is_main:
            return
        images = generate(sample_net, grid_z, grid_y, batch_size=max(micro, 64), autocast_dtype=amp)
        save_grid(samples_dir / f"step-{step:08d}.png", images, grid_cols)
        log.image("samples", images, grid_cols, step)

    def evaluate() -> dict[str, float]:
        with _overhead():
            return _evaluate()

    def _evaluate() -> dict[str, float]:
        nonlocal best
        # torchrun: rank 0 evaluates, the others wait for its results (docs/distributed.md)
        results = dist.on_main(lambda: evaluator(sample_net, seed=recipe.seed + step), "evaluation")
        log.write(step, {f"eval/{k}": v for k, v in results.items()}, kimg=round(kimg(), 3), time=elapsed())
        fid = results.get("fid")
        if fid is not None and math.isfinite(fid) and (best is None or fid < best["fid"]):
            # checkpoint first (the old best is still kept), then point best.json at it, then prune
            if last_ckpt_step != step:
                write_checkpoint()
            best = {"step": step, "fid": fid, "file": checkpoint_name(step)}
            if dist.is_main:
                atomic_write_text(ckpt_dir / "best.json", json.dumps(best) + "\n")
                prune_checkpoints(run_dir, tc.keep_last, {step})
        return results

    # ---- scalar statistics: device tensors, read in one transfer -----------------------------
    window: list[torch.Tensor] = []   # one row of STAT_NAMES per G step since the last log line
    checked = 0                       # rows of `window` already checked for NaN/inf
    check_every = 1 if device.type == "cpu" else tc.log_every
    t_start = time.monotonic()
    t_log, step_log, paused = t_start, step, 0.0

    def kimg() -> float:
        return step * tc.d_steps * tc.batch_size / 1000.0

    def elapsed() -> float:
        return round(wall_before + time.monotonic() - t_start, 3)

    def flush_stats(force: bool = False) -> None:
        nonlocal checked
        if checked >= len(window) or not (force or step % check_every == 0):
            return
        rows = torch.stack(window[checked:]).float()
        if dist.sharded:  # averages over ranks: logged values, and every rank stops at the same NaN
            rows = dist.mean(rows)
            window[checked:] = list(rows)
        rows = rows.cpu()
        finite = torch.isfinite(rows)
        if not bool(finite.all()):
            r, c = (~finite).nonzero()[0].tolist()
            bad_step = step - (len(window) - checked) + r + 1
            raise _diverged(bad_step, STAT_NAMES[c], float(rows[r, c]), last_ckpt)
        checked = len(window)

    last_speed: list[float | None] = [None]

    def write_log_line() -> dict[str, float]:
        nonlocal window, checked, t_log, step_log, paused
        flush_stats(force=True)
        means = torch.stack(window).float().mean(0).cpu().tolist()
        values = {k: v for k, v in zip(STAT_NAMES, means) if use_reg or k != "loss/reg"}
        now = time.monotonic()
        busy = now - t_log - paused
        if busy >= MIN_TIMED_SECONDS or last_speed[0] is None:
            last_speed[0] = (step - step_log) * tc.d_steps * tc.batch_size / max(busy, 1e-9)
        # else: a window of a step or two right after an evaluation is too short to time (the GPU work
        # of those steps finished inside the evaluation's time); report the last measured speed.
        values["speed/img_per_s"] = last_speed[0]
        log.write(step, values, kimg=round(kimg(), 3), time=elapsed())
        window, checked, t_log, step_log, paused = [], 0, now, step, 0.0
        return values

    # ---- 4. the loop -------------------------------------------------------------------------
    stop_at = tc.steps if stop_after is None else min(tc.steps, stop_after)
    deadline = None if tc.time_limit_minutes is None else t_start + 60.0 * tc.time_limit_minutes
    if progress is None:
        progress = sys.stderr.isatty()
    progress = progress and dist.is_main
    from tqdm.auto import tqdm

    bar = tqdm(total=tc.steps, initial=step, disable=not progress, unit="step", dynamic_ncols=True,
               desc=recipe.name, file=sys.stderr)
    status, signum, results = "finished", None, {}
    if step >= tc.steps:
        print(f"ganzoo: {run_dir} already finished ({step} of {tc.steps} steps)", file=sys.stderr)
    rollback_to = None
    try:
        with _StopSignals(handle_signals) as signals:
            while step < stop_at:
                # -- one iteration: d_steps D updates, one G update, EMA (ganzoo/training/step.py)
                row = train_step(step)  # [STAT_NAMES] on the device; nothing read back here
                step += 1

                # -- bookkeeping: stats, logs, samples, evaluation, checkpoints, stop conditions
                window.append(row)
                flush_stats()
                bar.update(1)
                # the time limit ends the run like its last step: final samples, evaluation, checkpoint
                time_up = deadline is not None and time.monotonic() >= deadline
                if dist.sharded:  # every rank stops at the same step (time limit, a signal on any rank)
                    up, sig = dist.agree_max([int(time_up), signals.signum or 0])
                    time_up, stop_signal = bool(up), sig or None
                finished = step >= tc.steps or time_up
                if step % tc.log_every == 0 or finished:
                    v = write_log_line()
                    bar.set_postfix_str(
                        f"D {v['loss/d']:.3f} G {v['loss/g']:.3f} {v['speed/img_per_s']:.0f} img/s", refresh=False
                    )
                    if not progress and dist.is_main:
                        eta = (tc.steps - step) * tc.d_steps * tc.batch_size / max(v["speed/img_per_s"], 1e-9)
                        print(f"step {step}/{tc.steps}  loss/d {v['loss/d']:.4f}  loss/g {v['loss/g']:.4f}  "
                              f"{v['speed/img_per_s']:.1f} img/s  ETA {_fmt_time(eta)}", flush=True)
                if (tc.sample_every and step % tc.sample_every == 0) or finished:
                    write_samples()
                if do_eval and ((ec.every and step % ec.every == 0) or finished):
                    results = evaluate()
                if step % tc.checkpoint_every == 0 or finished:
                    if last_ckpt_step != step:
                        write_checkpoint()
                if finished:
                    status = "finished" if step >= tc.steps else "time_limit"
                    break
                if (stop_signal if dist.sharded else signals.signum) is not None:
                    status, signum = "interrupted", stop_signal if dist.sharded else signals.signum
                    break
            if status == "finished" and step < tc.steps:
                status = "stopped"  # reached stop_after
            # -- interrupted or stopped: log the partial window and checkpoint the state reached
            if window:
                write_log_line()
            if last_ckpt_step != step and step > 0:
                write_checkpoint()
    except TrainingDiverged as exc:
        if tc.on_divergence != "rollback":
            raise
        if rollbacks >= tc.max_rollbacks:
            raise TrainingDiverged(f"{exc}; gave up after {rollbacks} rollback(s) (train.max_rollbacks)") from None
        f = tc.rollback_lr_factor
        rollback_to = (rollbacks + 1, [g["lr"] * f for g in g_opt.param_groups],
                       [g["lr"] * f for g in d_opt.param_groups])
        print(f"ganzoo: {exc}; rollback {rollbacks + 1} of {tc.max_rollbacks}: continuing from "
              f"{last_ckpt or 'step 0'} with the learning rates multiplied by {f}", file=sys.stderr, flush=True)
    finally:
        bar.close()
        log.close()
    if rollback_to is not None:  # the resume path restores every state of the last good checkpoint
        return train(recipe, run_dir, device, resume=True, stop_after=stop_after, progress=progress,
                     handle_signals=handle_signals, source=source, _rollback=rollback_to)
    return TrainResult(run_dir, step, status, last_ckpt, signum, results)


def _diverged(step: int, what: str, value: float, last_ckpt: Path | None) -> TrainingDiverged:
    keep = f"last good checkpoint: {last_ckpt}" if last_ckpt else "no checkpoint was written yet"
    return TrainingDiverged(f"training diverged at step {step}: {what} is {value} ({keep})")


def _read_best(ckpt_dir: Path) -> dict[str, Any] | None:
    path = ckpt_dir / "best.json"
    if not path.is_file():
        return None
    try:
        best = json.loads(path.read_text())
        return best if {"step", "fid", "file"} <= set(best) else None
    except (json.JSONDecodeError, OSError):
        return None
