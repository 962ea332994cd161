"""Data-parallel training under torchrun (CPU, gloo, 2 processes, tiny networks).

* 2 processes train the same weights as 1 process (same seed, same global batch): the ranks' data
  and noise slices together are the single-process batch. G's conditional batch norm uses
  ``train.sync_batchnorm`` here (without it each rank normalises with its own half-batch statistics
  and the runs differ); R1 is on (a penalty differentiating through D, with DDP) and gradients are
  accumulated over 2 micro-batches (``no_sync``). Adam's ``eps`` is 1e-3 in this recipe: the conv
  biases right before a batch norm have a true gradient of 0, so theirs is rounding noise, which
  Adam with eps 1e-8 would turn into full-size steps of random sign; a larger eps keeps the
  comparison about the gradients.
* a 2-process checkpoint resumes in 1 process, and a 1-process one in 2, continuing the same run;
* a rank killed with SIGKILL, or one that stops responding (SIGSTOP, collective timeout), ends the
  whole job with a clear message instead of hanging.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import torch
import yaml

from ganzoo.errors import GanzooError
from ganzoo.recipe import validate
from ganzoo.training import load_checkpoint, train
from ganzoo.training import distributed
from ganzoo.training.logs import read_metrics
from ganzoo.training.plan import Plan

from conftest import SHARED, tiny_recipe

WEIGHTS = SHARED / "weights" / "fid-inception-2015-12-05.pth"
# KID at step 3 when the Inception weights are there (rank 0 evaluates while the other waits)
EVAL = {"metrics": ["kid"], "every": 3, "num_samples": 12, "batch_size": 12, "inception_weights": str(WEIGHTS)}

RECIPE = tiny_recipe(name="ddp", regularizer="r1", train={
    "steps": 3, "batch_size": 8, "accumulate": 2, "log_every": 1, "sample_every": 0,
    "checkpoint_every": 3, "keep_last": 2, "sync_batchnorm": True, "ema": {"decay": 0.9, "start": 1},
    "g_optim": {"lr": 1e-4, "eps": 1e-3}, "d_optim": {"lr": 4e-4, "eps": 1e-3},
})
ATOL = 1e-5       # weights (absolute + relative): float32 sums in another order, over 3 steps
OPTIM_TOL = 1e-4  # Adam's moments: sums of raw gradients, R1's double backward included


pytestmark = pytest.mark.usefixtures("one_cpu_thread")  # see conftest.py


def recipe(**train):
    data = json.loads(json.dumps(RECIPE))
    data["train"].update(train)
    if WEIGHTS.is_file():
        data["eval"] = EVAL
    return validate(data, "ddp")


def torchrun_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
            "-m", "ganzoo", "run", *args, "--device", "cpu", "--no-progress"]


def torchrun_env(**extra: str) -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", **extra}


def write_recipe(path: Path, evaluate: bool = False, **train) -> Path:
    data = json.loads(json.dumps(RECIPE))
    data["train"].update(train)
    if WEIGHTS.is_file() and evaluate:
        data["eval"] = EVAL
    path.write_text(yaml.safe_dump(data))
    return path


def assert_close(a: dict, b: dict, what: str, tol: float = ATOL) -> None:
    assert a.keys() == b.keys(), what
    for k in a:
        x, y = a[k].double(), b[k].double()
        excess = float(((x - y).abs() - tol - tol * y.abs()).max()) if x.numel() else 0.0
        i = int(((x - y).abs() - tol * y.abs()).argmax()) if x.numel() else 0
        assert excess <= 0, (f"{what}.{k} differs by more than {tol} + {tol} * |value| (worst element: "
                             f"{float(x.flatten()[i]):.6g} vs {float(y.flatten()[i]):.6g}; max |value| "
                             f"{float(y.abs().max()):.3g})")


def assert_close_optim(a: dict, b: dict, what: str) -> None:
    assert a["param_groups"] == b["param_groups"], what
    for i in a["state"]:
        assert_close(a["state"][i], b["state"][i], f"{what}.state.{i}", OPTIM_TOL)


def assert_close_optim_norm(a: dict, b: dict, what: str, rel: float) -> None:
    """Adam's moments: each tensor's ||a - b|| at most ``rel`` times the largest ||b|| of that moment
    over the optimiser (step counts exactly). For states that went on training from weights equal only
    up to float rounding: there a single gradient element can move by percents, and the bias of a conv
    followed by batch norm has a gradient that is rounding noise (its true value is 0), while the
    moments as a whole agree."""
    assert a["param_groups"] == b["param_groups"], what
    keys = {k for st in b["state"].values() for k in st if k != "step"}
    scale = {k: max(float(st[k].double().norm()) for st in b["state"].values() if k in st) for k in keys}
    for i in a["state"]:
        for k, x in a["state"][i].items():
            x, y = x.double(), b["state"][i][k].double()
            if k == "step":
                assert torch.equal(x, y), f"{what}.state.{i}.step"
                continue
            err = float((x - y).norm()) / max(scale[k], 1e-12)
            assert err <= rel, f"{what}.state.{i}.{k}: difference {err:.2e} of the largest {k} > {rel}"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A 2-process run of 3 steps (torchrun) and a 1-process run of 5 steps (checkpoints at 3 and 5)."""
    root = tmp_path_factory.mktemp("ddp")
    cmd = torchrun_cmd(str(write_recipe(root / "ddp.yaml", evaluate=True)), "--out", str(root), "--name", "two")
    proc = subprocess.run(cmd, cwd=root, env=torchrun_env(), capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    train(recipe(steps=5), root / "one", "cpu", progress=False)
    return root, proc


def test_two_processes_train_the_same_weights_as_one(runs):
    root, proc = runs
    two = load_checkpoint(root / "two" / "checkpoints" / "step-00000003.pt")
    one = load_checkpoint(root / "one" / "checkpoints" / "step-00000003.pt")
    for key in ("generator", "discriminator", "ema"):
        assert_close(one[key], two[key], key)
    assert_close_optim(one["g_optim"], two["g_optim"], "g_optim")
    assert_close_optim(one["d_optim"], two["d_optim"], "d_optim")
    # the checkpoint holds the global data order and the shared noise stream: exactly the 1-process ones
    assert {k: v for k, v in one["data"].items() if k != "generator"} == \
        {k: v for k, v in two["data"].items() if k != "generator"}
    assert torch.equal(one["data"]["generator"], two["data"]["generator"])
    assert torch.equal(one["rng"]["torch"], two["rng"]["torch"])
    # rank 0 alone wrote the log (one line per step, no duplicates), with the global batch's averages
    lines = [r for r in read_metrics(root / "two") if "loss/d" in r]
    ref = {r["step"]: r for r in read_metrics(root / "one") if "loss/d" in r}
    assert [r["step"] for r in lines] == [1, 2, 3]
    for r in lines:
        for k in ("loss/d", "loss/g", "loss/reg", "logits/real", "logits/fake"):
            assert r[k] == pytest.approx(ref[r["step"]][k], abs=1e-4), (r["step"], k)
        assert r["kimg"] == ref[r["step"]]["kimg"]
    assert proc.stdout.count("ganzoo: finished 3 steps") == 1  # rank 0 reports


@pytest.mark.skipif(not WEIGHTS.is_file(), reason=f"needs the FID Inception weights at {WEIGHTS}")
def test_rank_0_evaluates_like_a_single_process(runs):
    root, _ = runs
    two = [r for r in read_metrics(root / "two") if "eval/kid" in r]
    one = [r for r in read_metrics(root / "one") if "eval/kid" in r and r["step"] == 3]
    assert [r["step"] for r in two] == [3] and len(one) == 1  # once, by rank 0
    # the same EMA-G (within 1e-5) and the same evaluation noise: the same KID up to float noise
    assert two[0]["eval/kid"] == pytest.approx(one[0]["eval/kid"], rel=1e-3, abs=1e-5)
    assert sorted(p.name for p in (root / "two" / "checkpoints").iterdir()) == ["step-00000003.pt"]


def test_a_two_process_checkpoint_resumes_in_one_process(runs):
    root, _ = runs
    shutil.copytree(root / "two", root / "resumed")
    result = train(recipe(steps=5), root / "resumed", "cpu", resume=True, progress=False)
    assert result.status == "finished" and result.step == 5
    a = load_checkpoint(result.checkpoint)
    b = load_checkpoint(root / "one" / "checkpoints" / "step-00000005.pt")
    for key in ("generator", "discriminator", "ema"):
        assert_close(a[key], b[key], key)
    # two more steps from weights equal to float rounding: G's last gradient (Adam's first moment, with
    # beta1 = 0) agrees as a whole; one of its elements moved by 4% with torch 2.14 (2026-12-05)
    assert_close_optim_norm(a["g_optim"], b["g_optim"], "g_optim", rel=1e-2)
    assert_close_optim_norm(a["d_optim"], b["d_optim"], "d_optim", rel=1e-2)
    assert a["data"]["pos"] == b["data"]["pos"] and a["data"]["epoch"] == b["data"]["epoch"]
    assert torch.equal(a["rng"]["torch"], b["rng"]["torch"])  # the same noise stream continued


def test_a_one_process_checkpoint_resumes_in_two_processes(runs):
    root, _ = runs
    shutil.copytree(root / "one", root / "widened")
    (root / "widened" / "checkpoints" / "step-00000005.pt").unlink()  # continue from step 3
    cmd = torchrun_cmd("--resume", str(root / "widened"))
    proc = subprocess.run(cmd, cwd=root, env=torchrun_env(), capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    a = load_checkpoint(root / "widened" / "checkpoints" / "step-00000005.pt")
    b = load_checkpoint(root / "one" / "checkpoints" / "step-00000005.pt")
    for key in ("generator", "discriminator", "ema"):
        assert_close(a[key], b[key], key)
    assert torch.equal(a["rng"]["torch"], b["rng"]["torch"])  # the noise stream continued across widths
    assert [r["step"] for r in read_metrics(root / "widened") if "loss/d" in r] == [1, 2, 3, 4, 5]


def test_the_global_batch_must_split_over_processes_and_micro_batches(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("LOCAL_RANK", "0")
    recipe = validate(tiny_recipe(train={"steps": 1, "batch_size": 6, "accumulate": 2}), "r.yaml")
    with pytest.raises(GanzooError) as err:  # the plan's rule: checked before any process group is joined
        Plan.resolve(recipe, torch.device("cpu"), *distributed.world(), source="r.yaml")
    assert "r.yaml: train.batch_size: 6" in str(err.value) and "2 x 2 = 4" in str(err.value)
    monkeypatch.setenv(distributed.TIMEOUT_ENV, "soon")
    with pytest.raises(GanzooError, match="positive number of minutes"):
        distributed.timeout_minutes()


# ----------------------------------------------------------------------------- failures
def _rank_pid(marker: str, rank: int) -> int | None:
    """PID of the worker with RANK=rank among the processes whose environment holds ``marker``."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            env = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"GANZOO_TEST_MARK={marker}".encode() in env and f"RANK={rank}".encode() in env:
            return int(entry.name)
    return None


def _start_long_run(tmp_path: Path, **env: str):
    marker = uuid.uuid4().hex
    cmd = torchrun_cmd(str(write_recipe(tmp_path / "ddp.yaml", steps=100000, checkpoint_every=100000)),
                       "--out", str(tmp_path), "--name", "long")
    out = open(tmp_path / "output.txt", "w")
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=torchrun_env(GANZOO_TEST_MARK=marker, **env),
                            stdout=out, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    metrics = tmp_path / "long" / "metrics.jsonl"
    deadline = time.monotonic() + 120
    while not (metrics.is_file() and metrics.read_text().count("\n") >= 2):  # training is under way
        assert proc.poll() is None, (tmp_path / "output.txt").read_text()[-3000:]
        assert time.monotonic() < deadline, "the run did not start"
        time.sleep(0.2)
    pid = _rank_pid(marker, 1)
    assert pid is not None
    return proc, pid


def _finish(proc: subprocess.Popen, tmp_path: Path, timeout: float) -> str:
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        pytest.fail("the job did not stop:\n" + (tmp_path / "output.txt").read_text()[-3000:])
    return (tmp_path / "output.txt").read_text()


def test_a_dead_rank_brings_the_job_down(tmp_path):
    proc, pid = _start_long_run(tmp_path)
    os.kill(pid, signal.SIGKILL)
    output = _finish(proc, tmp_path, timeout=90)
    assert proc.returncode != 0
    # torchrun names the failed rank and the signal; rank 0 says why it stopped (unless torchrun
    # ended it before its collective noticed)
    assert "SIGKILL" in output and "rank" in output, output[-3000:]


def test_a_hung_rank_ends_the_job_after_the_collective_timeout(tmp_path):
    # 12 s: longer than the two ranks' start-up skew on a busy machine, short enough for a test
    proc, pid = _start_long_run(tmp_path, **{distributed.TIMEOUT_ENV: "0.2"})
    os.kill(pid, signal.SIGSTOP)
    try:
        deadline = time.monotonic() + 90
        while "another process died, failed or hung" not in (tmp_path / "output.txt").read_text():
            assert time.monotonic() < deadline, (tmp_path / "output.txt").read_text()[-3000:]
            time.sleep(0.2)
    finally:
        os.kill(pid, signal.SIGCONT)  # let torchrun's SIGTERM reach it now, rather than after its grace period
    output = _finish(proc, tmp_path, timeout=90)
    assert proc.returncode != 0
    assert "rank 0:" in output and "collective timeout 0.2 min" in output, output[-3000:]
