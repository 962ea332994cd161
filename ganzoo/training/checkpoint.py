"""Checkpoints: what they hold, how they are written (atomically) and read (weights only).

A checkpoint is a plain ``dict`` of tensors, numbers, strings, lists and dicts, so that
``torch.load(path, weights_only=True)`` reads it: no pickled objects, nothing that could run code.
RNG states are stored as tensors for the same reason. Layout (``FORMAT_VERSION`` 1)::

    format, version, ganzoo_version     identification
    step                                G steps completed
    recipe                              the fully resolved recipe (plain mapping)
    generator, discriminator, ema       state dicts (ema: None when train.ema.enabled is off)
    g_optim, d_optim                    optimiser state dicts
    rng                                 torch CPU, CUDA (one per device), numpy, python states
    data                                data-order generator state, epoch, position in the epoch
    wall_time                           seconds trained so far (all sessions)
    rollbacks                           divergence rollbacks so far (train.on_divergence; 0 if absent)
"""
from __future__ import annotations

import pickle
import random
import re
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import __version__
from ..errors import GanzooError
from ..atomic import atomic_write, remove_stale_temps

FORMAT = "ganzoo-checkpoint"
FORMAT_VERSION = 1
CKPT_DIR = "checkpoints"
CKPT_RE = re.compile(r"^step-(\d+)\.pt$")


class CheckpointError(GanzooError):
    """A checkpoint is missing, unreadable, unsafe (pickled code) or not a ganzoo checkpoint."""


def checkpoint_name(step: int) -> str:
    return f"step-{step:08d}.pt"


# ----------------------------------------------------------------------------- RNG states
def capture_rng(device: torch.device) -> dict[str, Any]:
    """Every global RNG state, as tensors and plain values (weights-only loadable)."""
    np_state = np.random.get_state()
    py_version, py_internal, py_gauss = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "kind": str(np_state[0]),
            "keys": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "python": {
            "version": int(py_version),
            "internal": torch.tensor(py_internal, dtype=torch.int64),
            "gauss_next": py_gauss,
        },
        "cuda": [],
    }
    if device.type == "cuda" and torch.cuda.is_available():
        state["cuda"] = [s.cpu() for s in torch.cuda.get_rng_state_all()]
    return state


def restore_rng(state: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["torch"].cpu().to(torch.uint8))
    n = state["numpy"]
    np.random.set_state(
        (n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"])
    )
    p = state["python"]
    random.setstate((p["version"], tuple(int(v) for v in p["internal"].tolist()), p["gauss_next"]))
    cuda = state.get("cuda") or []
    if device.type == "cuda" and cuda and torch.cuda.is_available():
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all([s.cpu().to(torch.uint8) for s in cuda])
        else:  # different machine: at least restore the training device's stream
            idx = device.index if device.index is not None else torch.cuda.current_device()
            torch.cuda.set_rng_state(cuda[min(idx, len(cuda) - 1)].cpu().to(torch.uint8), idx)


# ----------------------------------------------------------------------------- save / load
def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> Path:
    """Write ``payload`` (plus format tags) atomically to ``path``."""
    body = {"format": FORMAT, "version": FORMAT_VERSION, "ganzoo_version": __version__, **payload}
    try:
        return atomic_write(path, lambda f: torch.save(body, f))
    except OSError as exc:
        raise CheckpointError(
            f"{path}: cannot write the checkpoint ({exc.strerror or exc}); the previous one is intact"
        ) from None


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint with ``weights_only=True``; anything else is refused with a one-line error."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"{path}: refused: not a weights-only checkpoint (it holds pickled objects: {first})"
        ) from None
    except (EOFError, zipfile.BadZipFile, RuntimeError, ValueError, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path}: unreadable checkpoint ({first})") from None
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a ganzoo checkpoint")
    if obj.get("version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format version {obj.get('version')} is not supported "
            f"(this ganzoo reads version {FORMAT_VERSION})"
        )
    return obj


# ----------------------------------------------------------------------------- run folders
def list_checkpoints(run_dir: str | Path) -> list[tuple[int, Path]]:
    """``(step, path)`` of every step checkpoint in a run folder, oldest first."""
    folder = Path(run_dir) / CKPT_DIR
    if not folder.is_dir():
        return []
    out = []
    for p in folder.iterdir():
        m = CKPT_RE.match(p.name)
        if m and p.is_file():
            out.append((int(m.group(1)), p))
    return sorted(out)


def latest_checkpoint(run_dir: str | Path) -> tuple[Path, dict[str, Any]] | None:
    """The newest checkpoint of a run folder that loads, with its content (None if there is none).

    Checkpoints are written atomically, so a bad one only comes from outside damage; it is skipped
    (with a warning) in favour of the one before.
    """
    import warnings

    for _, path in reversed(list_checkpoints(run_dir)):
        try:
            return path, load_checkpoint(path)
        except CheckpointError as exc:
            warnings.warn(f"skipping {exc}", stacklevel=2)
    return None


def prune_checkpoints(run_dir: str | Path, keep_last: int, keep: set[int] = frozenset()) -> list[Path]:
    """Delete step checkpoints except the newest ``keep_last`` and the steps in ``keep``."""
    ckpts = list_checkpoints(run_dir)
    keep_steps = {s for s, _ in ckpts[-keep_last:]} | set(keep)
    removed = []
    for step, path in ckpts:
        if step not in keep_steps:
            path.unlink(missing_ok=True)
            removed.append(path)
    remove_stale_temps(Path(run_dir) / CKPT_DIR)
    return removed


def resolve_checkpoint(target: str | Path, best: bool = False) -> Path:
    """A checkpoint file from a path that is a checkpoint or a run folder (latest, or best by FID)."""
    import json

    target = Path(target)
    if target.is_file():
        return target
    if not target.is_dir():
        raise CheckpointError(f"{target}: no such run folder or checkpoint")
    if best:
        best_file = target / CKPT_DIR / "best.json"
        if not best_file.is_file():
            raise CheckpointError(f"{target}: no best checkpoint recorded (needs an evaluation with fid)")
        info = json.loads(best_file.read_text())
        path = target / CKPT_DIR / info["file"]
        if not path.is_file():
            raise CheckpointError(f"{best_file}: names {info['file']}, which does not exist")
        return path
    ckpts = list_checkpoints(target)
    if not ckpts:
        raise CheckpointError(f"{target}: no checkpoints in {target / CKPT_DIR}")
    return ckpts[-1][1]
