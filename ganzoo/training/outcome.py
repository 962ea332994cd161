"""How a training run ends: :class:`TrainResult`, or :class:`TrainingDiverged` (exit 3)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import GanzooError

EXIT_DIVERGED = 3


class TrainingDiverged(GanzooError):
    """A loss or a weight became NaN/inf; the run stops, keeping its last good checkpoint."""

    exit_code = EXIT_DIVERGED


def diverged(step: int, what: str, value: float, last_ckpt: Path | None) -> TrainingDiverged:
    keep = f"last good checkpoint: {last_ckpt}" if last_ckpt else "no checkpoint was written yet"
    return TrainingDiverged(f"training diverged at step {step}: {what} is {value} ({keep})")


@dataclass
class TrainResult:
    """How a call to :func:`ganzoo.training.train` ended."""

    run_dir: Path
    step: int
    status: str  # "finished", "time_limit", "interrupted" (a signal), "stopped" (stop_after)
    checkpoint: Path | None = None
    signal: int | None = None
    eval: dict[str, float] = field(default_factory=dict)
    recipe: Any = None  # the recipe the run trained (resolved from the run folder when resuming)
