"""Paired differences against the baseline in `ganzoo report` (issue 19): the maths against a hand-computed
example, the verdicts, the choice of baseline, and a report built from incomplete run folders."""
from __future__ import annotations

import math
import shutil
import statistics
from pathlib import Path

import pytest

from conftest import REPO
from ganzoo.errors import GanzooError
from ganzoo.reporting import Paired, Variant, holm, paired_family, pick_baseline, t_quantile_975

RUNS = REPO / "docs" / "ablations" / "runs"


@pytest.mark.parametrize("dof, table", [(1, 12.706), (2, 4.303), (3, 3.182), (4, 2.776), (9, 2.262),
                                        (29, 2.045), (30, 2.042), (120, 1.980)])
def test_t_quantiles_match_the_printed_table(dof, table):
    assert t_quantile_975(dof) == pytest.approx(table, abs=6e-4)


def test_paired_maths_against_a_hand_computed_example():
    # differences -2, -4, -3: mean -3, sd 1, half-width t_{0.975,2} * 1 / sqrt(3) = 4.303 / 1.732 = 2.484
    p = Paired("attn", "none", [0, 1, 2], [-2.0, -4.0, -3.0])
    assert p.mean == pytest.approx(-3.0)
    assert p.sd == pytest.approx(1.0)
    lo, hi = p.interval
    assert lo == pytest.approx(-3 - 4.3027 / math.sqrt(3), abs=1e-3)
    assert hi == pytest.approx(-3 + 4.3027 / math.sqrt(3), abs=1e-3)
    assert hi == pytest.approx(-0.5158, abs=1e-3)
    assert p.verdict.startswith("better")


def test_p_value_against_hand_computed_t_tests():
    # -2, -4, -3: t = 3 / (1 / sqrt 3) = 5.196 on 2 dof; P(|T| > t) = 1 - t / sqrt(2 + t^2) for 2 dof
    t = 3 * math.sqrt(3)
    assert Paired("v", "b", [0, 1, 2], [-2.0, -4.0, -3.0]).p_value == pytest.approx(1 - t / math.sqrt(2 + t * t))
    # 1 dof (Cauchy): P(|T| > t) = 1 - 2 atan(t) / pi; +1, +3: mean 2, sd sqrt 2, t = 2
    assert Paired("v", "b", [0, 1], [1.0, 3.0]).p_value == pytest.approx(1 - 2 * math.atan(2.0) / math.pi)
    assert Paired("v", "b", [0, 1], [2.0, 2.0]).p_value == 0.0  # no spread at all
    assert Paired("v", "b", [0], [2.0]).p_value is None


@pytest.mark.parametrize("dof", [1, 2, 3, 5, 9])
def test_p_is_below_005_exactly_when_the_interval_excludes_zero(dof):
    # at the interval's edge (mean = half-width) p is 0.05: on either side, both tests agree
    n = dof + 1
    for scale in (0.99, 1.01):
        diffs = [float(i) for i in range(n)]
        sd = Paired("v", "b", list(range(n)), diffs).sd
        mean = scale * t_quantile_975(dof) * sd / math.sqrt(n)
        p = Paired("v", "b", list(range(n)), [d - statistics.mean(diffs) + mean for d in diffs])
        assert (p.p_value < 0.05) == (p.interval[0] > 0), (dof, scale, p.p_value, p.interval)


def test_holm_against_a_hand_computed_example():
    # sorted 0.01, 0.02, 0.04, 0.3 -> x4, x3, x2, x1 = 0.04, 0.06, 0.08, 0.3; given out of order
    assert holm([0.3, 0.04, 0.01, 0.02]) == pytest.approx([0.3, 0.08, 0.04, 0.06])
    assert holm([0.02, 0.011]) == pytest.approx([0.022, 0.022])  # never below the smaller one's
    assert holm([0.5, 0.6, 0.9]) == [1.0, 1.0, 1.0]  # 1.5 and 1.2 capped at 1; 0.9 kept up to them
    assert holm([]) == []


def test_a_call_that_does_not_survive_the_correction_says_so():
    # p about 0.035 alone: called when it is the only comparison, not among three with larger p's
    alone = Paired("v", "b", [0, 1, 2], [-2.0, -4.0, -3.0])
    assert alone.verdict.startswith("better")
    corrected = Paired("v", "b", [0, 1, 2], [-2.0, -4.0, -3.0], adjusted_p=3 * alone.p_value)
    assert corrected.verdict.startswith("not separated at this budget (p = 0.035 alone, 0.105 corrected)")


def test_the_cifar10_family_is_corrected_for_six_comparisons():
    variants = _load(*[f"ablation-{v}-s{s}" for v in ("none", "feat8", "feat16", "feat32", "residual8",
                                                        "residual16", "residual32") for s in (0, 1)])
    family = paired_family(variants, pick_baseline(variants))
    assert len(family) == 6 and all(p.adjusted_p is not None for p in family)
    feat16 = next(p for p in family if p.variant == "ablation-feat16")
    assert feat16.p_value == pytest.approx(0.0037, abs=1e-4)
    assert feat16.adjusted_p == pytest.approx(6 * feat16.p_value)  # the smallest of six
    assert feat16.verdict.startswith("worse")
    assert [p.variant for p in family if not p.verdict.startswith("not separated")] == ["ablation-feat16"]


@pytest.mark.parametrize("diffs, verdict", [
    ([-2.0, -4.0, -3.0], "better"),
    ([2.0, 4.0, 3.0], "worse"),
    ([-2.0, 4.0, -3.0], "not separated at this budget"),
    ([-3.0], "one seed: no interval"),
    ([], "no seed in common"),
])
def test_verdicts(diffs, verdict):
    assert Paired("v", "b", list(range(len(diffs))), diffs).verdict.startswith(verdict)


def _load(*names: str) -> list[Variant]:
    from ganzoo.reporting import group, load_runs

    return group(load_runs([RUNS / n for n in names]))


def test_baseline_is_the_variant_named_none_or_the_one_named():
    variants = _load("ablation-feat16-s0", "ablation-none-s0", "ablation-feat8-s0")
    assert pick_baseline(variants).name == "ablation-none"
    assert pick_baseline(variants, "ablation-feat8").name == "ablation-feat8"
    with pytest.raises(GanzooError, match="--baseline nope: no such variant"):
        pick_baseline(variants, "nope")
    assert pick_baseline(_load("ablation-feat16-s0", "ablation-feat8-s0")) is None  # all have attention


def test_report_pairs_by_seed_and_says_what_is_missing(tmp_path):
    """feat16 has seeds 0 and 1, none only seed 0, feat8 seed 1 without an evaluation: the report pairs
    what it can and names the rest."""
    from ganzoo.reporting import build_report

    dirs = []
    for name in ("ablation-feat16-s0", "ablation-feat16-s1", "ablation-none-s0", "ablation-feat8-s1"):
        shutil.copytree(RUNS / name, tmp_path / name, ignore=shutil.ignore_patterns("samples"))
        dirs.append(tmp_path / name)
    metrics = tmp_path / "ablation-feat8-s1" / "metrics.jsonl"
    metrics.write_text("".join(line + "\n" for line in metrics.read_text().splitlines() if '"eval/' not in line))
    out = build_report(dirs, tmp_path / "r.md", paper_table=False)
    text = out.read_text()
    section = text.split("## Paired differences against ablation-none", 1)[1].split("\n## ", 1)[0]
    fid = {}
    for name in ("ablation-feat16-s0", "ablation-none-s0"):
        from ganzoo.training.logs import read_metrics

        fid[name] = [r["eval/fid"] for r in read_metrics(tmp_path / name) if "eval/fid" in r][-1]
    diff = fid["ablation-feat16-s0"] - fid["ablation-none-s0"]
    assert f"| ablation-feat16 | 1 | s0: {diff:+.2f} | {diff:+.2f} | - | - | - | one seed: no interval |" in section
    assert "| ablation-feat8 | 0 | - | - | - | - | - | no seed in common" in section
    assert "ablation-none: no run for seed 1" in section
    assert "ablation-feat8: no run for seed 0" in section
    assert "ablation-feat8: no final FID for seed 1" in section
    # the flag off: no section
    off = build_report(dirs, tmp_path / "off.md", paper_table=False, paired=False).read_text()
    assert "Paired differences" not in off
    assert "gate γ" not in off  # no gammas.json, no checkpoint: no gate column


def test_series_against_minutes_reads_the_runs_clock():
    """FID against wall time (the 10-minute target's axis): the rows' ``time`` (seconds of the run's clock)
    in minutes, the same values as against steps; rows without ``time`` are left out."""
    from ganzoo.reporting import Run, load_runs

    run = load_runs([RUNS / "ablation-none-s0"])[0]
    by_step, by_minutes = run.series("eval/fid"), run.series("eval/fid", x="minutes")
    times = {r["step"]: r["time"] for r in run.rows if "eval/fid" in r}
    assert [v for _, v in by_minutes] == [v for _, v in by_step] and len(by_step) >= 2
    assert [m for m, _ in by_minutes] == [times[s] / 60 for s, _ in by_step]
    bare = Run(run.path, run.recipe, [{k: v for k, v in r.items() if k != "time"} for r in run.rows])
    assert bare.series("eval/fid", x="minutes") == [] and bare.series("eval/fid") == by_step
