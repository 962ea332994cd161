"""ganzoo report RUN_DIR... --out docs/ablations/NAME.md"""
from __future__ import annotations

import argparse
import math

from ..errors import escape
from ..reporting import FLAT_TOLERANCE, RISE_TOLERANCE, build_report, read_notes


def _positive(unit: str):
    """An argparse type: a positive finite number (of ``unit``), else a one-line error."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not (math.isfinite(value) and value > 0):
            raise argparse.ArgumentTypeError(f"must be a positive number of {unit}, got {text!r}")
        return value
    return parse


NAME = "report"
HELP = "build an ablation report (table, plots, sample grids, commands) from run folders alone"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("runs", nargs="+", metavar="RUN_DIR")
    p.add_argument("--out", required=True, help="markdown file; its PNGs go to the folder of the same stem")
    p.add_argument("--title", default=None)
    p.add_argument("--notes", default=None, help="a file whose text is put under the title (budget, caveats)")
    p.add_argument("--paper-table", action=argparse.BooleanOptionalAction, default=True,
                   help="include the SAGAN paper's Table 1 (ImageNet FIDs) for reference")
    p.add_argument("--variant-from", choices=("recipe", "folder"), default="recipe",
                   help="group runs into variants by recipe name (default), or by run folder name without its "
                   "-s<seed> suffix (runs of one recipe with different --set options)")
    p.add_argument("--baseline", default=None, metavar="VARIANT",
                   help="variant the others are compared with, seed by seed (paired final-FID differences with "
                   "95%% confidence intervals); default: the variant named *none, else the only one without attention")
    p.add_argument("--paired", action=argparse.BooleanOptionalAction, default=True,
                   help="include the paired-differences section when a baseline applies (default on)")
    p.add_argument("--flat-tolerance", type=_positive("FID points"), default=FLAT_TOLERANCE, metavar="FID",
                   help="with a baseline: its FID curve has flattened at the first evaluation no later one improves "
                   "on by more than this (default %(default)s)")
    p.add_argument("--rise-after", type=_positive("minutes"), default=None, metavar="MINUTES",
                   help="add a section: each run's largest FID rise above its best at the evaluations after this many "
                   "minutes of its clock (issue 16's no-collapse rule: 10)")
    p.add_argument("--rise-tolerance", type=_positive("FID points"), default=RISE_TOLERANCE, metavar="FID",
                   help="with --rise-after: the largest rise that still counts as no collapse (default %(default)s)")
    p.add_argument("--block-bench", default=None, metavar="ATTENTION_JSON",
                   help="attention.json of benchmarks/attention.py --variants: each variant's attention block's "
                   "time and memory beside its FID")


def main(args: argparse.Namespace) -> int:
    notes = read_notes(args.notes) if args.notes else None
    out = build_report(args.runs, args.out, args.command_line,
                       title=args.title, notes=notes, paper_table=args.paper_table, variant_from=args.variant_from,
                       baseline=args.baseline, paired=args.paired, block_bench=args.block_bench,
                       flat_tolerance=args.flat_tolerance, rise_after=args.rise_after,
                       rise_tolerance=args.rise_tolerance)
    print(f"wrote {escape(str(out))}")
    return 0
