"""Ablation reports built from run folders alone (``ganzoo report``).

A report is a markdown file plus a folder of PNGs beside it (``docs/ablations/cifar10.md`` and
``docs/ablations/cifar10/``): a table per variant (attention positions in G and D, parameter count,
images/s, final and best FID and KID as mean +/- std over seeds, steps), a plot of FID against step
per variant, a plot of final FID per variant, a sample grid per variant, the paper's Table 1 for
reference, and the exact commands and recipes. Reports are regenerated from data, never edited.
"""
from __future__ import annotations

import math
import re
import shlex
import shutil
import statistics
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import yaml

from .atomic import atomic_write_text
from .errors import GanzooError
from .recipe import Recipe, load_recipe

# Zhang et al. 2018, Table 1 (ImageNet 128x128, FID; lower is better). Not comparable to ours.
PAPER_TABLE1 = [
    ("no attention", "-", 22.96),
    ("SAGAN feat8", "8", 22.98),
    ("SAGAN feat16", "16", 22.14),
    ("SAGAN feat32", "32", 18.28),
    ("SAGAN feat64", "64", 18.65),
    ("residual feat8", "8", 42.13),
    ("residual feat16", "16", 22.40),
    ("residual feat32", "32", 27.33),
    ("residual feat64", "64", 28.82),
]


class ReportError(GanzooError):
    pass


GAP = "logits/gap"  # D's mean real logit minus its mean fake logit, per log line (computed)
_SEED_SUFFIX = re.compile(r"-s\d+$")


@dataclass
class Run:
    path: Path
    recipe: Recipe
    rows: list[dict[str, Any]]
    command: str | None = None
    variant_from: str = "recipe"

    @property
    def variant(self) -> str:
        """The recipe's name, or (``variant_from="folder"``) the run folder's name without its seed suffix
        (``fast-s0`` -> ``fast``), for runs of one recipe with different ``--set`` options."""
        if self.variant_from == "folder":
            return _SEED_SUFFIX.sub("", self.path.name)
        return self.recipe.name

    @property
    def seed(self) -> int:
        return self.recipe.seed

    def series(self, key: str, x: str = "step") -> list[tuple[float, float]]:
        """``(x, value)`` of every row holding ``key``; ``x`` is the G step, or (``x="minutes"``) the
        run's clock in minutes (``time``: from the networks' build on, compilation and evaluations
        included, summed over resumed sessions; rows without it are left out)."""
        out = []
        for r in self.rows:
            v = r.get(key)
            real, fake = r.get("logits/real"), r.get("logits/fake")  # "nan" where training diverged
            if key == GAP and isinstance(real, (int, float)) and isinstance(fake, (int, float)):
                v = real - fake
            at = int(r["step"]) if x == "step" else (r["time"] / 60 if isinstance(r.get("time"), (int, float)) else None)
            if at is not None and isinstance(v, (int, float)) and math.isfinite(v):
                out.append((at, float(v)))
        return out

    @property
    def steps(self) -> int:
        return max((int(r.get("step", 0)) for r in self.rows), default=0)

    def final(self, key: str) -> float | None:
        s = self.series(key)
        return s[-1][1] if s else None

    def best(self, key: str) -> float | None:
        s = self.series(key)
        return min(v for _, v in s) if s else None

    def speed(self) -> float | None:
        s = [v for _, v in self.series("speed/img_per_s")]
        return statistics.median(s) if s else None

    def final_samples(self) -> Path | None:
        grids = sorted((self.path / "samples").glob("step-*.png"))
        return grids[-1] if grids else None


@dataclass
class Variant:
    name: str
    runs: list[Run] = field(default_factory=list)

    @property
    def recipe(self) -> Recipe:
        return self.runs[0].recipe


def read_run_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """The rows of a run's ``metrics.jsonl``, each with an integer ``step`` (the run logs' reader). A torn last
    line is skipped, as there; any other line it cannot use would silently drop a point from the tables
    and curves, so it is a one-line error naming the file and the line."""
    from .training.logs import METRICS_FILE, describe_skipped, read_metric_rows

    path = run_dir / METRICS_FILE
    if not path.is_file():
        return []
    try:
        rows, skipped = read_metric_rows(path)
    except GanzooError as exc:
        raise ReportError(str(exc)) from None
    if skipped:
        raise ReportError(f"{path}: {describe_skipped(skipped)}")
    return rows


def load_runs(run_dirs: Sequence[str | Path], variant_from: str = "recipe") -> list[Run]:
    runs = []
    seen: dict[tuple[int, int], Path] = {}
    for d in run_dirs:
        path = Path(d)
        recipe_file = path / "recipe.yaml"
        if not recipe_file.is_file():
            raise ReportError(f"{path}: not a ganzoo run folder (no recipe.yaml)")
        st = path.stat()
        first = seen.setdefault((st.st_dev, st.st_ino), path)
        if first is not path:
            same = "run folder given twice" if str(first) == str(path) else f"the same run folder as {first}"
            raise ReportError(f"{path}: {same}: each run counts once")
        cmd_file = path / "command.txt"
        try:
            command = cmd_file.read_text(encoding="utf-8").strip() if cmd_file.is_file() else None
        except (OSError, UnicodeDecodeError) as exc:
            raise ReportError(f"{cmd_file}: cannot read: {getattr(exc, 'strerror', None) or exc}") from None
        runs.append(Run(path, load_recipe(recipe_file), read_run_metrics(path), command, variant_from))
    if not runs:
        raise ReportError("report: no run folders given")
    return runs


def group(runs: list[Run]) -> list[Variant]:
    variants: dict[str, Variant] = {}
    for run in sorted(runs, key=lambda r: (r.variant, r.seed)):
        variants.setdefault(run.variant, Variant(run.variant)).runs.append(run)
    return list(variants.values())


def attention_positions(recipe: Recipe, which: str) -> str:
    net = getattr(recipe, which)
    res = list(getattr(net, "attention_resolutions", []) or [])
    if not res:
        return "-"
    slot = getattr(net, "slot", "attention")
    kind = "residual" if slot == "residual" else getattr(getattr(net, "attention", None), "type", "?")
    return f"{kind} @ " + ", ".join(str(r) for r in res)


def parameter_counts(recipe: Recipe) -> tuple[int, int]:
    from .registry import DISCRIMINATOR, GENERATOR

    g = GENERATOR.build(recipe.generator, recipe.resolution, recipe.num_classes, recipe.channels)
    d = DISCRIMINATOR.build(recipe.discriminator, recipe.resolution, recipe.num_classes, recipe.channels)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    return count(g), count(d)


def _mean_std(values: list[float | None], digits: int = 2) -> str:
    vals = [v for v in values if v is not None]
    if not vals:
        return "-"
    if len(set(vals)) == 1:
        return f"{vals[0]:.{digits}f}"
    return f"{statistics.mean(vals):.{digits}f} ± {statistics.stdev(vals):.{digits}f}"


# ----------------------------------------------------------------------------- attention gates
GATES_NOTE = (" Gate γ: the learned scalar of each attention block (`out = x + γ·attention`; 0 at the start) "
              "of EMA-G and D at each run's last checkpoint (`gammas.json`), mean ± std over seeds; n/a: "
              "the run folder has neither `gammas.json` nor a checkpoint.")


def run_gammas(run: Run) -> dict[str, Any] | None:
    """The gates at the end of a run (``gammas.json``, else its last checkpoint, which then leaves a
    ``gammas.json`` behind for the run folder to keep), or None."""
    import warnings

    from .training.gammas import read_gammas

    try:
        return read_gammas(run.path)
    except GanzooError as exc:  # a damaged gammas.json or checkpoint: n/a in the table, not no report
        warnings.warn(f"{run.path.name}: gates not read ({exc})", stacklevel=2)
        return None


def _gate_mean_std(values: list[float | None]) -> str:
    """Three significant digits (gates of short runs are ~1e-4, of long ones ~0.1-1), ± std over seeds."""
    vals = [v for v in values if isinstance(v, (int, float))]
    if not vals:
        return "-"
    if len(vals) == 1:
        return f"{vals[0]:.3g}"
    return f"{statistics.mean(vals):.3g} ± {statistics.stdev(vals):.2g}"


def gate_cell(gammas: list[dict[str, Any] | None]) -> str:
    """``G: blocks.1.1 0.12 ± 0.01; D: - `` over the seeds of a variant (n/a where none has gates)."""
    have = [g for g in gammas if g is not None]
    if not have:
        return "n/a"
    parts = []
    for net, tag in (("generator", "G"), ("discriminator", "D")):
        names = list(dict.fromkeys(k for g in have for k in (g.get(net) or {})))
        if not names:
            parts.append(f"{tag}: -")
            continue
        vals = [f"{n} {_gate_mean_std([(g.get(net) or {}).get(n) for g in have])}" for n in names]
        parts.append(f"{tag}: " + ", ".join(vals))
    missing = len(gammas) - len(have)
    return "; ".join(parts) + (f" ({missing} run(s) n/a)" if missing else "")


# ----------------------------------------------------------------------------- paired differences
def _t_two_sided_mass(t: float, dof: int) -> float:
    """P(|T| < t) for Student's t with an integer ``dof`` (Abramowitz & Stegun 26.7.3-4: a finite sum)."""
    theta = math.atan(t / math.sqrt(dof))
    s, c2 = math.sin(theta), math.cos(theta) ** 2
    if dof % 2:  # odd
        term, total = s * math.cos(theta), 0.0
        if dof > 1:
            total = term
            for k in range(3, dof - 1, 2):  # term_k = term_{k-2} * cos^2 * (k-1)/k
                term *= c2 * (k - 1) / k
                total += term
        return 2 / math.pi * (theta + total)
    term = total = s
    for k in range(2, dof - 1, 2):
        term *= c2 * (k - 1) / k
        total += term
    return total


def t_quantile_975(dof: int) -> float:
    """t_{0.975, dof}: the half-width multiplier of a two-sided 95% interval (12.706 for 1 dof, 4.303
    for 2, 1.960 as dof grows). Exact for integer dof, by bisection on the closed-form CDF (no scipy)."""
    if dof < 1:
        raise ValueError(f"t quantile needs dof >= 1, got {dof}")
    lo, hi = 1.0, 20.0 if dof > 1 else 100.0
    for _ in range(200):
        mid = (lo + hi) / 2
        if _t_two_sided_mass(mid, dof) < 0.95:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


@dataclass
class Paired:
    """Paired final-FID differences (variant - baseline) over the seeds both have."""

    variant: str
    baseline: str
    seeds: list[int]
    diffs: list[float]
    adjusted_p: float | None = None  # the p-value corrected for the other comparisons of the report (Holm)

    @property
    def n(self) -> int:
        return len(self.diffs)

    @property
    def mean(self) -> float | None:
        return statistics.mean(self.diffs) if self.diffs else None

    @property
    def sd(self) -> float | None:
        return statistics.stdev(self.diffs) if self.n >= 2 else None

    @property
    def interval(self) -> tuple[float, float] | None:
        """The 95% confidence interval of the mean difference (Student's t, n - 1 dof); None below 2 seeds."""
        if self.n < 2:
            return None
        half = t_quantile_975(self.n - 1) * self.sd / math.sqrt(self.n)
        return self.mean - half, self.mean + half

    @property
    def p_value(self) -> float | None:
        """Two-sided p of the paired t-test (mean difference 0; n - 1 dof), this comparison alone; None below
        2 seeds. Below 0.05 exactly when the 95% interval excludes 0."""
        if self.n < 2:
            return None
        if self.sd == 0:
            return 0.0 if self.mean != 0 else 1.0
        t = abs(self.mean) / (self.sd / math.sqrt(self.n))
        return max(0.0, 1.0 - _t_two_sided_mass(t, self.n - 1))

    @property
    def verdict(self) -> str:
        """Better or worse when the p-value (the corrected one, if set) is below 0.05, the sign saying which."""
        if self.n == 0:
            return "no seed in common with the baseline: no comparison"
        if self.n < 2:
            return "one seed: no interval"
        p = self.p_value if self.adjusted_p is None else self.adjusted_p
        if p < 0.05:
            return "better (lower FID)" if self.mean < 0 else "worse (higher FID)"
        if self.p_value < 0.05:
            return f"not separated at this budget (p = {self.p_value:.3f} alone, {p:.3f} corrected)"
        return "not separated at this budget"


def holm(pvalues: list[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values, in the order given: the k-th smallest (k from 0) times m - k, kept
    from falling below the one before it, at most 1. A comparison is called at 5% when its adjusted p is
    below 0.05, which holds the chance of any false call among the m at 5% (Holm 1979)."""
    m = len(pvalues)
    adjusted = [1.0] * m
    running = 0.0
    for rank, i in enumerate(sorted(range(m), key=pvalues.__getitem__)):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        adjusted[i] = running
    return adjusted


def paired_family(variants: list[Variant], baseline: Variant, key: str = "eval/fid") -> list[Paired]:
    """Every variant but the baseline paired with it, each p-value corrected (Holm) for the comparisons
    that have one."""
    family = [paired_differences(v, baseline, key) for v in variants if v is not baseline]
    tested = [p for p in family if p.p_value is not None]
    for p, adj in zip(tested, holm([p.p_value for p in tested])):
        p.adjusted_p = adj
    return family


def paired_differences(variant: Variant, baseline: Variant, key: str = "eval/fid") -> Paired:
    """Pair the runs of ``variant`` and ``baseline`` by seed (runs without a final ``key`` are left out)."""
    base = {r.seed: r.final(key) for r in baseline.runs if r.final(key) is not None}
    seeds, diffs = [], []
    for r in variant.runs:
        v = r.final(key)
        if v is not None and r.seed in base:
            seeds.append(r.seed)
            diffs.append(v - base[r.seed])
    return Paired(variant.name, baseline.name, seeds, diffs)


def _no_attention(recipe: Recipe) -> bool:
    return not any(getattr(getattr(recipe, which), "attention_resolutions", None) for which in ("generator", "discriminator"))


def pick_baseline(variants: list[Variant], name: str | None = None) -> Variant | None:
    """The variant named ``name`` (one-line error if none is), else the one whose name ends in ``none``,
    else the only one whose recipe has no attention anywhere; None when no variant qualifies or there
    is nothing to compare it with."""
    if name is not None:
        for v in variants:
            if v.name == name:
                return v
        raise ReportError(f"--baseline {name}: no such variant (variants: {', '.join(v.name for v in variants)})")
    if len(variants) < 2:
        return None
    named = [v for v in variants if v.name.endswith("none")]
    if len(named) == 1:
        return named[0]
    plain = [v for v in variants if _no_attention(v.recipe)]
    return plain[0] if len(plain) == 1 else None


def _f(x: float) -> str:
    return f"{x:+.2f}"


def _p(x: float | None) -> str:
    return "-" if x is None else ("< 0.001" if x < 0.001 else f"{x:.3f}")


def paired_section(variants: list[Variant], baseline: Variant, key: str = "eval/fid") -> list[str]:
    """The markdown lines of "Paired differences against BASELINE"."""
    family = paired_family(variants, baseline, key)
    m = sum(p.adjusted_p is not None for p in family)
    lines = [f"## Paired differences against {baseline.name}", "",
             f"Final FID of each variant minus that of **{baseline.name}** with the same seed (same data order "
             "and initial noise), so that seed-to-seed spread common to both cancels. Mean over the seeds both "
             "have, with its 95% confidence interval and the two-sided p of the paired t-test (Student's t, n - 1 "
             "degrees of freedom). Negative is better. "
             "The interval's half-width is t·sd/√n with t = 12.71 for 2 seeds and 4.30 for 3, so two seeds separate "
             "a variant only when they agree closely. "
             f"With {m} comparisons against one baseline, some would reach p < 0.05 by chance alone, so a variant "
             "is called better or worse only when its p, corrected by Holm's method for all of them (the k-th "
             "smallest p times m - k + 1), is below 0.05; its uncorrected interval then excludes 0 as well.", "",
             "| variant | seeds paired | differences (variant - baseline), by seed | mean difference | 95% CI | p | "
             "p, Holm | verdict |",
             "|---|---|---|---|---|---|---|---|"]
    sentences = []
    for p in family:
        per_seed = ", ".join(f"s{s}: {_f(d)}" for s, d in zip(p.seeds, p.diffs)) or "-"
        ci = p.interval
        ci_text = f"[{_f(ci[0])}, {_f(ci[1])}]" if ci else "-"
        mean = _f(p.mean) if p.mean is not None else "-"
        lines.append(f"| {p.variant} | {p.n} | {per_seed} | {mean} | {ci_text} | {_p(p.p_value)} | {_p(p.adjusted_p)} "
                     f"| {p.verdict} |")
        if ci is not None:
            sentences.append(f"- **{p.variant}**: {p.verdict}; {mean} FID against {baseline.name} over {p.n} seeds "
                             f"(95% CI {ci_text}; p {_p(p.p_value)}, Holm {_p(p.adjusted_p)}).")
        elif p.n == 1:
            sentences.append(f"- **{p.variant}**: one seed: no interval ({mean} FID against {baseline.name}, "
                             f"seed {p.seeds[0]}).")
        else:
            sentences.append(f"- **{p.variant}**: no seed with a final FID in common with {baseline.name}: "
                             "no comparison.")
    lines += ["", *sentences, ""]
    missing = missing_runs(variants, key)
    lines += (["Missing (the comparison uses what is complete):", "", *[f"- {m}" for m in missing], ""] if missing
              else ["Every variant has a final FID for every seed.", ""])
    return lines


# ----------------------------------------------------------------------------- where the baseline flattens
FLAT_TOLERANCE = 1.0  # FID: what a later evaluation must gain for the curve to count as still improving
FLAT_AFTER = 2  # evaluations that must follow a step before it can be called the flattening point


@dataclass
class Flattening:
    """Where a variant's FID curve (mean over its seeds, at the steps every seed evaluated) flattens: the
    first step that no later evaluation improves on by more than ``tolerance``, with at least
    ``FLAT_AFTER`` evaluations after it; None when no step qualifies within the runs' budget."""

    variant: str
    seeds: int
    points: list[tuple[int, float]]
    tolerance: float
    step: int | None

    @property
    def sentence(self) -> str:
        if not self.points:
            return f"**{self.variant}** has no evaluation that every seed reached: nothing to measure."
        budget = self.points[-1][0]
        if self.step is not None:
            after = sum(1 for s, _ in self.points if s > self.step)
            return (f"**{self.variant}**'s FID curve flattens at **step {self.step:,}**: no later evaluation improves "
                    f"on it by more than {self.tolerance:g} FID. The runs' budget ({budget:,} steps) is past it by "
                    f"{after} evaluation{'s' if after > 1 else ''}.")
        if len(self.points) < FLAT_AFTER + 1:
            return (f"**{self.variant}** has {len(self.points)} evaluation(s) every seed reached: too few to tell "
                    f"where its curve flattens (the rule needs {FLAT_AFTER} after the step).")
        i = len(self.points) - FLAT_AFTER - 1  # the last step with enough evaluations after it
        gain = self.points[i][1] - min(v for _, v in self.points[i + 1:])
        return (f"**{self.variant}**'s FID curve has **not flattened** within the runs' {budget:,} steps: after step "
                f"{self.points[i][0]:,} it still improved by {gain:.2f} FID (more than {self.tolerance:g}), so the "
                "variants are compared while still training; a longer budget would be needed to meet the rule.")


def flattening(variant: Variant, key: str = "eval/fid", tolerance: float = FLAT_TOLERANCE) -> Flattening:
    curves = [dict(r.series(key)) for r in variant.runs]
    curves = [c for c in curves if c]
    steps = sorted(set.intersection(*(set(c) for c in curves))) if curves else []
    points = [(int(s), statistics.mean(c[s] for c in curves)) for s in steps]
    step = next((s for i, (s, v) in enumerate(points)
                 if len(points) - i - 1 >= FLAT_AFTER and v - min(w for _, w in points[i + 1:]) <= tolerance), None)
    return Flattening(variant.name, len(curves), points, tolerance, step)


def flattening_section(baseline: Variant, key: str = "eval/fid", tolerance: float = FLAT_TOLERANCE) -> list[str]:
    """The markdown lines of "Training budget: where BASELINE's FID curve flattens"."""
    f = flattening(baseline, key, tolerance)
    curve = " · ".join(f"{s:,}: {v:.2f}" for s, v in f.points) or "-"
    return [f"## Training budget: where {baseline.name}'s FID curve flattens", "",
            f"Mean FID of **{baseline.name}** over its {f.seeds} seed{'s' if f.seeds != 1 else ''} at the evaluations "
            f"every seed reached (step: FID): {curve}.", "",
            f"The rule: the curve has flattened at the first evaluation that no later one improves on by more than "
            f"{tolerance:g} FID (`--flat-tolerance`), with at least {FLAT_AFTER} evaluations after it.", "",
            f.sentence, ""]


# ----------------------------------------------------------------------------- no collapse after a time mark
RISE_TOLERANCE = 3.0  # FID: issue 16's "never rises more than 3 above its best after the 10-minute mark"


@dataclass
class Rise:
    """A run's FID after a mark on its clock (:func:`fid_rise`'s ``minutes`` of ``time``: compilation and
    evaluations included, summed over resumed sessions): at each evaluation after the mark, how far FID stands
    above the best evaluation at or before it (0 while it keeps improving). A collapse shows as a large rise; a
    curve still falling as none."""

    run: str
    after: list[tuple[int, float, float]]  # (step, FID, best FID at or before that step), after the mark
    best: tuple[int, float] | None  # the run's best evaluation (step, FID)

    @property
    def largest(self) -> tuple[int, float] | None:
        """(step, rise) of the largest rise after the mark; None when no evaluation follows it."""
        if not self.after:
            return None
        step, fid, best = max(self.after, key=lambda a: a[1] - a[2])
        return step, fid - best


def fid_rise(run: Run, minutes: float, key: str = "eval/fid") -> Rise:
    evals = sorted(((int(r["step"]), float(r[key]), r.get("time")) for r in run.rows
                    if isinstance(r.get(key), (int, float)) and math.isfinite(r[key])), key=lambda e: e[0])
    after, best = [], None
    for step, fid, time in evals:
        if best is None or fid < best[1]:
            best = (step, fid)
        if isinstance(time, (int, float)) and time / 60 > minutes:
            after.append((step, fid, best[1]))
    return Rise(run.path.name, after, best)


def rise_section(runs: list[Run], minutes: float, tolerance: float = RISE_TOLERANCE,
                 key: str = "eval/fid") -> list[str]:
    """The markdown lines of "No collapse after minute M": a row per run, and how many keep within ``tolerance``."""
    lines = [f"## No collapse after minute {minutes:g}", "",
             f"Each run's evaluations after {minutes:g} minutes of its clock (compilation and evaluations included): "
             "how far FID stood above the best evaluation at or before it. The rule (`--rise-tolerance`): no rise "
             f"of more than {tolerance:g} FID.", "",
             f"| run | evaluations after minute {minutes:g} | last evaluated step | best FID (step) | largest rise (step) "
             f"| within {tolerance:g} FID |", "|---|---|---|---|---|---|"]
    judged = held = 0
    for run in runs:
        r = fid_rise(run, minutes, key)
        best = f"{r.best[1]:.2f} ({r.best[0]:,})" if r.best else "-"
        last = f"{r.after[-1][0]:,}" if r.after else "-"
        if r.largest is None:
            lines.append(f"| {r.run} | 0 | {last} | {best} | - | - (nothing after the mark) |")
            continue
        step, rise = r.largest
        ok = rise <= tolerance
        judged, held = judged + 1, held + ok
        lines.append(f"| {r.run} | {len(r.after)} | {last} | {best} | {rise:.2f} ({step:,}) | {'yes' if ok else '**no**'} |")
    lines += ["", f"{held} of {judged} run{'s' if judged != 1 else ''} with evaluations after minute {minutes:g} "
              f"kept within {tolerance:g} FID of their best." if judged else
              f"No run has an evaluation after minute {minutes:g}: nothing to judge.", ""]
    return lines


def missing_runs(variants: list[Variant], key: str = "eval/fid") -> list[str]:
    """What is missing relative to the others: seeds a variant has no run for, runs with no final ``key``."""
    seeds = sorted({r.seed for v in variants for r in v.runs})
    out = []
    for v in variants:
        have = {r.seed for r in v.runs}
        absent = [s for s in seeds if s not in have]
        no_value = [r.seed for r in v.runs if r.final(key) is None]
        if absent:
            out.append(f"{v.name}: no run for seed{'s' if len(absent) > 1 else ''} {', '.join(map(str, absent))}")
        if no_value:
            out.append(f"{v.name}: no final {key.split('/')[-1].upper()} for seed{'s' if len(no_value) > 1 else ''} "
                       f"{', '.join(map(str, no_value))} (run unfinished or not evaluated)")
    return out


def _plot_curves(variants: list[Variant], key: str, out: Path, ylabel: str | None = None, x: str = "step") -> bool:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    drew = False
    for i, v in enumerate(variants):
        color = f"C{i % 10}"
        for j, run in enumerate(v.runs):
            s = run.series(key, x)
            if s:
                xs, ys = zip(*s)
                ax.plot(xs, ys, color=color, marker="o" if len(xs) <= 60 else None, ms=3, lw=1.2, alpha=0.85,
                        label=v.name if j == 0 else None, ls="-" if j == 0 else "--")
                drew = True
    if not drew:
        plt.close(fig)
        return False
    what = key.split("/")[-1].upper()
    ax.set_xlabel("G step" if x == "step" else "minutes since training started (compilation and evaluations included)")
    ax.set_ylabel(ylabel or what + " (lower is better)")
    against = "training step" if x == "step" else "wall time"
    ax.set_title(f"{ylabel or what} against {against} (solid: first seed, dashed: others)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return True


def _plot_final(variants: list[Variant], key: str, out: Path) -> bool:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names, means, points = [], [], []
    for v in variants:
        vals = [r.final(key) for r in v.runs if r.final(key) is not None]
        if vals:
            names.append(v.name)
            means.append(statistics.mean(vals))
            points.append(vals)
    if not names:
        return False
    fig, ax = plt.subplots(figsize=(max(5, 0.9 * len(names) + 2), 4.2), dpi=110)
    ax.bar(range(len(names)), means, color=[f"C{i % 10}" for i in range(len(names))], alpha=0.6)
    for i, vals in enumerate(points):
        ax.scatter([i] * len(vals), vals, color="k", s=14, zorder=3)
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
    ax.set_ylabel(f"final {key.split('/')[-1].upper()} (lower is better)")
    ax.set_title("final value per variant (bar: mean over seeds, dots: seeds)")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return True


def build_report(
    run_dirs: Sequence[str | Path], out: str | Path, command: Sequence[str] | None = None,
    title: str | None = None, notes: str | None = None, paper_table: bool = True, variant_from: str = "recipe",
    baseline: str | None = None, paired: bool = True, block_bench: str | Path | None = None,
    flat_tolerance: float = FLAT_TOLERANCE, rise_after: float | None = None, rise_tolerance: float = RISE_TOLERANCE,
) -> Path:
    """Write the markdown report ``out`` and its assets folder (``out`` without ``.md``). Runs are grouped
    into variants by recipe name (``variant_from="folder"``: by folder name without ``-s<seed>``).
    With ``paired`` and a baseline variant (``baseline``, else :func:`pick_baseline`'s choice), the
    report adds the paired differences of final FID against it and where its FID curve flattens
    (``flat_tolerance``, :func:`flattening`); with ``block_bench`` (an ``attention.json``
    of ``benchmarks/attention.py --variants``), each variant's attention block's time and memory; with
    ``rise_after`` (minutes), each run's largest FID rise above its best after that mark (:func:`fid_rise`)."""
    out = Path(out)
    assets = check_output(out)
    bench = read_block_bench(block_bench) if block_bench is not None else None
    runs = load_runs(run_dirs, variant_from)
    variants = group(runs)
    base = pick_baseline(variants, baseline) if paired else None
    extra = block_bench_section(variants, bench, Path(block_bench).name) if bench is not None else []
    if rise_after is not None:
        extra += rise_section(runs, rise_after, rise_tolerance)
    try:
        return _write_report(runs, variants, out, assets, command, title, notes, paper_table, base, extra,
                             flat_tolerance)
    except OSError as exc:
        where = exc.filename or out
        raise ReportError(f"{where}: cannot write the report: {exc.strerror or exc}") from None


MAX_NOTES_BYTES = 1 << 20
MAX_BENCH_BYTES = 16 << 20


def read_block_bench(path: str | Path) -> list[dict]:
    """The variants table of ``benchmarks/attention.py``'s ``attention.json`` (``--block-bench``): its rows,
    each at least ``name``, ``size``, ``C``, ``dtype`` and ``ms``; a one-line error for anything else."""
    import json

    raw = _read_option_file(path, "--block-bench", MAX_BENCH_BYTES, "a regular file (attention.json of benchmarks/attention.py)")
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise ReportError(f"{path}: cannot read --block-bench: {exc}") from None
    rows = data.get("variants") if isinstance(data, dict) else None
    if not isinstance(rows, list):
        raise ReportError(f"{path}: --block-bench: no 'variants' table (run benchmarks/attention.py --variants)")
    need = {"name": str, "size": int, "C": int, "dtype": str}
    for i, row in enumerate(rows):
        bad = [k for k, t in need.items() if not isinstance(row, dict) or not isinstance(row.get(k), t)]
        if bad:
            raise ReportError(f"{path}: --block-bench: variants[{i}] lacks {', '.join(bad)}")
    return rows


def _block_name(recipe: Recipe) -> str:
    """The attention block G uses (``none`` where it has none)."""
    net = recipe.generator
    if not list(getattr(net, "attention_resolutions", []) or []):
        return "none"
    return getattr(getattr(net, "attention", None), "type", "?")


def block_bench_section(variants: list[Variant], rows: list[dict], source: str) -> list[str]:
    """A table beside the FIDs: each variant's attention block, forward + backward time and peak memory
    of the block alone, per measured shape (bf16 autocast rows where there are any, else fp32)."""
    dtypes = {r["dtype"] for r in rows}
    dtype = "bfloat16" if "bfloat16" in dtypes else "float32"
    rows = [r for r in rows if r["dtype"] == dtype]
    shapes = sorted({(r["size"], r["C"]) for r in rows})
    by = {(r["name"], r["size"], r["C"]): r for r in rows}
    batch = sorted({r.get("batch") for r in rows if r.get("batch")})

    def cell(r: dict | None) -> str:
        if r is None:
            return "not measured"
        if r.get("error"):
            return "failed"
        ms, gib = r.get("ms"), r.get("peak_gib")
        return (f"{ms:.2f} ms" if isinstance(ms, (int, float)) else "-") + (
            f" / {gib:.2f} GiB" if isinstance(gib, (int, float)) else "")

    lines = ["## Attention blocks: speed and memory", "",
             f"Each variant's attention block alone (G's; `benchmarks/attention.py`'s variants table, `{source}`): "
             f"forward + backward, {'bf16 autocast' if dtype == 'bfloat16' else 'fp32'}, batch "
             f"{', '.join(map(str, batch)) or '?'}, time per call / peak memory (memory on CUDA only), beside the "
             "variant's final FID (mean over seeds).", "",
             "| variant | block | final FID | " + " | ".join(f"{s}x{s}, C{c}" for s, c in shapes) + " |",
             "|---|---|---|" + "---|" * len(shapes)]
    for v in variants:
        name = _block_name(v.recipe)
        lines.append(f"| {v.name} | `{name}` | {_mean_std([r.final('eval/fid') for r in v.runs])} | "
                     + " | ".join(cell(by.get((name, s, c))) for s, c in shapes) + " |")
    return lines + [""]


def _read_option_file(path: str | Path, option: str, limit: int, kind: str) -> bytes:
    """The bytes of the file an option names: a regular file of at most ``limit`` bytes (never a FIFO or
    a device, which could block or never end), else a one-line :class:`ReportError`."""
    import os
    import stat

    try:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode):
            raise ReportError(f"{path}: {option} must be {kind}")
        if st.st_size > limit:
            raise ReportError(f"{path}: {option} file too large ({st.st_size} bytes; at most {limit})")
        return Path(path).read_bytes()[:limit]
    except OSError as exc:
        raise ReportError(f"{path}: cannot read {option}: {exc.strerror or exc}") from None


def read_notes(path: str | Path) -> str:
    """The text of a ``--notes`` file: a regular UTF-8 file of at most 1 MiB, else a one-line error."""
    raw = _read_option_file(path, "--notes", MAX_NOTES_BYTES, "a regular text file")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ReportError(f"{path}: --notes is not UTF-8 text (byte {exc.start})") from None


def check_output(out: Path) -> Path:
    """Refuse an ``--out`` that is not a ``.md`` file or whose assets folder (``out`` without ``.md``,
    which a report replaces) holds anything a report did not write; return the assets folder."""
    if out.suffix.lower() != ".md":
        raise ReportError(f"{out}: --out must name the report's markdown file (ending in .md)")
    if out.is_dir():
        raise ReportError(f"{out}: is a directory; --out must name the report's markdown file")
    assets = out.with_suffix("")
    try:
        if assets.is_symlink() or (assets.exists() and not assets.is_dir()):
            raise ReportError(f"{assets}: exists and is not a folder; a report puts its images there: choose another --out")
        if assets.is_dir():
            foreign = [p for p in assets.iterdir() if p.is_symlink() or not p.is_file() or p.suffix.lower() != ".png"]
            if foreign:
                raise ReportError(f"{assets}: holds files a report did not write ({foreign[0].name}); a report "
                                  "replaces this folder: move them or choose another --out")
    except OSError as exc:
        raise ReportError(f"{assets}: cannot use the report's image folder: {exc.strerror or exc}") from None
    return assets


def _write_report(runs: list[Run], variants: list[Variant], out: Path, assets: Path,
                  command: Sequence[str] | None, title: str | None, notes: str | None, paper_table: bool,
                  baseline: Variant | None = None, extra: Sequence[str] = (),
                  flat_tolerance: float = FLAT_TOLERANCE) -> Path:
    """Build the images in a hidden folder beside ``assets``, then swap it in and write ``out`` (atomically):
    until then, and if anything fails, the previous report and its images stay as they were."""
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{assets.name}.", suffix=".tmp", dir=out.parent))
    try:
        new, old = work / "new", work / "old"
        new.mkdir()
        text = _report_text(runs, variants, out, new, assets.name, command, title, notes, paper_table, baseline,
                            extra, flat_tolerance)
        had_assets = assets.is_dir()
        if had_assets:
            assets.rename(old)
        try:
            new.rename(assets)
            atomic_write_text(out, text)
        except BaseException:  # put the previous images back beside the previous report
            if not new.exists():
                assets.rename(new)
            if had_assets:
                old.rename(assets)
            raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return out


def _report_text(runs: list[Run], variants: list[Variant], out: Path, assets: Path, rel: str,
                 command: Sequence[str] | None, title: str | None, notes: str | None, paper_table: bool,
                 baseline: Variant | None, extra: Sequence[str], flat_tolerance: float) -> str:
    """The report's markdown; its images are written to ``assets``, linked as ``rel/NAME.png``."""

    seeds = sorted({r.seed for r in runs})
    gammas = {id(r): run_gammas(r) for r in runs}
    with_gates = any(g is not None for g in gammas.values())
    lines = [f"# {title or 'Ablation report: ' + out.stem}", "",
             "Generated by `ganzoo report` from run folders; do not edit by hand (regenerate it).", ""]
    if notes:
        lines += [notes.strip(), ""]
    lines += [
        f"{len(variants)} variants x seeds {', '.join(map(str, seeds))} ({len(runs)} runs). FID/KID are of EMA-G samples "
        "against the reference split named in each recipe (`eval`); lower is better. "
        "Mean ± standard deviation over seeds." + (GATES_NOTE if with_gates else ""), "",
        "| variant | attention in G | attention in D | params G / D | images/s | steps | final FID | best FID | final KID (x1e3) | seeds |"
        + (" gate γ in G / D (end) |" if with_gates else ""),
        "|---|---|---|---|---|---|---|---|---|---|" + ("---|" if with_gates else ""),
    ]
    for v in variants:
        g_params, d_params = parameter_counts(v.recipe)
        speed = _mean_std([r.speed() for r in v.runs], 0)
        kid = [None if r.final("eval/kid") is None else 1e3 * r.final("eval/kid") for r in v.runs]
        lines.append(
            f"| {v.name} | {attention_positions(v.recipe, 'generator')} | {attention_positions(v.recipe, 'discriminator')} "
            f"| {g_params / 1e6:.2f}M / {d_params / 1e6:.2f}M | {speed} | {_mean_std([r.steps for r in v.runs], 0)} "
            f"| {_mean_std([r.final('eval/fid') for r in v.runs])} | {_mean_std([r.best('eval/fid') for r in v.runs])} "
            f"| {_mean_std(kid)} | {len(v.runs)} |" + (f" {gate_cell([gammas[id(r)] for r in v.runs])} |" if with_gates else "")
        )
    lines.append("")
    lines += extra
    if baseline is not None:
        lines += paired_section(variants, baseline)
        lines += flattening_section(baseline, tolerance=flat_tolerance)
    for key, fname, caption, ylabel, x in (
        ("eval/fid", "fid_vs_step.png", "FID against step", None, "step"),
        ("eval/fid", "fid_vs_minutes.png", "FID against wall time", None, "minutes"),
        ("eval/kid", "kid_vs_step.png", "KID against step", None, "step"),
        (GAP, "logit_gap_vs_step.png", "D's logit gap against step",
         "D's mean real logit - mean fake logit", "step"),
    ):
        if _plot_curves(variants, key, assets / fname, ylabel, x):
            lines += [f"![{caption}]({rel}/{fname})", ""]
    if _plot_final(variants, "eval/fid", assets / "final_fid.png"):
        lines += [f"![final FID per variant]({rel}/final_fid.png)", ""]

    lines += ["## Sample grids", "", "EMA-G at the last step of each variant's first seed (one row per class).", ""]
    for v in variants:
        grid = v.runs[0].final_samples()
        if grid is not None:
            name = f"samples-{v.name}.png"
            shutil.copyfile(grid, assets / name)
            lines += [f"**{v.name}** (seed {v.runs[0].seed}, {grid.stem})", "", f"![{v.name}]({rel}/{name})", ""]

    if paper_table:
        lines += [
            "## For reference: the paper's Table 1 (another dataset)",
            "",
            "Zhang et al. (2018), Table 1: **ImageNet 128x128**, FID after ~1M iterations of a much larger model. "
            "These are the paper's numbers on another dataset and budget, *not* comparable to the CIFAR-10 FIDs "
            "above; they show which way the paper's ablation pointed.",
            "",
            "| model (paper) | feature map | FID (paper, ImageNet 128) |",
            "|---|---|---|",
            *[f"| {m} | {f} | {fid:.2f} |" for m, f, fid in PAPER_TABLE1],
            "",
        ]
    lines += ["## How this was produced", ""]
    if command:
        lines += ["Report:", "", "```bash", " ".join(shlex.quote(c) for c in command), "```", ""]
    cmds = sorted({r.command for r in runs if r.command})
    if cmds:
        lines += ["Runs:", "", "```bash", *cmds, "```", ""]
    lines += ["Run folders: " + ", ".join(f"`{r.path.name}`" for r in runs), ""]
    lines += ["### Recipes (fully resolved, first seed of each variant)", ""]
    for v in variants:
        text = yaml.safe_dump(v.recipe.model_dump(mode="json"), sort_keys=False, default_flow_style=None)
        lines += [f"<details><summary>{v.name}</summary>", "", "```yaml", text.rstrip(), "```", "", "</details>", ""]
    return "\n".join(lines)
