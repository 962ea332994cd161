"""Reliability (issue 7): a run survives crashes, stops or rolls back on divergence, and refuses run
folders it cannot use before it starts. docs/reliability.md maps each promise to its test.

* crashes: one CPU run is SIGKILLed 21 times at random moments (during start-up, mid-step, and
  deliberately between a checkpoint's write and its rename) and resumed each time; every checkpoint
  always loads with ``weights_only=True``, at most one checkpoint interval is lost, and the final
  weights are bit-identical to an uninterrupted run's. SIGTERM writes a checkpoint and exits 143.
* divergence: a loss registered here (a fault injector, not a stand-in) makes a loss NaN, or a
  gradient NaN so that only the weights go bad; ``on_divergence: stop`` exits 3 naming the step and
  the quantity, ``rollback`` continues from the last good checkpoint with lower learning rates.
* preflight: a read-only or full disk (real tmpfs mounts where the test may mount them) is a
  one-line error before anything is written.
"""
from __future__ import annotations

import json
import math
import os
import queue
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Literal

import pytest
import torch
import yaml
from pydantic import Field

from conftest import tiny_recipe
from ganzoo.config import BlockConfig
from ganzoo.training import latest_checkpoint, list_checkpoints, load_checkpoint
from ganzoo.atomic import PAUSE_ENV
from ganzoo.training.logs import read_metrics

TINY = tiny_recipe(seed=5, data={"num_images": 20, "num_test_images": 8}, generator={"z_dim": 8},
                   train={"steps": 4, "batch_size": 4, "log_every": 1, "sample_every": 0, "checkpoint_every": 1,
                          "keep_last": 2, "ema": {"decay": 0.9, "start": 2}})
# one thread per process: bit-identical CPU results, and pytest -n 2 already fills both cores
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
ENV.pop("GANZOO_INCEPTION_WEIGHTS", None)
ENV.pop(PAUSE_ENV, None)
STEP_LINE = re.compile(r"^step (\d+)/(\d+)")
TEMP = re.compile(r"^\.step-\d{8}\.pt\..+\.tmp$")


pytestmark = pytest.mark.usefixtures("one_cpu_thread")  # see conftest.py


def write_recipe(path: Path, train: dict | None = None, **top) -> Path:
    data = json.loads(json.dumps(TINY))
    data["train"].update(train or {})
    data.update(top)
    path.write_text(yaml.safe_dump(data))
    return path


def one_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip() and "Warning" not in line]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


def in_process(capsys, *args) -> tuple[int, str, str]:
    from ganzoo.cli import main

    code = main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


def assert_same_tensors(a, b, what: str) -> None:
    """Equal nested dicts/lists of tensors and plain values, tensors bit for bit."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), f"{what} differs"
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), what
        for k in a:
            assert_same_tensors(a[k], b[k], f"{what}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), what
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same_tensors(x, y, f"{what}[{i}]")
    else:
        assert a == b, f"{what}: {a!r} != {b!r}"


# ----------------------------------------------------------------------------- crashes
class Proc:
    """``ganzoo run ...`` in a subprocess; stdout lines are collected by a thread as they come."""

    def __init__(self, args: list, cwd: Path, err_path: Path, env: dict | None = None) -> None:
        self.err_path = err_path
        self._err = open(err_path, "w")
        self.p = subprocess.Popen([sys.executable, "-m", "ganzoo", "run", *map(str, args)], cwd=cwd,
                                  env={**ENV, **(env or {})}, stdout=subprocess.PIPE, stderr=self._err, text=True)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.p.stdout:
            self.lines.append(line)

    def steps(self) -> list[int]:
        return [int(m.group(1)) for m in map(STEP_LINE.match, list(self.lines)) if m]

    def wait_for(self, cond, timeout: float = 90) -> bool:
        """Poll ``cond()`` until true (True) or the process ended (False); fail after ``timeout`` s."""
        deadline = time.monotonic() + timeout
        while not cond():
            if self.p.poll() is not None:
                return False
            assert time.monotonic() < deadline, f"timed out; stderr: {self.stderr()}"
            time.sleep(0.01)
        return True

    def finish(self, timeout: float = 120) -> int:
        try:
            rc = self.p.wait(timeout=timeout)
        finally:
            if self.p.poll() is None:
                self.p.kill()
                self.p.wait()
        self._reader.join(timeout=10)
        self._err.close()
        return rc

    def stderr(self) -> str:
        return self.err_path.read_text()  # the child writes to the file itself


# Starting Python and importing torch takes seconds; the runs that get killed are forked from a server
# that imported ganzoo once. Each is a real process running what `python -m ganzoo run` runs
# (ganzoo.cli.main), killed by the kernel with SIGKILL; the final resume is a plain CLI process.
SERVER = r"""
import json, os, sys, traceback
import torch
torch.set_num_threads(1)
import ganzoo.training, tqdm.auto, torch.utils.tensorboard
from ganzoo.cli import main
from ganzoo.registry import LOSS
assert "hinge" in LOSS  # imports every block (and plugin) once, here, not in each run
for line in sys.stdin:
    job = json.loads(line)
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.environ.update(job["env"])
            os.chdir(job["cwd"])
            for fd, name in ((1, "out"), (2, "err")):
                os.dup2(os.open(job[name], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644), fd)
            code = main(job["argv"])
        except BaseException:
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    print(pid, flush=True)
    print(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]), flush=True)
"""


class ForkServer:
    def __init__(self, cwd: Path) -> None:
        self.cwd = cwd
        self.p = subprocess.Popen([sys.executable, "-c", SERVER], cwd=cwd, env=ENV, stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True)
        self.replies: queue.Queue[str] = queue.Queue()
        threading.Thread(target=lambda: [self.replies.put(x) for x in self.p.stdout], daemon=True).start()

    def reply(self, timeout: float = 120) -> int:
        return int(self.replies.get(timeout=timeout))

    def run(self, argv: list, name: str, env: dict) -> "Child":
        out, err = self.cwd / f"{name}.out", self.cwd / f"{name}.err"
        job = {"argv": ["run", *map(str, argv)], "env": env, "cwd": str(self.cwd), "out": str(out), "err": str(err)}
        self.p.stdin.write(json.dumps(job) + "\n")
        self.p.stdin.flush()
        return Child(self, self.reply(), out, err)

    def close(self) -> None:
        self.p.stdin.close()
        try:
            self.p.wait(timeout=30)
        finally:
            if self.p.poll() is None:
                self.p.kill()


class Child:
    """A forked ``ganzoo run``: its pid, its stdout/stderr files."""

    def __init__(self, server: ForkServer, pid: int, out: Path, err: Path) -> None:
        self.server, self.pid, self.out, self.err = server, pid, out, err
        self.code: int | None = None

    def steps(self) -> list[int]:
        text = self.out.read_text() if self.out.exists() else ""
        return [int(m.group(1)) for m in map(STEP_LINE.match, text.splitlines()) if m]

    def wait_for(self, cond, timeout: float = 60) -> bool:
        """Poll ``cond()`` until true (True) or the run ended by itself (False); fail after ``timeout``."""
        deadline = time.monotonic() + timeout
        while not cond():
            if self.code is None and not self.server.replies.empty():
                self.code = self.server.reply()
            if self.code is not None:
                return False
            assert time.monotonic() < deadline, f"timed out; stderr: {self.stderr()}"
            time.sleep(0.01)
        return True

    def kill(self) -> int:
        if self.code is None:
            os.kill(self.pid, signal.SIGKILL)
            self.code = self.server.reply()
        return self.code

    def stderr(self) -> str:
        return self.err.read_text() if self.err.exists() else ""


def check_checkpoint_folder(run: Path) -> int:
    """Every file in checkpoints/ is a readable weights-only checkpoint of the step it is named after,
    except temporary files of an interrupted write; returns the newest step (0 if none)."""
    folder = run / "checkpoints"
    if not folder.is_dir():
        return 0
    for p in folder.iterdir():
        if TEMP.match(p.name):
            continue  # the kill came between the write and the rename; resume deletes it
        assert re.fullmatch(r"step-\d{8}\.pt", p.name), f"unexpected file {p}"
        ckpt = torch.load(p, weights_only=True)
        assert ckpt["format"] == "ganzoo-checkpoint" and f"step-{ckpt['step']:08d}.pt" == p.name
    steps = [s for s, _ in list_checkpoints(run)]
    return steps[-1] if steps else 0


CRASH_STEPS, CRASH_EVERY = 40, 2


@pytest.fixture
def fork_server(tmp_path):
    server = ForkServer(tmp_path)
    yield server
    server.close()


def test_sigkill_at_random_moments_then_resume_equals_an_uninterrupted_run(tmp_path, fork_server):
    recipe = write_recipe(tmp_path / "crash.yaml",
                          {"steps": CRASH_STEPS, "checkpoint_every": CRASH_EVERY, "keep_last": 2})
    run = tmp_path / "runs" / "tiny"
    rng = random.Random(7)
    # kinds of kill, shuffled: during start-up / resume loading, at a random moment after some steps
    # (checkpoint writes slowed a little, so some land in them), and while a checkpoint sits written
    # but not renamed (the writer is paused there by the test hook and the temp file is seen)
    kinds = ["startup"] * 5 + ["random"] * 8 + ["mid-write"] * 8
    rng.shuffle(kinds)
    kills, newest, seen_temp = 0, 0, 0
    for i, kind in enumerate(kinds):
        # a kill before recipe.yaml exists leaves no run to resume: the user starts it again
        args = ["--resume", run] if (run / "recipe.yaml").is_file() else [recipe, "--out", tmp_path / "runs"]
        pause = {"startup": "0.05", "random": "0.05", "mid-write": "0.2"}[kind]
        proc = fork_server.run([*args, "--device", "cpu", "--no-progress"], f"trial{i}", {PAUSE_ENV: pause})
        start = newest
        if kind == "startup":
            t_kill = time.monotonic() + rng.uniform(0.0, 0.5)
            alive = proc.wait_for(lambda: time.monotonic() >= t_kill)
        elif kind == "random":
            target = min(start + rng.randint(1, 2 * CRASH_EVERY), CRASH_STEPS)
            alive = proc.wait_for(lambda: max(proc.steps(), default=0) >= target)
            if alive:
                time.sleep(rng.uniform(0.0, 0.15))
        else:  # the second checkpoint of this session, caught between its write and its rename
            target = min(start + 2 * CRASH_EVERY, CRASH_STEPS)
            name = f".step-{target:08d}.pt."
            folder = run / "checkpoints"
            alive = proc.wait_for(lambda: folder.is_dir() and any(p.name.startswith(name) for p in folder.iterdir()))
        code = proc.kill()
        err = proc.stderr()
        assert "Traceback" not in err and "skipping" not in err, err  # resume never met a bad checkpoint
        if not alive:  # the run ended before this kill: it must have finished normally
            assert code == 0, err
            break
        assert code == -signal.SIGKILL, err
        kills += 1
        temps = list((run / "checkpoints").glob(".*.tmp")) if (run / "checkpoints").is_dir() else []
        seen_temp += bool(temps)
        if kind == "mid-write":
            assert temps, "the kill was meant to land between a checkpoint's write and its rename"
        newer = check_checkpoint_folder(run)
        assert newer >= newest, "a kill lost a checkpoint that was already there"
        newest = newer
        # lost work: the steps this session completed (printed) beyond the newest checkpoint
        assert max(proc.steps(), default=0) - newest <= CRASH_EVERY, (proc.steps(), newest)
    assert kills >= 20 and seen_temp >= 8, (kills, seen_temp)

    # resume as a user would, in a plain CLI process, to the end
    final = subprocess.run([sys.executable, "-m", "ganzoo", "run", "--resume", str(run), "--device", "cpu",
                            "--no-progress"], cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=240)
    assert final.returncode == 0 and "skipping" not in final.stderr, final.stderr
    assert f"finished {CRASH_STEPS} steps" in final.stdout
    assert not list((run / "checkpoints").glob(".*")), "temporary files left after resuming"
    check_checkpoint_folder(run)

    # the reference: the same recipe, never interrupted
    ref = fork_server.run([recipe, "--out", tmp_path / "runs", "--name", "ref", "--device", "cpu", "--no-progress"],
                          "ref", {})
    assert not ref.wait_for(lambda: False, timeout=240) and ref.code == 0, ref.stderr()
    a = load_checkpoint(latest_checkpoint(tmp_path / "runs" / "ref")[0])
    b = load_checkpoint(latest_checkpoint(run)[0])
    assert a["step"] == b["step"] == CRASH_STEPS
    for key in ("generator", "discriminator", "ema", "g_optim", "d_optim", "data", "rng", "rollbacks"):
        assert_same_tensors(a[key], b[key], key)

    # the log reads as one run: every step once, in order, with the uninterrupted run's losses
    def losses(folder):
        return [(r["step"], r["loss/d"], r["loss/g"]) for r in read_metrics(folder) if "loss/d" in r]

    assert losses(run) == losses(tmp_path / "runs" / "ref")
    assert [s for s, _, _ in losses(run)] == list(range(1, CRASH_STEPS + 1))


def test_sigterm_writes_a_checkpoint_of_the_step_reached_and_exits_143(tmp_path):
    recipe = write_recipe(tmp_path / "t.yaml", {"steps": 100000, "checkpoint_every": 100000})
    run = tmp_path / "runs" / "tiny"
    proc = Proc([recipe, "--out", tmp_path / "runs", "--device", "cpu", "--no-progress"], tmp_path,
                tmp_path / "err.txt")
    assert proc.wait_for(lambda: len(proc.steps()) >= 2)
    proc.p.send_signal(signal.SIGTERM)
    rc = proc.finish()
    err = proc.stderr()
    assert rc == 143 and "Traceback" not in err, err
    (step, path), = list_checkpoints(run)
    assert f"stopped by SIGTERM at step {step};" in err and f"ganzoo run --resume {run}" in err
    assert step == max(proc.steps())  # the step in progress finished, was logged and checkpointed
    assert load_checkpoint(path)["step"] == step


# ----------------------------------------------------------------------------- divergence
CALLS = {"d": 0, "g": 0}


class NanInjectorConfig(BlockConfig):
    """Test fault injector: the hinge loss, made non-finite on chosen calls of this process."""

    type: Literal["test_nan_injector"] = "test_nan_injector"
    what: Literal["d_loss", "g_grad"] = Field("d_loss", description="NaN D loss, or a NaN gradient into G")
    first: int = Field(1, description="first bad call (counted per process, so rollbacks move past it)")
    last: int = Field(10**9, description="last bad call")


class NanInjector:
    def __init__(self, cfg: NanInjectorConfig) -> None:
        from ganzoo.registry import LOSS

        self.cfg, self.hinge = cfg, LOSS.build("hinge")

    def _bad(self, kind: str) -> bool:
        CALLS[kind] += 1
        return self.cfg.first <= CALLS[kind] <= self.cfg.last

    def d_loss(self, real, fake):
        out = self.hinge.d_loss(real, fake)
        return out * float("nan") if self.cfg.what == "d_loss" and self._bad("d") else out

    def g_loss(self, real, fake):
        out = self.hinge.g_loss(real, fake)
        if self.cfg.what == "g_grad" and self._bad("g"):
            s = fake.sum()
            out = out + torch.sqrt(s - s)  # adds 0, but its gradient is 0/0: G's weights become NaN
        return out


@pytest.fixture
def nan_loss():
    from ganzoo.registry import LOSS

    LOSS.register(NanInjectorConfig, NanInjector)
    CALLS.update(d=0, g=0)
    yield
    LOSS.unregister("test_nan_injector")


def loss_values(run: Path) -> list[float]:
    return [v for r in read_metrics(run) for k, v in r.items() if k.startswith("loss/")]


def test_nan_loss_stops_with_exit_3_naming_step_and_quantity_keeping_the_last_good_checkpoint(
        tmp_path, capsys, nan_loss):
    recipe = write_recipe(tmp_path / "nan.yaml", {"steps": 6, "keep_last": 10},
                          loss={"type": "test_nan_injector", "first": 4})  # one D loss per step: step 4
    run = tmp_path / "runs" / "tiny"
    code, _, err = in_process(capsys, "run", recipe, "--out", tmp_path / "runs", "--device", "cpu", "--no-progress")
    assert code == 3
    line = one_line(err)
    assert "training diverged at step 4: loss/d is nan" in line and "step-00000003.pt" in line, line
    assert [s for s, _ in list_checkpoints(run)] == [1, 2, 3]
    assert latest_checkpoint(run)[1]["step"] == 3
    assert all(math.isfinite(v) for v in loss_values(run)) and read_metrics(run)[-1]["step"] == 3


def test_nan_weights_with_finite_losses_stop_before_they_reach_a_checkpoint(tmp_path, capsys, nan_loss):
    recipe = write_recipe(tmp_path / "nan.yaml", {"steps": 6, "keep_last": 10},
                          loss={"type": "test_nan_injector", "what": "g_grad", "first": 3, "last": 3})
    run = tmp_path / "runs" / "tiny"
    code, _, err = in_process(capsys, "run", recipe, "--out", tmp_path / "runs", "--device", "cpu", "--no-progress")
    assert code == 3
    line = one_line(err)
    assert "training diverged at step 3: a weight of G is nan" in line and "step-00000002.pt" in line, line
    assert [s for s, _ in list_checkpoints(run)] == [1, 2]
    for _, path in list_checkpoints(run):
        ckpt = load_checkpoint(path)
        assert all(torch.isfinite(v).all() for net in ("generator", "discriminator", "ema")
                   for v in ckpt[net].values() if v.is_floating_point())


def test_rollback_continues_from_the_last_good_checkpoint_with_lower_learning_rates(tmp_path, capsys, nan_loss):
    train = {"steps": 6, "keep_last": 10, "checkpoint_every": 2, "on_divergence": "rollback",
             "rollback_lr_factor": 0.5, "max_rollbacks": 3}
    recipe = write_recipe(tmp_path / "rb.yaml", train, loss={"type": "test_nan_injector", "first": 5, "last": 5})
    run = tmp_path / "runs" / "tiny"
    code, out, err = in_process(capsys, "run", recipe, "--out", tmp_path / "runs", "--device", "cpu",
                                "--no-progress")
    assert code == 0, err
    assert "finished 6 steps" in out
    assert "training diverged at step 5: loss/d is nan" in err and "rollback 1 of 3" in err, err
    assert "step-00000004.pt" in err and "Traceback" not in err
    final = load_checkpoint(run / "checkpoints" / "step-00000006.pt")
    assert final["rollbacks"] == 1
    assert [g["lr"] for g in final["g_optim"]["param_groups"]] == [1e-4 * 0.5]
    assert [g["lr"] for g in final["d_optim"]["param_groups"]] == [4e-4 * 0.5]
    # the step-4 checkpoint (before the rollback) kept the original rates
    assert load_checkpoint(run / "checkpoints" / "step-00000004.pt")["d_optim"]["param_groups"][0]["lr"] == 4e-4
    # the log reads as one run, without the diverged step's line
    assert [r["step"] for r in read_metrics(run) if "loss/d" in r] == [1, 2, 3, 4, 5, 6]
    assert all(math.isfinite(v) for v in loss_values(run))


def test_rollbacks_are_limited_then_the_run_stops_with_exit_3(tmp_path, capsys, nan_loss):
    train = {"steps": 6, "keep_last": 10, "checkpoint_every": 2, "on_divergence": "rollback", "max_rollbacks": 2}
    recipe = write_recipe(tmp_path / "rb.yaml", train, loss={"type": "test_nan_injector", "first": 3})
    run = tmp_path / "runs" / "tiny"
    code, _, err = in_process(capsys, "run", recipe, "--out", tmp_path / "runs", "--device", "cpu", "--no-progress")
    assert code == 3
    assert err.count("training diverged at step 3: loss/d is nan") == 3, err
    assert "rollback 1 of 2" in err and "rollback 2 of 2" in err and "gave up after 2 rollback(s)" in err
    assert "Traceback" not in err
    assert [s for s, _ in list_checkpoints(run)] == [2]
    assert load_checkpoint(run / "checkpoints" / "step-00000002.pt")["rollbacks"] == 0


# ----------------------------------------------------------------------------- preflight
@pytest.fixture
def tmpfs(tmp_path):
    """Mount a small tmpfs (real ENOSPC / EROFS); skipped where this test may not mount."""
    mounts = []

    def mount(size: str, read_only: bool = False) -> Path:
        where = tmp_path / f"mnt{len(mounts)}"
        where.mkdir()
        opts = f"size={size}" + (",ro" if read_only else "")
        out = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(where)], capture_output=True,
                             text=True, timeout=30)
        if out.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {out.stderr.strip()}")
        mounts.append(where)
        return where

    if shutil.which("mount") is None or os.geteuid() != 0:
        pytest.skip("needs root and mount(8) to make a real full or read-only file system")
    yield mount
    for where in mounts:
        subprocess.run(["umount", str(where)], capture_output=True, timeout=30)


def test_read_only_output_or_run_folder_is_a_one_line_error_before_training(tmp_path, capsys, tmpfs):
    disk = tmpfs("8m")
    recipe = write_recipe(tmp_path / "r.yaml", {"steps": 1})
    code, _, err = in_process(capsys, "run", recipe, "--out", disk, "--device", "cpu", "--no-progress")
    assert code == 0, err
    run = disk / "tiny"
    remount = subprocess.run(["mount", "-o", "remount,ro", str(disk)], capture_output=True, text=True, timeout=30)
    assert remount.returncode == 0, remount.stderr
    before = {p: p.stat().st_mtime_ns for p in disk.rglob("*")}
    # a new run into the read-only disk, and resuming the run that is on it
    for args in (["run", recipe, "--out", disk, "--name", "new"], ["run", "--resume", run, "--set", "train.steps=2"]):
        code, _, err = in_process(capsys, *args, "--device", "cpu")
        assert code == 2
        line = one_line(err)
        assert "cannot write in" in line and "Read-only file system" in line, line
    assert {p: p.stat().st_mtime_ns for p in disk.rglob("*")} == before


def test_full_disk_is_a_one_line_error_before_training(tmp_path, capsys, tmpfs):
    small = tmpfs("512k")  # the tiny run's checkpoints need about 4 x 1 MB
    recipe = write_recipe(tmp_path / "r.yaml")
    code, _, err = in_process(capsys, "run", recipe, "--out", small, "--device", "cpu")
    assert code == 2
    line = one_line(err)
    assert f"{small / 'tiny'}: not enough free disk space" in line and "train.keep_last" in line, line
    assert list(small.iterdir()) == []


def test_preflight_estimate_is_at_least_a_real_checkpoint_and_scales_with_keep_last(tmp_path, capsys, monkeypatch):
    from ganzoo.training import preflight as pf

    recipe = write_recipe(tmp_path / "r.yaml", {"steps": 1})
    code, _, err = in_process(capsys, "run", recipe, "--out", tmp_path / "runs", "--device", "cpu", "--no-progress")
    assert code == 0, err
    (_, path), = list_checkpoints(tmp_path / "runs" / "tiny")
    from ganzoo.recipe import load_recipe
    from ganzoo.training.build import build_discriminator, build_generator

    r = load_recipe(recipe)
    G, D = build_generator(r), build_discriminator(r)
    estimate = pf.checkpoint_bytes(G, D, build_generator(r))
    actual = path.stat().st_size
    assert actual <= estimate <= 2 * actual, (actual, estimate)

    # the disk-space rule, on a disk that reports just too little (keep_last 2: 4 checkpoints)
    class Usage:
        total = used = 0
        free = 4 * estimate - 1

    monkeypatch.setattr(pf.shutil, "disk_usage", lambda _: Usage)
    with pytest.raises(pf.RunFolderError, match=r"not enough free disk space: .* \(4 of "):
        pf.preflight(tmp_path / "new", estimate, keep_last=2)
    Usage.free += 1
    pf.preflight(tmp_path / "new", estimate, keep_last=2)
    # resuming needs room for one checkpoint being written and a new best only
    Usage.free = 2 * estimate
    pf.preflight(tmp_path / "runs" / "tiny", estimate, keep_last=2, resume=True)
    assert not (tmp_path / "new").exists() and not list((tmp_path / "runs" / "tiny").glob(".*"))
