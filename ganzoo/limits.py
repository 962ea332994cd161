"""Numeric bounds shared by recipe fields and command-line options, in one place. No pydantic or torch
here: ``ganzoo.commands._options`` imports it, and ``--help`` stays instant."""
from __future__ import annotations

INT_MAX = 2**63 - 1  # every integer field fits in int64 (torch, numpy, file offsets)
# the most batches of standing batch-norm statistics (eval.standing_stats, and --standing-stats)
STANDING_STATS_MAX = 100_000
