"""Command-line options shared by several commands, without importing torch (``--help`` stays instant)."""
from __future__ import annotations

import argparse
import math

from ..errors import GanzooError
from ..limits import INT_MAX, STANDING_STATS_MAX

CHECKPOINT_CHOICES = ("best", "last")
# A noise seed: torch.Generator.manual_seed takes 0 .. 2**64 - 1, and ganzoo adds small offsets to a seed
# for its separate streams (ganzoo/training/sampling.py), so the int64 range leaves room for them.
SEED_MAX = INT_MAX


def check_int(command: str, flag: str, value: int, minimum: int, maximum: int = INT_MAX) -> int:
    """``value`` of the integer option ``flag``, or a one-line :class:`GanzooError` naming the command and
    the option (exit 2) when it is outside ``minimum .. maximum``. Every integer option's bounds are
    checked here, in one wording, before the command reads or writes anything."""
    if not minimum <= value <= maximum:
        unbounded = value < minimum and maximum >= INT_MAX
        bounds = f"at least {minimum}" if unbounded else f"between {minimum} and {maximum}"
        raise GanzooError(f"{command}: {flag} must be {bounds}, got {value}")
    return value


def check_seed(command: str, value: int, flag: str = "--seed", maximum: int = SEED_MAX) -> int:
    """A seed option: ``0 .. maximum`` (default :data:`SEED_MAX`), else one line naming the option."""
    return check_int(command, flag, value, 0, maximum)


def check_positive(command: str, flag: str, value: float, unit: str, maximum: float = math.inf) -> float:
    """A positive finite number option (of ``unit``, at most ``maximum``): nan, inf, 0 and negatives
    are one line naming the option."""
    if not (math.isfinite(value) and 0 < value <= maximum):
        limit = f" (at most {maximum:g})" if math.isfinite(maximum) else ""
        raise GanzooError(f"{command}: {flag} must be a positive number of {unit}{limit}, got {value}")
    return value


def add_checkpoint_argument(parser: argparse.ArgumentParser) -> None:
    """``--checkpoint best|last`` (and the older ``--best``) for the commands that read a run folder."""
    parser.add_argument("--checkpoint", choices=CHECKPOINT_CHOICES, default=None,
                        help="from a run folder: best (by FID, checkpoints/best.json) or last; default: best "
                             "where the run recorded one, else last")
    parser.add_argument("--best", dest="checkpoint", action="store_const", const="best", help=argparse.SUPPRESS)


def add_standing_stats_argument(parser: argparse.ArgumentParser) -> None:
    """``--standing-stats BATCHES``: EMA-G's batch-norm statistics recomputed first (``eval.standing_stats``)."""
    parser.add_argument("--standing-stats", type=int, default=None, metavar="BATCHES",
                        help=f"recompute EMA-G's batch-norm statistics over this many batches first, 0 to "
                             f"{STANDING_STATS_MAX} (default: the recipe's eval.standing_stats, which its evaluations "
                             "used; 0: the running statistics in the checkpoint)")


def check_standing_stats(command: str, value: int | None) -> int | None:
    """``--standing-stats``: None (the recipe's ``eval.standing_stats``) or 0 .. STANDING_STATS_MAX batches,
    the recipe field's bounds, checked before anything is read."""
    return None if value is None else check_int(command, "--standing-stats", value, 0, STANDING_STATS_MAX)


def add_truncation_argument(parser: argparse.ArgumentParser) -> None:
    """``--truncation T``: the samples' noise from the normal truncated to [-T, T] (``sampling.latent_noise``)."""
    parser.add_argument("--truncation", type=float, default=None, metavar="T",
                        help="draw the noise from the normal truncated to [-T, T], T > 0 (BigGAN's truncation "
                             "trick: less variety, more typical samples; standing statistics still use the "
                             "training noise); default: none, the training distribution N(0, 1)")


def check_truncation(command: str, value: float | None) -> float | None:
    """``--truncation``: None or a positive finite number of standard deviations."""
    return None if value is None else check_positive(command, "--truncation", value, "standard deviations")


def truncation_note(value: float | None) -> str:
    """What a command's summary line adds for ``--truncation``: nothing without it."""
    return "" if value is None else f", noise truncated to [-{value:g}, {value:g}]"
