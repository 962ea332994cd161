"""Run folders (issue 17): what makes a folder a run folder, and what ``--force`` may delete.

A run folder is recognised by ganzoo's marker ``ganzoo-run.json`` (written right after ``recipe.yaml``),
or, for folders written before the marker existed, by a ``recipe.yaml`` with run files beside it; a
folder that merely holds a file named ``recipe.yaml`` is not one. ``--force`` deletes only what ganzoo
wrote, and refuses (exit 2, one line, nothing changed) a folder that also holds anything else.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import tiny_recipe
from ganzoo.training.rundir import MARKER_FILE, foreign_entries, is_run_folder

TINY = tiny_recipe(seed=1, data={"num_images": 24, "num_test_images": 8}, generator={"z_dim": 8},
                   train={"steps": 1, "batch_size": 4, "log_every": 1, "sample_every": 1, "checkpoint_every": 1})
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
ENV.pop("GANZOO_INCEPTION_WEIGHTS", None)

pytestmark = pytest.mark.usefixtures("one_cpu_thread")  # see conftest.py


def ganzoo(*args, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ganzoo", *map(str, args)], cwd=cwd, env=ENV,
                          capture_output=True, text=True, timeout=240)


def one_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip() and "Warning" not in line]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


def tree(folder: Path) -> dict[str, bytes | None]:
    return {str(p.relative_to(folder)): p.read_bytes() if p.is_file() else None for p in sorted(folder.rglob("*"))}


@pytest.fixture
def recipe(tmp_path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY))
    return path


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A finished 1-step run folder (copied by the tests that use it)."""
    tmp = tmp_path_factory.mktemp("runs")
    (tmp / "tiny.yaml").write_text(yaml.safe_dump(TINY))
    out = ganzoo("run", tmp / "tiny.yaml", "--out", tmp / "runs", "--device", "cpu", "--no-progress", cwd=tmp)
    assert out.returncode == 0, out.stderr
    return tmp / "runs" / "tiny"


def test_force_never_deletes_a_users_folder_that_holds_a_recipe_yaml(tmp_path, recipe):
    user = tmp_path / "out" / "userproj"
    (user / "data").mkdir(parents=True)
    (user / "data" / "images.npz").write_bytes(b"\x00" * 10)
    (user / "notes.txt").write_text("three weeks of notes")
    (user / "recipe.yaml").write_text(recipe.read_text())
    before = tree(user)
    out = ganzoo("run", recipe, "--out", tmp_path / "out", "--name", "userproj", "--force", "--device", "cpu", cwd=tmp_path)
    assert out.returncode == 2
    line = one_line(out.stderr)
    assert line.startswith(f"{user}: ") and "not a ganzoo run folder" in line
    assert tree(user) == before


@pytest.mark.parametrize("extra", ["notes.txt", "data/x.npz", "checkpoints/mine.pt", "samples/figure.pdf", "tb/notes"])
def test_force_refuses_a_run_folder_holding_foreign_files_and_changes_nothing(tmp_path, recipe, finished, extra):
    run = tmp_path / "runs" / "tiny"
    shutil.copytree(finished, run)
    assert foreign_entries(run) == []
    (run / extra).parent.mkdir(exist_ok=True)
    (run / extra).write_text("not ganzoo's")
    before = tree(run)
    out = ganzoo("run", recipe, "--out", tmp_path / "runs", "--force", "--device", "cpu", cwd=tmp_path)
    assert out.returncode == 2
    line = one_line(out.stderr)
    assert line.startswith(f"{run}: --force replaces only what ganzoo wrote") and extra.split("/")[0] in line
    assert "nothing was changed" in line
    assert tree(run) == before


def test_force_replaces_a_run_folder_of_ganzoos_own_files(tmp_path, recipe, finished):
    runs = tmp_path / "runs"
    run = runs / "tiny"
    shutil.copytree(finished, run)
    assert json.loads((run / MARKER_FILE).read_text())["format"] == "ganzoo-run"
    (run / "samples" / "step-00000007.png").write_bytes(b"old grid")  # an older run's files
    (run / "checkpoints" / "best.json").write_text("{}")
    out = ganzoo("run", recipe, "--out", runs, "--force", "--device", "cpu", "--no-progress", "--set", "seed=4",
                 cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert sorted(p.name for p in (run / "samples").iterdir()) == ["step-00000001.png"]
    assert not (run / "checkpoints" / "best.json").exists()
    assert yaml.safe_load((run / "recipe.yaml").read_text())["seed"] == 4


def test_a_run_folder_from_before_the_marker_resumes_and_gets_the_marker(tmp_path, finished):
    run = tmp_path / "runs" / "tiny"
    shutil.copytree(finished, run)
    (run / MARKER_FILE).unlink()  # as written by ganzoo before the marker
    assert is_run_folder(run)
    out = ganzoo("run", "--resume", run, "--device", "cpu", "--no-progress", "--set", "train.steps=2", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "finished 2 steps" in out.stdout and (run / MARKER_FILE).is_file()


def test_a_lone_recipe_yaml_is_not_a_run_folder_but_a_marked_one_is(tmp_path):
    folder = tmp_path / "f"
    folder.mkdir()
    (folder / "recipe.yaml").write_text("name: x\n")
    assert not is_run_folder(folder)
    (folder / MARKER_FILE).write_text("not json")  # a marker ganzoo did not write does not count
    assert not is_run_folder(folder)
    (folder / MARKER_FILE).write_text(json.dumps({"format": "ganzoo-run", "version": 1}))
    assert is_run_folder(folder)
    (folder / "checkpoints").mkdir()
    (folder / "checkpoints" / ".step-00000003.pt.ab12.tmp").write_bytes(b"half")
    (folder / ".recipe.yaml.x1.tmp").write_text("half")
    assert foreign_entries(folder) == []
    (folder / "checkpoints" / "notes").mkdir()
    (folder / "samples").write_text("a file where ganzoo keeps a folder")
    assert foreign_entries(folder) == ["checkpoints/", "samples"]
