"""ganzoo sample RUN_DIR|CKPT|EXPORT_DIR --n 64 --out grid.png [--class K] [--seed S] [--checkpoint best|last]
[--standing-stats B] [--truncation T]"""
from __future__ import annotations

import argparse
import math
from pathlib import Path

import sys

from ..errors import GanzooError
from ._options import (add_checkpoint_argument, add_standing_stats_argument, add_truncation_argument, check_int,
                       check_seed, check_standing_stats, check_truncation, truncation_note)

NAME = "sample"
HELP = "write a PNG grid of EMA-G samples from a run folder, a checkpoint or an export folder"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("target", metavar="RUN_DIR|CKPT",
                   help="run folder (its best or last checkpoint: --checkpoint), checkpoint file or export folder")
    p.add_argument("--n", type=int, default=64, help="number of samples (default 64)")
    p.add_argument("--out", required=True, help="PNG file to write")
    p.add_argument("--class", dest="cls", type=int, default=None,
                   help="class index for every sample (conditional G; default: classes spread over the grid)")
    p.add_argument("--seed", type=int, default=0, help="noise seed, 0 to 2**63-1 (default 0)")
    p.add_argument("--columns", type=int, default=None,
                   help="images per row, at least 1; more than --n: one row (default: about sqrt(n))")
    add_checkpoint_argument(p)
    add_standing_stats_argument(p)
    add_truncation_argument(p)
    p.add_argument("--device", default="auto")


def main(args: argparse.Namespace) -> int:
    check_int(NAME, "--n", args.n, 1, 100000)
    check_seed(NAME, args.seed)
    check_standing_stats(NAME, args.standing_stats)
    check_truncation(NAME, args.truncation)
    if args.columns is not None:
        check_int(NAME, "--columns", args.columns, 1)

    import torch

    from ..training.export import check_output, open_generator
    from ..training.build import resolve_device
    from ..training.sampling import generate, latent_noise, save_grid

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
    z = latent_noise(args.n, G.z_dim, g, args.truncation)
    columns = min(args.columns, args.n) if args.columns is not None else max(1, math.ceil(math.sqrt(args.n)))
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
    print(f"wrote {out}: {args.n} samples from {opened.describe()}{truncation_note(args.truncation)}")
    return 0
