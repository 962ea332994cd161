"""ganzoo sample RUN_DIR|CKPT|EXPORT_DIR --n 64 --out grid.png [--class K] [--seed S] [--checkpoint best|last]
[--standing-stats B]"""
from __future__ import annotations

import argparse
import math
from pathlib import Path

import sys

from ..errors import GanzooError
from ._options import add_checkpoint_argument, add_standing_stats_argument

NAME = "sample"
HELP = "write a PNG grid of EMA-G samples from a run folder, a checkpoint or an export folder"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("target", metavar="RUN_DIR|CKPT",
                   help="run folder (its best or last checkpoint: --checkpoint), checkpoint file or export folder")
    p.add_argument("--n", type=int, default=64, help="number of samples (default 64)")
    p.add_argument("--out", required=True, help="PNG file to write")
    p.add_argument("--class", dest="cls", type=int, default=None,
                   help="class index for every sample (conditional G; default: classes spread over the grid)")
    p.add_argument("--seed", type=int, default=0, help="noise seed (default 0)")
    p.add_argument("--columns", type=int, default=None, help="images per row (default: about sqrt(n))")
    add_checkpoint_argument(p)
    add_standing_stats_argument(p)
    p.add_argument("--device", default="auto")


def main(args: argparse.Namespace) -> int:
    import torch

    from ..training.export import check_output, open_generator
    from ..training.build import resolve_device
    from ..training.sampling import generate, save_grid

    if args.n < 1 or args.n > 100000:
        raise GanzooError(f"sample: --n must be between 1 and 100000, got {args.n}")
    if args.seed < 0:
        raise GanzooError(f"sample: --seed must be >= 0, got {args.seed}")
    out = Path(args.out)
    if out.suffix.lower() != ".png":
        raise GanzooError(f"sample: --out {out}: must be a .png file")
    check_output(out, "sample: --out")
    device = resolve_device(args.device)
    opened = open_generator(args.target, device, checkpoint=args.checkpoint, standing_stats=args.standing_stats)
    if opened.warning:
        print(f"ganzoo: warning: {opened.warning}", file=sys.stderr)
    G, recipe = opened.G, opened.recipe
    nc = recipe.num_classes
    if args.cls is not None:
        if nc == 0:
            raise GanzooError(f"sample: --class: {opened.source} is unconditional (num_classes 0)")
        if not 0 <= args.cls < nc:
            raise GanzooError(f"sample: --class must be in [0, {nc}), got {args.cls}")
    g = torch.Generator().manual_seed(args.seed)
    z = torch.randn(args.n, G.z_dim, generator=g)
    columns = args.columns or max(1, math.ceil(math.sqrt(args.n)))
    if nc == 0:
        y = None
    elif args.cls is not None:
        y = torch.full((args.n,), args.cls, dtype=torch.long)
    else:  # one class per row, cycling through the classes
        y = (torch.arange(args.n) // columns) % nc
    amp = torch.bfloat16 if device.type == "cuda" else None
    images = generate(G, z, y, batch_size=256, autocast_dtype=amp)
    try:
        save_grid(out, images, columns)
    except OSError as exc:
        raise GanzooError(f"sample: --out {out}: cannot write ({exc.strerror or exc})") from None
    print(f"wrote {out}: {args.n} samples from {opened.describe()}")
    return 0
