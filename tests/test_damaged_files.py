"""Damaged or foreign files where a run keeps its checkpoints and metrics (audit of checkpoint and
metrics reading).

* checkpoints: any bytes at all (text, JSON, a PNG, zeros, random bytes, an empty file) in a
  ``step-N.pt`` are one line naming the file, "not a readable ganzoo checkpoint", exit 2, no
  traceback, in ``sample``, ``eval``, ``export`` and ``attention-maps``; ``run --resume`` sets such a
  newest checkpoint aside as ``*.damaged`` and resumes from the one before. Only a real pickle whose
  globals the weights-only unpickler rejects is "refused for safety"; no message ever suggests
  ``weights_only=False`` (torch's own advice, which would run the file's code).
* metrics.jsonl: lines that are not UTF-8 JSON objects with an integer step are skipped by
  ``read_metrics``, and a resume drops them (with a warning) instead of failing after it has
  rewritten ``recipe.yaml``.
"""
from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch
import yaml

from ganzoo.training.checkpoint import FORMAT, FORMAT_VERSION, CheckpointError, load_checkpoint
from ganzoo.training.logs import read_metrics
from test_checkpoints import STEP1, STEP2, finished, ganzoo, in_process, one_line, run, snapshot  # noqa: F401

pytestmark = pytest.mark.usefixtures("one_cpu_thread")  # see conftest.py


class _RunsCode:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _zip_of(tmp: Path) -> bytes:
    import zipfile

    z = tmp / "z.zip"
    with zipfile.ZipFile(z, "w") as f:
        f.writestr("x.txt", "hi")
    return z.read_bytes()


# what torch.load(weights_only=True) made of these: KeyError, IndexError, "legacy .tar format ... will
# likely succeed", "Weights only load failed ... weights_only set to False will likely succeed", EOFError
CONTENTS = {
    "hello": lambda tmp: b"hello\n",
    "yaml": lambda tmp: b"a: 1\n",
    "json": lambda tmp: b'{"step": 3, "generator": {}}\n',
    "png": lambda tmp: b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 2,
    "zeros": lambda tmp: bytes(4096),
    "random": lambda tmp: bytes((i * 7919 + 13) % 251 for i in range(1000)),
    "one byte": lambda tmp: b"\x80",
    "empty": lambda tmp: b"",
    "plain pickle": lambda tmp: pickle.dumps({"format": FORMAT}, protocol=2),
    "other zip": _zip_of,
}


def _assert_not_a_checkpoint(line: str, path: Path) -> None:
    assert line.startswith(f"{path}: unreadable checkpoint: not a readable ganzoo checkpoint ("), line
    assert "weights_only" not in line and "pickled objects" not in line and "refused" not in line, line


@pytest.mark.parametrize("name", CONTENTS)
def test_any_bytes_in_a_checkpoint_are_one_line_errors_without_torch_advice(tmp_path, name):
    path = tmp_path / "step-00000003.pt"
    path.write_bytes(CONTENTS[name](tmp_path))
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    assert "\n" not in str(info.value)
    _assert_not_a_checkpoint(str(info.value), path)


def test_only_a_pickle_with_code_is_refused_for_safety(tmp_path):
    marker = tmp_path / "pwned"
    for name, kwargs in (("zip.pt", {}), ("legacy.pt", {"_use_new_zipfile_serialization": False})):
        evil = tmp_path / name
        torch.save({"format": FORMAT, "version": FORMAT_VERSION, "step": 1, "x": _RunsCode(marker)}, evil, **kwargs)
        with pytest.raises(CheckpointError) as info:
            load_checkpoint(evil)
        line = str(info.value)
        assert line.startswith(f"{evil}: refused: not a weights-only checkpoint (it holds pickled objects"), line
        assert "refused for safety" in line and "weights_only" not in line and "\n" not in line, line
    plain = tmp_path / "plain.pkl"
    plain.write_bytes(pickle.dumps(_RunsCode(marker), protocol=2))
    with pytest.raises(CheckpointError, match="refused: not a weights-only checkpoint"):
        load_checkpoint(plain)
    assert not marker.exists()


def test_commands_given_a_text_file_as_checkpoint_say_so_in_one_line(run, tmp_path, capsys):
    last = run / "checkpoints" / STEP2
    last.write_text("hello\n")  # was: KeyError: 101 from torch's unpickler, a traceback, exit 1
    out = ganzoo("sample", last, "--n", 2, "--out", tmp_path / "a.png", "--device", "cpu", cwd=tmp_path)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    _assert_not_a_checkpoint(one_line(out.stderr), last)
    last.write_text("a: 1\n")  # was: IndexError
    for cmd in (["sample", run, "--n", 2, "--out", tmp_path / "a.png", "--device", "cpu"],
                ["eval", last, "--device", "cpu"], ["eval", run, "--device", "cpu"],
                ["export", last, "--out", tmp_path / "x"], ["export", run, "--out", tmp_path / "x"],
                ["attention-maps", last, "--out", tmp_path / "m.png", "--device", "cpu"],
                ["attention-maps", run, "--out", tmp_path / "m.png", "--device", "cpu"]):
        code, _, err = in_process(capsys, *cmd)
        assert code == 2, (cmd, err)
        _assert_not_a_checkpoint(one_line(err), last)
    assert not any((tmp_path / n).exists() for n in ("a.png", "x", "m.png"))


def test_resume_sets_a_text_file_aside_and_resumes_from_the_one_before(run, tmp_path):
    ckpts = run / "checkpoints"
    (ckpts / STEP2).write_bytes(b"hello\n")  # was: KeyError: 101, a traceback, exit 1, nothing resumed
    out = ganzoo("run", "--resume", run, "--device", "cpu", "--no-progress", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "Traceback" not in out.stderr and f"resuming from {STEP1} (step 1)" in out.stderr
    assert "not a readable ganzoo checkpoint" in out.stderr and "weights_only" not in out.stderr
    assert (ckpts / (STEP2 + ".damaged")).read_bytes() == b"hello\n"  # kept for inspection, out of the way
    assert load_checkpoint(ckpts / STEP2)["step"] == 2  # step 2 trained again from step 1
    assert [r["step"] for r in read_metrics(run)] == [1, 2]


def test_resume_in_process_sets_yaml_text_aside_too(run, capsys):
    ckpts = run / "checkpoints"
    (ckpts / STEP2).write_bytes(b"a: 1\n")  # was: IndexError
    with pytest.warns(UserWarning, match=f"resuming from {STEP1} .*not a readable ganzoo checkpoint"):
        code, _, err = in_process(capsys, "run", "--resume", run, "--device", "cpu", "--no-progress")
    assert code == 0 and "Traceback" not in err, err
    assert (ckpts / (STEP2 + ".damaged")).read_bytes() == b"a: 1\n"
    assert load_checkpoint(ckpts / STEP2)["step"] == 2


def test_resume_with_only_unreadable_checkpoints_refuses_and_changes_nothing(run, tmp_path):
    ckpts = run / "checkpoints"
    (ckpts / STEP1).write_bytes(bytes(4096))
    (ckpts / STEP2).write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    before = snapshot(run)
    out = ganzoo("run", "--resume", run, "--device", "cpu", "--no-progress", "--set", "train.steps=3", cwd=tmp_path)
    assert out.returncode == 2
    line = one_line(out.stderr)
    assert line.startswith(f"{run}: cannot resume: no checkpoint") and "nothing was changed" in line
    assert "not a readable ganzoo checkpoint" in line and "weights_only" not in line
    assert snapshot(run) == before


# ----------------------------------------------------------------------------- metrics.jsonl
def test_read_metrics_keeps_only_json_objects_with_an_integer_step(tmp_path):
    lines = [b'{"step": 1, "loss/d": 1.5}', b'{"step": "abc"}', b'{"step": 2, "x": "\xff"}', b'{"loss/d": 2}',
             b'{"step": true}', b'{"step": -1}', b'{"step": 1.5}', b"[1, 2]", b'"text"', b"\xff\xfe",
             b"[" * 100000, b'{"step": 2.0, "eval/fid": "nan"}', b'{"step": 3, "loss/d": 0.5}\r', b"",
             b'{"step": 4, "lo']
    (tmp_path / "metrics.jsonl").write_bytes(b"\n".join(lines))
    rows = read_metrics(tmp_path)
    assert rows == [{"step": 1, "loss/d": 1.5}, {"step": 2, "eval/fid": "nan"}, {"step": 3, "loss/d": 0.5}]
    assert all(type(r["step"]) is int for r in rows)
    assert read_metrics(tmp_path / "nowhere") == []


@pytest.mark.parametrize("bad", [b'{"step": "abc"}\n', b'{"step": 2, "x": "\xff"}\n'])
def test_resume_over_unreadable_metrics_lines_drops_them_and_goes_on(run, tmp_path, bad):
    metrics = run / "metrics.jsonl"
    good = metrics.read_bytes()
    # an unreadable line between readable ones, a readable one past the checkpoint's step, and a torn
    # last line (a write cut short by a kill: dropped quietly, as always)
    metrics.write_bytes(good + bad + b'{"step": 7, "loss/d": 1.0}\n{"step": 8, "lo')
    out = ganzoo("run", "--resume", run, "--device", "cpu", "--no-progress", "--set", "train.steps=3", cwd=tmp_path)
    assert out.returncode == 0, out.stderr  # was: ValueError / UnicodeDecodeError after recipe.yaml was rewritten
    assert "Traceback" not in out.stderr and "dropped 1 unreadable line(s) (line 3:" in out.stderr
    assert yaml.safe_load((run / "recipe.yaml").read_text())["train"]["steps"] == 3
    text = metrics.read_text(encoding="utf-8")
    assert text.startswith(good.decode()) and text.endswith("\n")
    assert [json.loads(line)["step"] for line in text.splitlines()] == [1, 2, 3]  # every line readable, in order
    assert load_checkpoint(run / "checkpoints" / "step-00000003.pt")["step"] == 3
