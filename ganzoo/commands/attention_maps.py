"""ganzoo attention-maps RUN_DIR|CKPT --out fig.png [--checkpoint best|last] [--seed S] [--queries N] [--class K]"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import GanzooError, escape
from ._options import add_checkpoint_argument, check_int, check_seed

NAME = "attention-maps"
HELP = "draw where EMA-G's attention blocks look, for a few query points of one sample (SAGAN's Figure 1)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("target", metavar="RUN_DIR|CKPT",
                   help="run folder (its best or last checkpoint: --checkpoint), checkpoint file or export folder")
    p.add_argument("--out", required=True, help="PNG file to write")
    add_checkpoint_argument(p)
    p.add_argument("--seed", type=int, default=0, help="noise seed of the sample, 0 to 2**63-1 (default 0)")
    p.add_argument("--queries", type=int, default=4, help="query points to show, 1 to 8 (default 4)")
    p.add_argument("--class", dest="cls", type=int, default=None,
                   help="class of the sample (conditional G; default: one drawn from --seed)")
    p.add_argument("--device", default="cpu", help="device to run G on (default cpu: one sample)")


def main(args: argparse.Namespace) -> int:
    check_seed(NAME, args.seed)
    check_int(NAME, "--queries", args.queries, 1, 8)

    from ..attention_maps import attention_figure
    from ..training.gammas import write_gammas
    from ..training.build import resolve_device
    from ..training.export import check_output, open_generator

    out = Path(args.out)
    if out.suffix.lower() != ".png":
        raise GanzooError(f"attention-maps: --out {out}: must be a .png file")
    check_output(out, "attention-maps: --out")
    opened = open_generator(args.target, resolve_device(args.device), checkpoint=args.checkpoint)
    if opened.warning:
        print(f"ganzoo: warning: {escape(opened.warning)}", file=sys.stderr)
    blocks = attention_figure(opened.G, out, num_classes=opened.recipe.num_classes, seed=args.seed,
                              num_queries=args.queries, cls=args.cls,
                              source=opened.source,
                              title=f"{opened.recipe.name}: {Path(opened.source).name} ({opened.why}), seed {args.seed}")
    gates = ", ".join(f"{b.name} {b.size[0]}x{b.size[1]}" + (f" gamma {b.gamma:.4g}" if b.gamma is not None else "")
                      for b in blocks)
    print(f"wrote {escape(str(out))}: {len(blocks)} attention block(s) ({escape(gates)}), {args.queries} queries, "
          f"from {escape(opened.describe())}")
    target = Path(args.target)
    if target.is_dir() and (target / "recipe.yaml").is_file() and (target / "checkpoints").is_dir():
        try:
            written = write_gammas(target)
        except GanzooError as exc:  # the figure is written; the gates file is a bonus
            print(f"ganzoo: warning: gates not saved: {escape(str(exc))}", file=sys.stderr)
        else:
            if written is not None:
                print(f"wrote {escape(str(written))}")
    return 0
