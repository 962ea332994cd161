"""``ganzoo run/sample/export/eval`` as a user runs them: subprocesses, exit codes, files on disk.

Bad recipes exit 2 with one line and create nothing; an existing run folder is never overwritten
without --resume/--force; recipe.yaml is the first file a run writes; SIGINT writes a checkpoint and
exits 130, and --resume continues; checkpoints holding pickled code are refused.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from conftest import REPO, tiny_recipe

TINY = tiny_recipe(seed=1, data={"num_images": 24, "num_test_images": 8}, generator={"z_dim": 8},
                   train={"steps": 2, "batch_size": 4, "log_every": 1, "sample_every": 0, "checkpoint_every": 1})
# one thread per process: these tests run beside others (pytest -n 2) on small machines
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
ENV.pop("GANZOO_INCEPTION_WEIGHTS", None)


def ganzoo(*args, cwd, timeout=240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ganzoo", *map(str, args)], cwd=cwd, env=ENV,
                          capture_output=True, text=True, timeout=timeout)


def write_recipe(path: Path, **changes) -> Path:
    data = json.loads(json.dumps(TINY))
    for key, value in changes.items():
        data[key] = value
    path.write_text(yaml.safe_dump(data))
    return path


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")}


def one_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip() and "Warning" not in line]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


@pytest.fixture(scope="module")
def done_run(tmp_path_factory):
    """One finished CLI run, shared by the tests that only read it."""
    tmp = tmp_path_factory.mktemp("cli")
    recipe = write_recipe(tmp / "tiny.yaml")
    out = ganzoo("run", recipe, "--out", tmp / "runs", "--device", "cpu", "--no-progress", cwd=tmp)
    assert out.returncode == 0, out.stderr
    return tmp, tmp / "runs" / "tiny"


# ----------------------------------------------------------------------------- bad input
def in_process(capsys, *args) -> tuple[int, str]:
    """``ganzoo ARGS`` in this process (what ``python -m ganzoo`` runs, minus sys.exit): (code, stderr)."""
    from ganzoo.cli import main

    code = main([str(a) for a in args])
    return code, capsys.readouterr().err


def test_bad_recipe_exits_2_with_one_line_and_no_run_folder(tmp_path):
    recipe = write_recipe(tmp_path / "bad.yaml", train={"steps": 0})
    out = ganzoo("run", recipe, "--out", tmp_path / "runs", cwd=tmp_path)
    assert out.returncode == 2
    line = one_line(out.stderr)
    assert line.startswith(f"{recipe}: train.steps: ")
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("problem, expect", [
    ({"generator": {"type": "resnet", "ch": 4, "colour": 1}}, "generator.colour: unknown field"),
    ({"loss": "hinj"}, "did you mean 'hinge'"),
    ({"name": "../escape"}, "name: '../escape' cannot be a run folder name"),
    ({"eval": {"metrics": ["kid"]}}, "eval.inception_weights"),  # fails before anything is written
])
def test_recipe_problems_are_one_line_errors_naming_file_and_field(tmp_path, capsys, monkeypatch, problem, expect):
    monkeypatch.delenv("GANZOO_INCEPTION_WEIGHTS", raising=False)
    recipe = write_recipe(tmp_path / "bad.yaml", **problem)
    code, err = in_process(capsys, "run", recipe, "--out", tmp_path / "runs", "--device", "cpu")
    assert code == 2
    line = one_line(err)
    assert str(recipe) in line and expect in line
    assert not (tmp_path / "runs").exists() and not (tmp_path / "escape").exists()


def test_missing_recipe_and_missing_run_exit_2(tmp_path, capsys):
    code, err = in_process(capsys, "run", tmp_path / "nope.yaml", "--out", tmp_path / "runs")
    assert code == 2 and "nope.yaml: file not found" in one_line(err)
    code, err = in_process(capsys, "run", "--resume", tmp_path / "runs" / "nope")
    assert code == 2 and "no such run folder" in one_line(err)
    code, err = in_process(capsys, "run")
    assert code == 2 and "RECIPE" in one_line(err)
    assert not (tmp_path / "runs").exists()


# ----------------------------------------------------------------------------- run folders
def test_existing_run_folder_is_refused_without_resume_or_force(done_run):
    tmp, run = done_run
    before = snapshot(run)
    out = ganzoo("run", tmp / "tiny.yaml", "--out", tmp / "runs", "--device", "cpu", cwd=tmp)
    assert out.returncode == 2
    line = one_line(out.stderr)
    assert str(run) in line and "--resume" in line and "--force" in line
    assert snapshot(run) == before  # nothing written, nothing touched


def test_a_folder_that_is_not_a_run_is_never_replaced(tmp_path, capsys):
    (tmp_path / "runs" / "tiny").mkdir(parents=True)
    (tmp_path / "runs" / "tiny" / "thesis.tex").write_text("precious")
    recipe = write_recipe(tmp_path / "tiny.yaml")
    code, err = in_process(capsys, "run", recipe, "--out", tmp_path / "runs", "--force", "--device", "cpu")
    assert code == 2 and "not a ganzoo run folder" in one_line(err)
    assert [p.name for p in (tmp_path / "runs" / "tiny").iterdir()] == ["thesis.tex"]


def test_force_replaces_an_old_run(tmp_path):
    recipe = write_recipe(tmp_path / "tiny.yaml")
    run = tmp_path / "runs" / "tiny"
    (run / "checkpoints").mkdir(parents=True)
    (run / "recipe.yaml").write_text("name: old\n")
    (run / "checkpoints" / "step-00000099.pt").write_bytes(b"old")
    out = ganzoo("run", recipe, "--out", tmp_path / "runs", "--force", "--device", "cpu",
                 "--set", "train.steps=1", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-00000001.pt"]
    assert yaml.safe_load((run / "recipe.yaml").read_text())["name"] == "tiny"


AUDIT = r"""
import json, os, sys
run_dir, log_file = os.path.abspath(sys.argv[1]), sys.argv[2]
events = []
WRITE = os.O_WRONLY | os.O_RDWR | os.O_CREAT
def inside(p):
    return isinstance(p, (str, bytes, os.PathLike)) and os.path.abspath(os.fsdecode(p)).startswith(run_dir + os.sep)
def hook(event, args):
    if event == "open" and inside(args[0]):
        mode, flags = args[1], args[2]
        if (mode is not None and any(c in mode for c in "wax+")) or (mode is None and flags & WRITE):
            events.append(["write", os.path.relpath(os.fsdecode(args[0]), run_dir)])
    elif event == "os.rename" and inside(args[1]):
        events.append(["rename", os.path.relpath(os.fsdecode(args[1]), run_dir)])
sys.addaudithook(hook)
from ganzoo.cli import main
rc = main(sys.argv[3:])
with open(log_file, "w") as f:
    json.dump(events, f)
sys.exit(rc)
"""


def test_resolved_recipe_is_the_first_file_written(tmp_path):
    recipe = write_recipe(tmp_path / "tiny.yaml")
    run, log = tmp_path / "runs" / "tiny", tmp_path / "events.json"
    out = subprocess.run(
        [sys.executable, "-c", AUDIT, run, log, "run", recipe, "--out", tmp_path / "runs", "--device", "cpu",
         "--set", "train.steps=1", "--set", "train.sample_every=1"],
        cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=240,
    )
    assert out.returncode == 0, out.stderr
    events = json.loads(log.read_text())
    assert events[0][0] == "write" and events[0][1].startswith(".recipe.yaml."), events[:3]
    assert events[1] == ["rename", "recipe.yaml"], events[:3]
    written = {e[1] for e in events}
    assert {"metrics.jsonl", "checkpoints/step-00000001.pt", "samples/step-00000001.png"} <= written
    resolved = yaml.safe_load((run / "recipe.yaml").read_text())
    assert resolved["train"]["steps"] == 1 and resolved["train"]["batch_size"] == 4  # overrides applied
    assert resolved["eval"]["num_samples"] == 10000  # every default filled in


# ----------------------------------------------------------------------------- signals and resume
def test_sigint_writes_a_checkpoint_exits_130_and_resume_continues(tmp_path):
    recipe = write_recipe(tmp_path / "tiny.yaml")
    run = tmp_path / "runs" / "tiny"
    proc = subprocess.Popen(
        [sys.executable, "-m", "ganzoo", "run", recipe, "--out", tmp_path / "runs", "--device", "cpu",
         "--no-progress", "--set", "train.steps=100000", "--set", "train.checkpoint_every=100000"],
        cwd=tmp_path, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        deadline = time.monotonic() + 180
        while not (run / "metrics.jsonl").is_file() or not (run / "metrics.jsonl").read_text().strip():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the run never logged a step"
            time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "stopped by SIGINT" in err
    ckpts = sorted((run / "checkpoints").glob("step-*.pt"))
    assert len(ckpts) == 1
    step = torch.load(ckpts[0], weights_only=True)["step"]
    assert f"at step {step};" in err and step >= 1

    out = ganzoo("run", "--resume", run, "--device", "cpu", "--set", f"train.steps={step + 1}", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert f"finished {step + 1} steps" in out.stdout
    assert torch.load(run / "checkpoints" / f"step-{step + 1:08d}.pt", weights_only=True)["step"] == step + 1


# ----------------------------------------------------------------------------- sample / export / eval
def test_sample_and_export_from_a_run(done_run, tmp_path, capsys):
    from PIL import Image

    from ganzoo.training import load_generator

    tmp, run = done_run
    out = ganzoo("sample", run, "--n", 6, "--out", tmp_path / "g.png", "--class", 3, "--seed", 5, "--device", "cpu",
                 cwd=tmp)
    assert out.returncode == 0, out.stderr
    assert Image.open(tmp_path / "g.png").size == (3 * 34 + 2, 2 * 34 + 2)
    code, err = in_process(capsys, "sample", run, "--n", 6, "--out", tmp_path / "h.png", "--class", 10)
    assert code == 2 and "--class must be in [0, 10)" in one_line(err)

    out = ganzoo("export", run, "--out", tmp_path / "export", cwd=tmp)
    assert out.returncode == 0, out.stderr
    G = load_generator(tmp_path / "export")
    ema = torch.load(run / "checkpoints" / "step-00000002.pt", weights_only=True)["ema"]
    assert G.state_dict().keys() == ema.keys()
    assert all(torch.equal(v, ema[k]) for k, v in G.state_dict().items())


def test_eval_without_weights_is_a_one_line_error(done_run, capsys, monkeypatch):
    monkeypatch.delenv("GANZOO_INCEPTION_WEIGHTS", raising=False)
    tmp, run = done_run
    code, err = in_process(capsys, "eval", run, "--metrics", "kid", "--num-samples", 4, "--device", "cpu")
    assert code == 2 and "eval.inception_weights" in one_line(err)


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_commands_refuse_checkpoints_holding_pickled_code(tmp_path, capsys):
    from ganzoo.training.checkpoint import FORMAT, FORMAT_VERSION

    marker, evil = tmp_path / "pwned", tmp_path / "evil.pt"
    torch.save({"format": FORMAT, "version": FORMAT_VERSION, "step": 1, "x": _RunsCode(marker)}, evil)
    out = ganzoo("sample", evil, "--out", tmp_path / "x.png", cwd=tmp_path)
    assert out.returncode == 2 and "refused: not a weights-only checkpoint" in one_line(out.stderr)
    for cmd in (["export", evil, "--out", tmp_path / "x"], ["eval", evil]):
        code, err = in_process(capsys, *cmd)
        assert code == 2 and "refused" in one_line(err)
    assert not marker.exists() and not (tmp_path / "x").exists()


@pytest.mark.parametrize("cores, busy, threads", [
    (2, 0.0, None), (2, 0.3, None),   # idle: PyTorch's default, one thread per core
    (2, 0.7, 1), (2, 1.0, 1), (2, 3.5, 1),  # another process on a core (or more): the core left, at least one
    (16, 4.2, 12), (16, 0.4, None), (1, 0.9, None),
])
def test_cpu_threads_are_the_cores_left_over(cores, busy, threads):
    from ganzoo.commands.run import threads_for

    assert threads_for(cores, busy) == threads


@pytest.mark.skipif(not Path("/proc/stat").exists(), reason="reads /proc/stat")
def test_busy_cores_sees_a_busy_core_now():
    """A spinning process counts as a busy core while it runs (measured now, from /proc/stat: the 1-minute
    load average also remembered processes that had ended, and the next run trained on one thread of an
    idle machine, 1.7x slower)."""
    from ganzoo.commands.run import busy_cores

    cores = os.cpu_count() or 1
    spin = subprocess.Popen([sys.executable, "-c", "print(flush=True)\nwhile True: pass"],
                            stdout=subprocess.PIPE, text=True)
    try:
        spin.stdout.readline()  # it runs
        busy = busy_cores(cores, sample_s=0.5)
    finally:
        spin.kill()
        spin.wait()
    assert 0.7 <= busy <= cores
