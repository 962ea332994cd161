"""`ganzoo report` on bad run folders: a metrics row without a usable ``step``, or one run folder given twice,
is a one-line error (exit 2) that names the file or folder, and the previous report (its markdown and its
images) is left exactly as it was. Run folders are copies of the committed ones under docs/: no training."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from conftest import REPO, run_ganzoo

RUNS = REPO / "docs" / "ablations" / "runs"
GOOD_LINES = 2  # rows kept ahead of the bad one, so that the error must name line 3


def report(*args) -> object:
    return run_ganzoo("report", *map(str, args), env={"OMP_NUM_THREADS": "1"}, timeout=300)


def snapshot(folder: Path) -> dict[str, bytes | None]:
    """Everything under ``folder`` (hidden entries included): each file's bytes, None for a folder."""
    return {str(p.relative_to(folder)): p.read_bytes() if p.is_file() else None for p in sorted(folder.rglob("*"))}


def assert_one_line_error(out, *needles: str) -> str:
    assert out.returncode == 2, out.stderr
    assert "Traceback" not in out.stderr, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    """A folder holding run ``good`` (a committed run) and ``out/rep.md`` with its images, built once."""
    root = tmp_path_factory.mktemp("built")
    shutil.copytree(RUNS / "ablation-none-s0", root / "good")
    out = report(root / "good", "--out", root / "out" / "rep.md")
    assert out.returncode == 0, out.stderr
    assert len(list((root / "out" / "rep").glob("*.png"))) >= 2
    return root


@pytest.fixture
def previous(built, tmp_path) -> Path:
    """A fresh copy of ``built`` for one test (its runs and previous report)."""
    shutil.copytree(built, tmp_path / "w")
    return tmp_path / "w"


@pytest.mark.parametrize("row", ['{"loss/d": 1.0}', '{"step": "100", "loss/d": 1.0}', '{"step": null}',
                                 '{"step": 1e400}', '{"step": 2.5}', '{"step": true}'],
                         ids=["missing", "string", "null", "overflow", "fraction", "bool"])
def test_a_metrics_row_without_a_usable_step_is_one_line_and_keeps_the_previous_report(previous, row):
    m2 = previous / "m2"
    shutil.copytree(RUNS / "ablation-none-s1", m2)
    metrics = m2 / "metrics.jsonl"
    good = metrics.read_text().splitlines()[:GOOD_LINES]
    metrics.write_text("\n".join([*good, row, *good]) + "\n")
    before = snapshot(previous / "out")

    out = report(previous / "good", m2, "--out", previous / "out" / "rep.md")

    assert_one_line_error(out, str(metrics), f"line {GOOD_LINES + 1}", "step")
    assert snapshot(previous / "out") == before  # same .md, same images, no temporary leftovers


def test_a_torn_last_line_is_skipped_as_the_run_logs_read_it(previous):
    m2 = previous / "m2"
    shutil.copytree(RUNS / "ablation-none-s1", m2)
    with open(m2 / "metrics.jsonl", "a") as f:
        f.write('{"step": 99999, "loss/d"')  # killed mid-write

    out = report(previous / "good", m2, "--out", previous / "out" / "rep.md")

    assert out.returncode == 0, out.stderr
    assert "(2 runs)" in (previous / "out" / "rep.md").read_text()
    assert sorted(p.name for p in (previous / "out").iterdir()) == ["rep", "rep.md"]


@pytest.mark.parametrize("second", ["good", "good/", "m2/../good", "link"])
def test_one_run_folder_given_twice_is_refused(previous, second):
    (previous / "m2").mkdir()
    (previous / "link").symlink_to(previous / "good", target_is_directory=True)
    before = snapshot(previous / "out")

    out = report(previous / "good", str(previous / second), "--out", previous / "out" / "rep.md")

    line = assert_one_line_error(out, str(previous / "good"))
    assert "twice" in line or "same run folder" in line
    assert snapshot(previous / "out") == before


def test_a_failure_while_writing_keeps_the_previous_report(previous, monkeypatch):
    from ganzoo import reporting

    def fail(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(reporting, "_plot_final", fail)
    before = snapshot(previous / "out")
    with pytest.raises(reporting.ReportError, match="No space left"):
        reporting.build_report([previous / "good"], previous / "out" / "rep.md")
    assert snapshot(previous / "out") == before
