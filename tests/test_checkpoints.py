"""Checkpoints as the commands meet them (issues 16 and 17): which one ``sample``, ``eval`` and
``export`` use (``--checkpoint best|last``), and what a damaged, foreign or hand-made one does.

* selection: ``best`` (``checkpoints/best.json``) where the run recorded one, else ``last``; the output
  names the file, the step and why; ``best.json`` is never followed outside ``checkpoints/``, and a
  broken one is a one-line error (``--checkpoint best``) or passed over with a warning (default).
* damage: a flipped bit (which ``torch.load`` itself accepts) fails the sha256 digest; ``sample`` and
  ``export`` refuse the file, ``--resume`` falls back to the checkpoint before (setting the damaged one
  aside) or, when none is usable, refuses with exit 2 and changes nothing. Checkpoints written before
  the digest existed still load.
* payloads: ``step: "abc"``, a missing ``generator``, networks of another width and checkpoints of
  another recipe are one-line errors naming the file and the key, never tracebacks; so are outputs in
  read-only places and ``--out`` naming a folder where a file is meant (or the reverse).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from conftest import SHARED, tiny_recipe
from ganzoo.recipe import validate
from ganzoo.training.checkpoint import (
    CheckpointError,
    latest_checkpoint,
    load_checkpoint,
    payload_digest,
    select_checkpoint,
)
from test_reliability import tmpfs  # noqa: F401  (a fixture: real read-only mounts)

TINY = tiny_recipe(seed=2, data={"num_images": 24, "num_test_images": 8}, generator={"z_dim": 8},
                   train={"steps": 2, "batch_size": 4, "log_every": 1, "sample_every": 0, "checkpoint_every": 1,
                          "keep_last": 5})
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
ENV.pop("GANZOO_INCEPTION_WEIGHTS", None)
WEIGHTS = SHARED / "weights" / "fid-inception-2015-12-05.pth"
STEP1, STEP2 = "step-00000001.pt", "step-00000002.pt"

pytestmark = pytest.mark.usefixtures("one_cpu_thread")  # see conftest.py


def ganzoo(*args, cwd: Path, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ganzoo", *map(str, args)], cwd=cwd, env=ENV,
                          capture_output=True, text=True, timeout=timeout)


def in_process(capsys, *args) -> tuple[int, str, str]:
    from ganzoo.cli import main

    code = main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


def one_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip() and "Warning" not in line
             and not line.startswith("  warnings.warn")]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished 2-step CLI run with checkpoints at steps 1 and 2 (copied by the tests that change it)."""
    tmp = tmp_path_factory.mktemp("ckpt")
    recipe = tmp / "tiny.yaml"
    recipe.write_text(yaml.safe_dump(TINY))
    out = ganzoo("run", recipe, "--out", tmp / "runs", "--device", "cpu", "--no-progress", cwd=tmp)
    assert out.returncode == 0, out.stderr
    return tmp / "runs" / "tiny"


@pytest.fixture
def run(finished, tmp_path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(finished, copy)
    return copy


def write_best(run: Path, content) -> Path:
    path = run / "checkpoints" / "best.json"
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return path


def resave(path: Path, change, digest: bool = True) -> None:
    """Rewrite a checkpoint with ``change(ckpt)`` applied, as a hand-made file would be: with a valid
    digest (so that the payload checks, not the digest, are what is tested) or with none at all."""
    ckpt = torch.load(path, weights_only=True)
    change(ckpt)
    ckpt.pop("sha256", None)
    if digest:
        ckpt["sha256"] = payload_digest(ckpt)
    torch.save(ckpt, path)


def flip_a_bit(path: Path) -> None:
    """Flip one bit inside the largest EMA tensor's bytes: torch.load still reads the file."""
    ckpt = torch.load(path, weights_only=True)
    tensor = max(ckpt["ema"].values(), key=lambda t: t.numel())
    data, raw = bytearray(path.read_bytes()), tensor.contiguous().numpy().tobytes()
    at = bytes(data).find(raw)
    assert at >= 0
    data[at + len(raw) // 2] ^= 0x04
    path.write_bytes(bytes(data))
    flipped = torch.load(path, weights_only=True)  # the zip format itself does not notice
    assert not all(torch.equal(flipped["ema"][k], ckpt["ema"][k]) for k in ckpt["ema"])


# ----------------------------------------------------------------------------- best / last
def test_commands_use_best_where_recorded_else_last_and_say_which(run, tmp_path, capsys):
    code, out, err = in_process(capsys, "sample", run, "--n", 2, "--out", tmp_path / "a.png", "--device", "cpu")
    assert code == 0, err
    assert f"{run / 'checkpoints' / STEP2} (step 2, last)" in out  # no best.json: the last one

    write_best(run, {"step": 1, "fid": 33.1, "file": STEP1})
    code, out, err = in_process(capsys, "sample", run, "--n", 2, "--out", tmp_path / "b.png", "--device", "cpu")
    assert code == 0, err
    assert f"{run / 'checkpoints' / STEP1} (step 1, best by FID 33.10)" in out
    code, out, err = in_process(capsys, "sample", run, "--n", 2, "--out", tmp_path / "c.png", "--device", "cpu",
                                "--checkpoint", "last")
    assert code == 0 and f"{STEP2} (step 2, last)" in out, err
    code, out, err = in_process(capsys, "sample", run, "--n", 2, "--out", tmp_path / "d.png", "--device", "cpu",
                                "--best")  # the older spelling of --checkpoint best
    assert code == 0 and f"{STEP1} (step 1, best by FID 33.10)" in out, err

    for which, step in ((None, 1), ("last", 2), ("best", 1)):
        extra = ["--checkpoint", which] if which else []
        code, out, err = in_process(capsys, "export", run, "--out", tmp_path / f"e-{which}", *extra)
        assert code == 0, err
        assert f"(step {step}, " in out
        from safetensors import safe_open

        with safe_open(str(tmp_path / f"e-{which}" / "generator.safetensors"), "pt") as f:
            assert f.metadata()["step"] == str(step)


@pytest.mark.skipif(not WEIGHTS.is_file(), reason=f"needs the FID Inception weights at {WEIGHTS}")
def test_eval_says_which_checkpoint_it_evaluated(run, capsys):
    write_best(run, {"step": 1, "fid": 33.1, "file": STEP1})
    args = ["eval", run, "--metrics", "kid", "--num-samples", 4, "--device", "cpu", "--inception-weights", WEIGHTS]
    code, out, err = in_process(capsys, *args)
    assert code == 0, err
    assert out.startswith(f"# {run / 'checkpoints' / STEP1} (step 1, best by FID 33.10), 4 samples")
    code, out, err = in_process(capsys, *args, "--checkpoint", "last", "--json")
    assert code == 0, err
    row = json.loads(out)
    assert (row["step"], row["checkpoint"], Path(row["source"]).name) == (2, "last", STEP2)


def test_checkpoint_choice_applies_to_run_folders_only(run, tmp_path, capsys):
    ckpt = run / "checkpoints" / STEP1
    code, out, err = in_process(capsys, "sample", ckpt, "--n", 2, "--out", tmp_path / "a.png", "--device", "cpu")
    assert code == 0 and f"{ckpt} (step 1)" in out, err  # a file is used as it is
    code, _, err = in_process(capsys, "export", ckpt, "--out", tmp_path / "x", "--checkpoint", "last")
    assert code == 2 and "--checkpoint last" in one_line(err) and str(ckpt) in one_line(err)
    code, _, err = in_process(capsys, "sample", run, "--n", 2, "--out", tmp_path / "b.png", "--checkpoint", "best")
    assert code == 2 and "no best checkpoint recorded" in one_line(err)
    assert not (tmp_path / "x").exists() and not (tmp_path / "b.png").exists()
    code, _, err = in_process(capsys, "export", run, "--out", tmp_path / "exported")
    assert code == 0, err
    code, out, err = in_process(capsys, "sample", tmp_path / "exported", "--n", 2, "--out", tmp_path / "c.png",
                                "--device", "cpu")
    assert code == 0 and f"{tmp_path / 'exported'} (step 2)" in out, err
    code, _, err = in_process(capsys, "sample", tmp_path / "exported", "--n", 2, "--out", tmp_path / "c.png",
                              "--checkpoint", "last")
    assert code == 2 and "is an export folder" in one_line(err)


@pytest.mark.parametrize("name", ["../../untrusted/evil.pt", "/tmp/evil.pt", "sub/step-00000001.pt", "evil.pt"])
def test_best_json_never_leads_outside_the_checkpoints_folder(run, tmp_path, capsys, name):
    evil = tmp_path / "untrusted" / "evil.pt"
    evil.parent.mkdir()
    shutil.copy(run / "checkpoints" / STEP1, evil)  # a loadable checkpoint where best.json points
    best = write_best(run, {"step": 1, "fid": 1.0, "file": name})
    code, _, err = in_process(capsys, "export", run, "--out", tmp_path / "x", "--checkpoint", "best")
    line = one_line(err)
    assert code == 2 and line.startswith(f"{best}: file: ") and "not followed" in line
    assert not (tmp_path / "x").exists()
    # by default a broken best.json is passed over, with a warning, for the last checkpoint
    code, out, err = in_process(capsys, "export", run, "--out", tmp_path / "y")
    assert code == 0 and f"{STEP2} (step 2, last)" in out and "ganzoo: warning:" in err and "not followed" in err


@pytest.mark.parametrize("content, expect", [
    ("{not json", "not readable JSON"),
    ("[1, 2]", "not a JSON object"),
    ({"step": 1, "fid": 2.0}, "file: missing"),
    ({"step": 1, "fid": "abc", "file": STEP1}, "fid: 'abc' is not a finite number"),
    ({"step": 2, "fid": 2.0, "file": STEP1}, "step: 2 is not the step of step-00000001.pt"),
    ({"step": 7, "fid": 2.0, "file": "step-00000007.pt"}, "names step-00000007.pt, which does not exist"),
])
def test_a_broken_best_json_is_one_line_or_passed_over(run, tmp_path, capsys, content, expect):
    best = write_best(run, content)
    code, _, err = in_process(capsys, "sample", run, "--n", 2, "--out", tmp_path / "a.png", "--checkpoint", "best")
    assert code == 2 and one_line(err).startswith(f"{best}: ") and expect in one_line(err)
    code, out, err = in_process(capsys, "sample", run, "--n", 2, "--out", tmp_path / "a.png", "--device", "cpu")
    assert code == 0 and "(step 2, last)" in out and expect in err


# ----------------------------------------------------------------------------- damage
def test_a_flipped_bit_is_refused_by_sample_export_and_eval(run, tmp_path, capsys):
    last = run / "checkpoints" / STEP2
    flip_a_bit(last)
    for cmd in (["sample", run, "--n", 2, "--out", tmp_path / "a.png", "--device", "cpu"],
                ["export", run, "--out", tmp_path / "x"], ["export", last, "--out", tmp_path / "x"],
                ["eval", run, "--device", "cpu"]):
        code, _, err = in_process(capsys, *cmd)
        assert code == 2, cmd
        assert one_line(err) == f"{last}: damaged checkpoint: its content does not match its sha256 digest"
    assert not (tmp_path / "a.png").exists() and not (tmp_path / "x").exists()


def test_resume_falls_back_past_a_damaged_checkpoint_and_sets_it_aside(run, tmp_path):
    ckpts = run / "checkpoints"
    flip_a_bit(ckpts / STEP2)
    damaged = (ckpts / STEP2).read_bytes()
    out = ganzoo("run", "--resume", run, "--device", "cpu", "--no-progress", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert f"resuming from {STEP1} (step 1)" in out.stderr and "damaged" in out.stderr
    assert (ckpts / (STEP2 + ".damaged")).read_bytes() == damaged  # kept for inspection, out of the way
    assert load_checkpoint(ckpts / STEP2)["step"] == 2  # step 2 trained again from step 1
    assert "finished 2 steps" in out.stdout


def test_resume_with_no_usable_checkpoint_refuses_and_changes_nothing(run, tmp_path):
    ckpts = run / "checkpoints"
    (ckpts / STEP1).write_bytes((ckpts / STEP1).read_bytes()[:200])  # truncated
    flip_a_bit(ckpts / STEP2)
    before = snapshot(run)
    out = ganzoo("run", "--resume", run, "--device", "cpu", "--no-progress", cwd=tmp_path)
    assert out.returncode == 2
    line = one_line(out.stderr)
    assert line.startswith(f"{run}: cannot resume: no checkpoint") and STEP1 in line and STEP2 in line
    assert "sha256" in line and "unreadable" in line and "nothing was changed" in line
    assert snapshot(run) == before  # metrics.jsonl, checkpoints: all as they were


def test_checkpoints_without_a_digest_still_load_and_resume(run, tmp_path, capsys):
    for name in (STEP1, STEP2):
        resave(run / "checkpoints" / name, lambda c: None, digest=False)
        assert "sha256" not in torch.load(run / "checkpoints" / name, weights_only=True)
    code, out, err = in_process(capsys, "sample", run, "--n", 2, "--out", tmp_path / "a.png", "--device", "cpu")
    assert code == 0 and "(step 2, last)" in out, err
    path, ckpt = latest_checkpoint(run)
    assert path.name == STEP2 and ckpt["step"] == 2
    out = ganzoo("run", "--resume", run, "--device", "cpu", "--no-progress", "--set", "train.steps=3", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "sha256" in torch.load(run / "checkpoints" / "step-00000003.pt", weights_only=True)  # new ones have it


def test_a_checkpoint_with_a_digest_round_trips_and_any_change_is_caught(tmp_path):
    from ganzoo.training.checkpoint import save_checkpoint

    path = tmp_path / "c.pt"
    payload = {"step": 3, "w": torch.arange(6.0).reshape(2, 3).t(), "opt": {0: {"lr": 1e-4, "betas": (0.0, 0.9)}},
               "ema": None, "flag": True}
    save_checkpoint(path, payload)
    assert load_checkpoint(path)["step"] == 3
    for change in (lambda c: c.__setitem__("step", 4), lambda c: c["w"].add_(1e-7),
                   lambda c: c["opt"][0].__setitem__("lr", 2e-4), lambda c: c.__setitem__("flag", 1)):
        ckpt = torch.load(path, weights_only=True)
        change(ckpt)
        torch.save(ckpt, tmp_path / "d.pt")
        with pytest.raises(CheckpointError, match="does not match its sha256 digest"):
            load_checkpoint(tmp_path / "d.pt")


# ----------------------------------------------------------------------------- payloads
def _other_width_generator(ckpt: dict) -> None:
    from ganzoo.training.build import build_generator

    wide = validate({**ckpt["recipe"], "generator": {**ckpt["recipe"]["generator"], "ch": 8}})
    ckpt["ema"] = ckpt["generator"] = build_generator(wide).state_dict()


@pytest.mark.parametrize("change, key, expect", [
    (lambda c: c.__setitem__("step", "abc"), "step", "'abc' is not a step count"),
    (lambda c: c.pop("generator"), "generator", "missing"),
    (lambda c: c.__setitem__("generator", [1, 2]), "generator", "not a state dict"),
    (_other_width_generator, "ema", "does not fit the generator of its stored recipe"),
])
def test_malformed_checkpoints_are_one_line_errors_for_sample_and_export(run, tmp_path, capsys, change, key, expect):
    last = run / "checkpoints" / STEP2
    resave(last, change)
    for cmd in (["sample", run, "--n", 2, "--out", tmp_path / "a.png", "--device", "cpu"],
                ["export", last, "--out", tmp_path / "x"]):
        code, _, err = in_process(capsys, *cmd)
        line = one_line(err)
        assert code == 2 and line.startswith(f"{last}: {key}: ") and expect in line, line
    assert not (tmp_path / "a.png").exists() and not (tmp_path / "x").exists()


@pytest.mark.parametrize("change, expect", [
    (lambda c: c["recipe"].__setitem__("seed", 99), "written by another recipe (seed is 99 there, 2 in"),
    (_other_width_generator, "generator: does not fit the generator of"),
])
def test_resuming_from_another_recipes_checkpoint_is_refused(run, tmp_path, change, expect):
    resave(run / "checkpoints" / STEP2, change)
    before = snapshot(run)
    out = ganzoo("run", "--resume", run, "--device", "cpu", "--no-progress", "--set", "train.steps=3", cwd=tmp_path)
    assert out.returncode == 2
    line = one_line(out.stderr)
    assert line.startswith(f"{run / 'checkpoints' / STEP2}: ") and expect in line, line
    assert snapshot(run) == before


def test_resume_refuses_checkpoints_whose_step_is_not_a_number(run, tmp_path, capsys):
    for name in (STEP1, STEP2):
        resave(run / "checkpoints" / name, lambda c: c.__setitem__("step", "abc"))
    before = snapshot(run)
    code, _, err = in_process(capsys, "run", "--resume", run, "--device", "cpu", "--no-progress")
    assert code == 2 and "step: 'abc' is not a step count" in one_line(err)
    assert snapshot(run) == before


# ----------------------------------------------------------------------------- outputs
def test_outputs_in_the_wrong_kind_of_place_are_one_line_errors(run, tmp_path, capsys):
    (tmp_path / "grid.png").mkdir()
    (tmp_path / "afile").write_text("x")
    code, _, err = in_process(capsys, "sample", run, "--n", 2, "--out", tmp_path / "grid.png", "--device", "cpu")
    assert code == 2 and f"{tmp_path / 'grid.png'}: is a folder" in one_line(err)
    code, _, err = in_process(capsys, "export", run, "--out", tmp_path / "afile")
    assert code == 2 and f"{tmp_path / 'afile'}: exists and is not a folder" in one_line(err)
    code, _, err = in_process(capsys, "export", run, "--out", tmp_path / "afile" / "sub")
    assert code == 2 and "afile is not a folder" in one_line(err)
    assert (tmp_path / "afile").read_text() == "x"


def test_outputs_on_a_read_only_disk_are_one_line_errors(run, capsys, tmpfs):  # noqa: F811
    disk = tmpfs("1m", read_only=True)
    code, _, err = in_process(capsys, "sample", run, "--n", 2, "--out", disk / "g.png", "--device", "cpu")
    assert code == 2 and f"{disk / 'g.png'}: cannot write in {disk}" in one_line(err)
    code, _, err = in_process(capsys, "export", run, "--out", disk / "export")
    assert code == 2 and f"{disk / 'export'}: cannot write in {disk}" in one_line(err)


def test_select_checkpoint_is_the_one_place_that_chooses(run):
    write_best(run, {"step": 1, "fid": 4.0, "file": STEP1})
    assert (select_checkpoint(run).path.name, select_checkpoint(run).why) == (STEP1, "best by FID 4.00")
    assert select_checkpoint(run, "last").path.name == STEP2
    with pytest.raises(CheckpointError, match="not one of best, last"):
        select_checkpoint(run, "newest")
    with pytest.raises(CheckpointError, match="no such run folder or checkpoint"):
        select_checkpoint(run / "nope")
