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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import yaml

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

    def series(self, key: str) -> list[tuple[int, float]]:
        out = []
        for r in self.rows:
            v = r.get(key)
            if key == GAP and isinstance(r.get("logits/real"), (int, float)):
                v = r["logits/real"] - r.get("logits/fake", math.nan)
            if isinstance(v, (int, float)) and math.isfinite(v):
                out.append((int(r["step"]), float(v)))
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


def load_runs(run_dirs: Sequence[str | Path], variant_from: str = "recipe") -> list[Run]:
    from .training.logs import read_metrics

    runs = []
    for d in run_dirs:
        path = Path(d)
        recipe_file = path / "recipe.yaml"
        if not recipe_file.is_file():
            raise ReportError(f"{path}: not a ganzoo run folder (no recipe.yaml)")
        cmd_file = path / "command.txt"
        runs.append(Run(path, load_recipe(recipe_file), read_metrics(path),
                        cmd_file.read_text().strip() if cmd_file.is_file() else None, variant_from))
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


def _plot_curves(variants: list[Variant], key: str, out: Path, ylabel: str | None = None) -> bool:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    drew = False
    for i, v in enumerate(variants):
        color = f"C{i % 10}"
        for j, run in enumerate(v.runs):
            s = run.series(key)
            if s:
                xs, ys = zip(*s)
                ax.plot(xs, ys, color=color, marker="o" if len(xs) <= 60 else None, ms=3, lw=1.2, alpha=0.85,
                        label=v.name if j == 0 else None, ls="-" if j == 0 else "--")
                drew = True
    if not drew:
        plt.close(fig)
        return False
    what = key.split("/")[-1].upper()
    ax.set_xlabel("G step")
    ax.set_ylabel(ylabel or what + " (lower is better)")
    ax.set_title(f"{ylabel or what} against training step (solid: first seed, dashed: others)", fontsize=9)
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
) -> Path:
    """Write the markdown report ``out`` and its assets folder (``out`` without ``.md``). Runs are grouped
    into variants by recipe name (``variant_from="folder"``: by folder name without ``-s<seed>``)."""
    out = Path(out)
    assets = check_output(out)
    runs = load_runs(run_dirs, variant_from)
    variants = group(runs)
    try:
        return _write_report(runs, variants, out, assets, command, title, notes, paper_table)
    except OSError as exc:
        where = exc.filename or out
        raise ReportError(f"{where}: cannot write the report: {exc.strerror or exc}") from None


MAX_NOTES_BYTES = 1 << 20


def read_notes(path: str | Path) -> str:
    """The text of a ``--notes`` file: a regular UTF-8 file of at most 1 MiB, else a one-line error."""
    import os
    import stat

    try:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode):
            raise ReportError(f"{path}: --notes must be a regular text file")
        if st.st_size > MAX_NOTES_BYTES:
            raise ReportError(f"{path}: --notes file too large ({st.st_size} bytes; at most {MAX_NOTES_BYTES})")
        return Path(path).read_bytes()[:MAX_NOTES_BYTES].decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ReportError(f"{path}: --notes is not UTF-8 text (byte {exc.start})") from None
    except (OSError, ValueError) as exc:
        raise ReportError(f"{path}: cannot read --notes: {getattr(exc, 'strerror', None) or exc}") from None


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
                  command: Sequence[str] | None, title: str | None, notes: str | None, paper_table: bool) -> Path:
    if assets.exists():
        shutil.rmtree(assets)
    assets.mkdir(parents=True)
    rel = assets.name

    seeds = sorted({r.seed for r in runs})
    lines = [f"# {title or 'Ablation report: ' + out.stem}", "",
             "Generated by `ganzoo report` from run folders; do not edit by hand (regenerate it).", ""]
    if notes:
        lines += [notes.strip(), ""]
    lines += [
        f"{len(variants)} variants x seeds {', '.join(map(str, seeds))} ({len(runs)} runs). FID/KID are of EMA-G samples "
        "against the reference split named in each recipe (`eval`); lower is better. "
        "Mean ± standard deviation over seeds.", "",
        "| variant | attention in G | attention in D | params G / D | images/s | steps | final FID | best FID | final KID (x1e3) | seeds |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for v in variants:
        g_params, d_params = parameter_counts(v.recipe)
        speed = _mean_std([r.speed() for r in v.runs], 0)
        kid = [None if r.final("eval/kid") is None else 1e3 * r.final("eval/kid") for r in v.runs]
        lines.append(
            f"| {v.name} | {attention_positions(v.recipe, 'generator')} | {attention_positions(v.recipe, 'discriminator')} "
            f"| {g_params / 1e6:.2f}M / {d_params / 1e6:.2f}M | {speed} | {_mean_std([r.steps for r in v.runs], 0)} "
            f"| {_mean_std([r.final('eval/fid') for r in v.runs])} | {_mean_std([r.best('eval/fid') for r in v.runs])} "
            f"| {_mean_std(kid)} | {len(v.runs)} |"
        )
    lines.append("")
    for key, fname, caption, ylabel in (
        ("eval/fid", "fid_vs_step.png", "FID against step", None),
        ("eval/kid", "kid_vs_step.png", "KID against step", None),
        (GAP, "logit_gap_vs_step.png", "D's logit gap against step",
         "D's mean real logit - mean fake logit"),
    ):
        if _plot_curves(variants, key, assets / fname, ylabel):
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
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".md.tmp")
    tmp.write_text("\n".join(lines))
    tmp.replace(out)
    return out
