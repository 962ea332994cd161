"""Where the baseline's FID curve flattens (issue 19: "at least 50k G steps, or until the no-attention
baseline's FID curve flattens, whichever is later. Measure that point and state it"): the rule against
hand-computed curves, and the section `ganzoo report` writes with it."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO
from ganzoo.recipe import load_recipe
from ganzoo.reporting import Run, Variant, flattening, flattening_section

RECIPE = load_recipe(REPO / "recipes" / "ablations" / "none.yaml")


def _variant(*curves: dict[int, float]) -> Variant:
    runs = [Run(Path(f"/runs/none-s{i}"), RECIPE.model_copy(update={"seed": i}),
                [{"step": s, "eval/fid": v} for s, v in sorted(c.items())]) for i, c in enumerate(curves)]
    return Variant("ablation-none", runs)


def test_the_curve_flattens_at_the_first_step_no_later_evaluation_beats_by_more_than_the_tolerance():
    # means over the two seeds: 31, 21, 16, 15.3, 15.05. From 20k the later best (15.05) is 5.95 better;
    # from 30k it is 0.95 better (<= 1) with two evaluations after it: the curve flattens at 30k
    v = _variant({10_000: 30, 20_000: 20, 30_000: 15, 40_000: 14.5, 50_000: 14.3},
                 {10_000: 32, 20_000: 22, 30_000: 17, 40_000: 16.1, 50_000: 15.8})
    f = flattening(v)
    assert [s for s, _ in f.points] == [10_000, 20_000, 30_000, 40_000, 50_000]
    assert f.points[2][1] == pytest.approx(16.0) and f.points[-1][1] == pytest.approx(15.05)
    assert f.step == 30_000 and f.seeds == 2
    assert "flattens at **step 30,000**" in f.sentence and "past it by 2 evaluations" in f.sentence
    assert flattening(v, tolerance=0.5).step is None  # 0.95 is more than half a point: still improving
    assert flattening(v, tolerance=6.0).step == 20_000


def test_a_curve_still_improving_or_too_short_says_so():
    still = flattening(_variant({1400: 64.9, 2800: 43.3, 4200: 37.5, 5600: 31.3}))
    assert still.step is None
    # the last step with two evaluations after it is 2,800: 43.3 - 31.3 = 12 FID still gained after it
    assert "**not flattened** within the runs' 5,600 steps" in still.sentence
    assert "after step 2,800 it still improved by 12.00 FID" in still.sentence
    # a late small gain does not count when fewer than two evaluations follow
    short = flattening(_variant({10_000: 20.0, 20_000: 19.9}))
    assert short.step is None and "too few to tell" in short.sentence
    assert "nothing to measure" in flattening(_variant({})).sentence


def test_only_steps_every_seed_evaluated_count():
    # seed 1 stopped by a time limit at 31,278 and was evaluated there: not a step of the mean curve
    f = flattening(_variant({10_000: 20, 20_000: 15, 30_000: 14, 40_000: 13.5},
                            {10_000: 22, 20_000: 17, 30_000: 16, 31_278: 15.8, 40_000: 15.5}))
    assert [s for s, _ in f.points] == [10_000, 20_000, 30_000, 40_000]
    lines = "\n".join(flattening_section(_variant({10_000: 20, 20_000: 15, 30_000: 14.8, 40_000: 14.6})))
    assert "## Training budget: where ablation-none's FID curve flattens" in lines
    assert "10,000: 20.00 · 20,000: 15.00 · 30,000: 14.80 · 40,000: 14.60" in lines
    assert "flattens at **step 20,000**" in lines


def test_report_states_it_and_rejects_a_bad_tolerance(tmp_path):
    runs = REPO / "docs" / "ablations" / "runs"
    dirs = [runs / f"ablation-{v}-s{s}" for v in ("none", "feat16") for s in (0, 1)]
    out = tmp_path / "r.md"
    cmd = [sys.executable, "-m", "ganzoo", "report", *map(str, dirs), "--out", str(out), "--no-paper-table"]
    done = subprocess.run([*cmd, "--flat-tolerance", "20"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    text = out.read_text()
    assert "## Training budget: where ablation-none's FID curve flattens" in text
    assert "flattens at **step 2,800**" in text  # 43.32 - 31.29 = 12.03 <= 20
    bad = subprocess.run([*cmd, "--flat-tolerance", "0"], capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "--flat-tolerance: must be a positive number" in bad.stderr
    assert "Traceback" not in bad.stderr
    shutil.rmtree(tmp_path / "r", ignore_errors=True)
