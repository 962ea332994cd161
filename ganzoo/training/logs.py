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
import warnings
from pathlib import Path
from typing import Any

from ..atomic import atomic_write_text
from ..errors import GanzooError, GanzooWarning

METRICS_FILE = "metrics.jsonl"
TB_DIR = "tb"


def _clean(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)  # JSON has no NaN/inf; keep them readable
    return v


def _step(v: Any) -> int | None:
    """A row's ``step`` as an int (an integer, or a float with an integral value), or None when it is
    not a whole number of G steps >= 0."""
    if isinstance(v, float) and math.isfinite(v) and v.is_integer():
        v = int(v)
    if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < 2**63:
        return None
    return v


def read_metric_rows(path: Path) -> tuple[list[dict[str, Any]], list[int]]:
    """The usable rows of ``path`` (each with an int ``step``) and the numbers of the other lines
    skipped, a torn last line (one without its newline: a write cut short) aside."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise GanzooError(f"{path}: cannot read: {exc.strerror or exc}") from None
    rows, skipped = [], []
    lines = data.split(b"\n")  # b"" after the last newline; a torn last line otherwise
    for number, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        try:
            row = json.loads(raw.decode("utf-8"))
        except (ValueError, RecursionError):  # not UTF-8 (UnicodeDecodeError is a ValueError), not JSON
            row = None
        step = _step(row.get("step")) if isinstance(row, dict) else None
        if step is None:
            if number < len(lines):
                skipped.append(number)
            continue
        row["step"] = step
        rows.append(row)
    return rows, skipped


def describe_skipped(skipped: list[int]) -> str:
    """What :func:`read_metric_rows` skipped, for a message: ``line 3, 7: not UTF-8 JSON objects ...``."""
    shown = ", ".join(map(str, skipped[:5])) + (", ..." if len(skipped) > 5 else "")
    return f"line {shown}: not UTF-8 JSON objects with a whole-number step >= 0"


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """Every usable line of a run's ``metrics.jsonl``: a JSON object with an integer ``step`` (>= 0).
    Other lines (a torn last line, bytes that are not UTF-8, JSON that is not such an object) are
    skipped, so every row has ``row["step"]`` as an int."""
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        return []
    return read_metric_rows(path)[0]


class RunLog:
    """Appends scalar rows to ``metrics.jsonl`` and TensorBoard."""

    def __init__(self, run_dir: str | Path, resume_step: int | None = None, tensorboard: bool = True) -> None:
        self.run_dir = Path(run_dir)
        path = self.run_dir / METRICS_FILE
        if resume_step is not None and path.exists():
            rows, skipped = read_metric_rows(path)
            keep = [r for r in rows if r["step"] <= resume_step]
            atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in keep))
            if skipped:  # the rows the run goes on from are every readable one up to its step
                warnings.warn(
                    f"{path}: dropped {len(skipped)} unreadable line(s) ({describe_skipped(skipped)}) "
                    f"while cutting it at step {resume_step}",
                    GanzooWarning,
                    stacklevel=2,
                )
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
