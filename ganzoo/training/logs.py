"""Scalar logs of a run: ``metrics.jsonl`` (one JSON object per line) and TensorBoard (``tb/``).

Each line of ``metrics.jsonl`` has ``step`` (G steps done), ``kimg`` (thousands of real images shown
to D) and ``time`` (training seconds, all sessions), plus the scalars: training lines carry
``loss/d``, ``loss/g``, ``logits/real``, ``logits/fake`` (and ``loss/reg`` with a regularizer),
``speed/img_per_s``; evaluation lines carry ``eval/<metric>`` values.
On resume the lines after the checkpoint's step are dropped, so the file reads as one run.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from ..atomic import atomic_write_text

METRICS_FILE = "metrics.jsonl"
TB_DIR = "tb"


def _clean(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)  # JSON has no NaN/inf; keep them readable
    return v


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """Every complete line of a run's ``metrics.jsonl`` (a torn last line is ignored)."""
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict):
            out.append(row)
    return out


class RunLog:
    """Appends scalar rows to ``metrics.jsonl`` and TensorBoard."""

    def __init__(self, run_dir: str | Path, resume_step: int | None = None, tensorboard: bool = True) -> None:
        self.run_dir = Path(run_dir)
        path = self.run_dir / METRICS_FILE
        if resume_step is not None and path.exists():
            keep = [r for r in read_metrics(self.run_dir) if int(r.get("step", 0)) <= resume_step]
            atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in keep))
        self._file = open(path, "a", encoding="utf-8")
        self._tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard is optional at run time
                SummaryWriter = None
            if SummaryWriter is not None:
                kwargs = {"purge_step": resume_step + 1} if resume_step is not None else {}
                self._tb = SummaryWriter(str(self.run_dir / TB_DIR), **kwargs)

    def write(self, step: int, values: dict[str, Any], **extra: Any) -> None:
        row = {"step": step, **extra, **{k: _clean(v) for k, v in values.items()}}
        self._file.write(json.dumps(row) + "\n")
        self._file.flush()
        if self._tb is not None:
            for k, v in values.items():
                if isinstance(v, (int, float)) and math.isfinite(v):
                    self._tb.add_scalar(k, v, step)

    def image(self, tag: str, images_uint8, columns: int, step: int) -> None:
        if self._tb is None:
            return
        import torchvision.utils as vutils

        grid = vutils.make_grid(images_uint8, nrow=columns, padding=2)
        self._tb.add_image(tag, grid, step)

    def flush(self) -> None:
        self._file.flush()
        os.fsync(self._file.fileno())
        if self._tb is not None:
            self._tb.flush()

    def close(self) -> None:
        if not self._file.closed:
            self.flush()
            self._file.close()
        if self._tb is not None:
            self._tb.close()
            self._tb = None
