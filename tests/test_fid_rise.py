"""Issue 16's no-collapse rule ("a long run ... whose FID never rises more than 3 above its best after the
10-minute mark"), measured by `ganzoo report --rise-after`: the rule against hand-computed curves, and the
section the report writes for the committed runs (the finished long run keeps it; the collapsed fast run of
2026-12-02 breaks it)."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO
from ganzoo.recipe import load_recipe
from ganzoo.reporting import Run, fid_rise, rise_section

RECIPE = load_recipe(REPO / "recipes" / "sagan.yaml")


def _run(name: str, evals: list[tuple[int, float | None, float]]) -> Run:
    """A run whose metrics are evaluations (step, seconds of the run's clock or None, FID)."""
    rows = [{"step": s, "eval/fid": f, **({} if t is None else {"time": t})} for s, t, f in evals]
    rows.insert(0, {"step": 1, "time": 80.0, "loss/d": 9.8})  # a training row: no FID, never judged
    return Run(Path(f"/runs/{name}"), RECIPE, rows)


def test_rise_is_measured_against_the_best_so_far_after_the_mark_only():
    # best 11.0 at 80k; after 600 s: 13.4 (its own best so far: rise 0), falling, then 11.1 and 11.2
    r = fid_rise(_run("long", [(10_000, 240, 16.6), (30_000, 540, 13.7), (40_000, 690, 13.4),
                               (80_000, 1290, 11.0), (90_000, 1440, 11.1), (100_000, 1590, 11.2)]), 10)
    assert r.best == (80_000, 11.0)
    assert [s for s, _, _ in r.after] == [40_000, 80_000, 90_000, 100_000]  # 540 s is before the mark
    step, rise = r.largest
    assert step == 100_000 and rise == pytest.approx(0.2)
    # a curve worse than its early best before the mark is not judged there: only what follows the mark counts
    early = fid_rise(_run("early", [(10_000, 300, 20.0), (20_000, 500, 40.0), (30_000, 700, 21.0)]), 10)
    assert early.largest == (30_000, pytest.approx(1.0))


def test_a_collapse_breaks_the_rule_and_a_run_without_evaluations_after_the_mark_is_not_judged():
    # issue 16's fast run: 32.0 / 34.2 / 44.0 / 202.6 at 10k..40k, 323 / 535 / 733 / 874 s
    collapsed = _run("fast-s0", [(10_000, 323, 32.02), (20_000, 535, 34.18), (30_000, 733, 44.02),
                                 (40_000, 874, 202.59)])
    assert fid_rise(collapsed, 10).largest == (40_000, pytest.approx(170.57))
    short = _run("short-s0", [(5_000, 100, 20.8), (35_000, 564, 14.3)])
    untimed = _run("untimed-s0", [(10_000, None, 30.0), (20_000, None, 80.0)])  # rows without the clock
    assert fid_rise(short, 10).largest is None and fid_rise(untimed, 10).largest is None
    # one step evaluated twice (a time-limit stop, then a resumed session), once without the clock: no error
    twice = _run("twice-s0", [(30_000, 700, 14.0), (30_000, None, 14.0), (40_000, 800, 15.0)])
    assert fid_rise(twice, 10).largest == (40_000, pytest.approx(1.0))
    text = "\n".join(rise_section([collapsed, short, untimed], 10))
    assert "## No collapse after minute 10" in text
    assert "| fast-s0 | 2 | 40,000 | 32.02 (10,000) | 170.57 (40,000) | **no** |" in text
    assert "| short-s0 | 0 | - | 14.30 (35,000) | - | - (nothing after the mark) |" in text
    assert "0 of 1 run with evaluations after minute 10 kept within 3 FID of their best." in text
    assert "No run has an evaluation after minute 10" in "\n".join(rise_section([short], 10))
    # a looser tolerance lets the same run pass
    assert "| yes |" in "\n".join(rise_section([collapsed], 10, tolerance=200))


def test_report_judges_the_committed_runs_and_rejects_a_bad_mark(tmp_path):
    runs = REPO / "docs" / "quality" / "runs"
    out = tmp_path / "r.md"
    cmd = [sys.executable, "-m", "ganzoo", "report", str(runs / "long3-s0"), str(runs / "fast-s0"), "--out", str(out),
           "--no-paper-table", "--no-paired", "--variant-from", "folder"]
    done = subprocess.run([*cmd, "--rise-after", "10"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    text = out.read_text()
    assert "| long3-s0 | 7 | 100,000 | 11.07 (80,000) | 0.10 (100,000) | yes |" in text
    assert "| fast-s0 | 2 | 40,000 | 32.02 (10,000) | 170.56 (40,000) | **no** |" in text
    assert "1 of 2 runs with evaluations after minute 10 kept within 3 FID of their best." in text
    for bad, flag in (("0", "--rise-after"), ("-1", "--rise-tolerance"), ("nan", "--rise-after")):
        res = subprocess.run([*cmd, flag, bad], capture_output=True, text=True, timeout=300)
        assert res.returncode == 2 and f"{flag}: must be a positive number" in res.stderr
        assert "Traceback" not in res.stderr
    shutil.rmtree(tmp_path / "r", ignore_errors=True)
