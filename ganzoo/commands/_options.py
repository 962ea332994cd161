"""Command-line options shared by several commands, without importing torch (``--help`` stays instant)."""
from __future__ import annotations

import argparse

CHECKPOINT_CHOICES = ("best", "last")


def add_checkpoint_argument(parser: argparse.ArgumentParser) -> None:
    """``--checkpoint best|last`` (and the older ``--best``) for the commands that read a run folder."""
    parser.add_argument("--checkpoint", choices=CHECKPOINT_CHOICES, default=None,
                        help="from a run folder: best (by FID, checkpoints/best.json) or last; default: best "
                             "where the run recorded one, else last")
    parser.add_argument("--best", dest="checkpoint", action="store_const", const="best", help=argparse.SUPPRESS)


def add_standing_stats_argument(parser: argparse.ArgumentParser) -> None:
    """``--standing-stats BATCHES``: EMA-G's batch-norm statistics recomputed first (``eval.standing_stats``)."""
    parser.add_argument("--standing-stats", type=int, default=None, metavar="BATCHES",
                        help="recompute EMA-G's batch-norm statistics over this many batches first (default: the "
                             "recipe's eval.standing_stats, which its evaluations used; 0: the running statistics "
                             "in the checkpoint)")
