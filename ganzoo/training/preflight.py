"""Checks made before a run writes anything: the run folder can be written, and the disk has room
for the checkpoints the run will keep.

Both fail with one line (:class:`~ganzoo.training.rundir.RunFolderError`, exit 2) before training
starts, instead of hours later at the first checkpoint.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from torch import nn

from .rundir import RunFolderError

# RNG states, the recipe, the data order and the zip/pickle framing of a checkpoint, on top of its tensors
CKPT_OVERHEAD = 256 * 1024
PROBE_BYTES = 64 * 1024


def _tensor_bytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def checkpoint_bytes(G: nn.Module, D: nn.Module, G_ema: nn.Module | None = None) -> int:
    """Estimated size of one checkpoint: the state dicts of G, D and EMA-G, Adam's two moment
    buffers per trainable parameter of G and D, and :data:`CKPT_OVERHEAD`."""
    nets = sum(_tensor_bytes(m.state_dict().values()) for m in (G, D, G_ema) if m is not None)
    adam = 2 * sum(_tensor_bytes(p for p in m.parameters()) for m in (G, D))
    return nets + adam + CKPT_OVERHEAD


def checkpoints_needed(keep_last: int, resume: bool) -> int:
    """Checkpoints that may be on disk at once beyond what is there now: a new run keeps
    ``keep_last``, plus the best-FID one and one being written; a resumed run already holds its
    own, so it needs room for one being written and a new best."""
    return 2 if resume else keep_last + 2


def _existing_folder(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _mb(n: int) -> str:
    return f"{n / 2**20:.1f} MB"


def preflight(run_dir: str | Path, ckpt_bytes: int, keep_last: int, resume: bool = False) -> None:
    """Raise :class:`RunFolderError` unless ``run_dir`` (or, when it does not exist yet, the folder
    it will be created in) takes a real test write, and its disk has room for the checkpoints."""
    run_dir = Path(run_dir)
    folder = _existing_folder(run_dir)
    if not folder.is_dir():
        raise RunFolderError(f"{run_dir}: cannot create the run folder ({folder} is not a folder)")
    # os.access alone says yes to root on a read-only mount, so write (and fsync) a real file
    try:
        fd, probe = tempfile.mkstemp(prefix=".ganzoo-preflight.", suffix=".tmp", dir=folder)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(b"\0" * PROBE_BYTES)
                f.flush()
                os.fsync(f.fileno())
        finally:
            os.unlink(probe)
    except OSError as exc:
        raise RunFolderError(
            f"{run_dir}: cannot write in {folder} ({exc.strerror or exc}); choose another --out"
        ) from None
    count = checkpoints_needed(keep_last, resume)
    need = count * ckpt_bytes
    free = shutil.disk_usage(folder).free
    if free < need:
        raise RunFolderError(
            f"{run_dir}: not enough free disk space: {_mb(free)} free in {folder}, the checkpoints need "
            f"about {_mb(need)} ({count} of {_mb(ckpt_bytes)}); free some space, choose another --out"
            + ("" if resume else " or lower train.keep_last")
        )
