"""The learned gates (gamma) of every attention block, kept in the run folder as ``gammas.json``.

``out = x + gamma * o``: how much each attention branch is used, for EMA-G (else G) and for D. The
training loop writes the file with every checkpoint (:class:`ganzoo.training.hooks.Checkpoints`); it is
a few hundred bytes, so run folders kept in ``docs/`` without their checkpoints still carry it, and
``ganzoo report`` puts the values in its table (:func:`read_gammas`).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..atomic import atomic_write_text
from ..errors import GanzooError
from .checkpoint import GENERATOR_KEYS, checkpoint_name, list_checkpoints, load_checkpoint
from .rundir import GAMMAS_FILE

__all__ = ["GAMMAS_FILE", "gammas_of_checkpoint", "read_gammas", "write_gammas"]


def gammas_of_checkpoint(ckpt: dict[str, Any]) -> dict[str, dict[str, float]]:
    """``{"generator": {block: gamma}, "discriminator": {...}}`` from a loaded checkpoint: EMA-G's
    weights when it has them (else G's) and D's, every state-dict entry ending in ``gamma``."""
    def gates(state: Any) -> dict[str, float]:
        if not isinstance(state, dict):
            return {}
        return {k.removesuffix(".gamma").removesuffix("gamma") or "gamma": float(v.float().reshape(-1)[0])
                for k, v in state.items() if k.endswith("gamma") and hasattr(v, "numel") and v.numel() >= 1}

    g = ckpt.get("ema") if ckpt.get("ema") is not None else ckpt.get("generator")
    return {"generator": gates(g), "discriminator": gates(ckpt.get("discriminator"))}


def write_gammas(run_dir: str | Path, ckpt: dict[str, Any] | None = None) -> Path | None:
    """Write ``RUN_DIR/gammas.json`` (step, checkpoint, the gates of G's and D's attention blocks) from
    the run's last checkpoint; None (nothing written) when the run has no checkpoint. ``ckpt``: the
    payload just saved as that checkpoint (the training loop has it in memory), instead of reading it."""
    run_dir = Path(run_dir)
    if ckpt is not None:
        step = int(ckpt["step"])
        name = checkpoint_name(step)
    else:
        ckpts = list_checkpoints(run_dir)
        if not ckpts:
            return None
        step, path = ckpts[-1]
        name = path.name
        ckpt = load_checkpoint(path, need=GENERATOR_KEYS)
    data = {"step": int(ckpt.get("step", step)), "checkpoint": name,
            "weights": "ema" if ckpt.get("ema") is not None else "generator", **gammas_of_checkpoint(ckpt)}
    out = run_dir / GAMMAS_FILE
    try:
        atomic_write_text(out, json.dumps(data, indent=1) + "\n")
    except OSError as exc:
        raise GanzooError(f"{out}: cannot write ({exc.strerror or exc})") from None
    return out


def read_gammas(run_dir: str | Path, write: bool = True) -> dict[str, Any] | None:
    """The gates at the end of a run: ``gammas.json`` if the run folder has one (and it is at least as
    new as the last checkpoint), else computed from the last checkpoint (and, with ``write``, saved as
    ``gammas.json`` where the folder is writable), else None."""
    run_dir = Path(run_dir)
    file = run_dir / GAMMAS_FILE
    ckpts = list_checkpoints(run_dir)
    data = None
    if file.is_file():
        try:
            data = json.loads(file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise GanzooError(f"{file}: unreadable ({getattr(exc, 'strerror', None) or exc})") from None
        if not isinstance(data, dict) or not isinstance(data.get("generator"), dict):
            raise GanzooError(f"{file}: not a gammas file (no 'generator' mapping)")
        step = data.get("step")
        if ckpts and (not isinstance(step, int) or step < ckpts[-1][0]):
            data = None  # the run went on since: read the newer checkpoint
    if data is None and ckpts:
        if write:
            try:
                written = write_gammas(run_dir)
                return json.loads(written.read_text(encoding="utf-8")) if written else None
            except GanzooError:
                pass  # read-only folder: compute without saving
        ckpt = load_checkpoint(ckpts[-1][1], need=GENERATOR_KEYS)
        data = {"step": ckpt.get("step"), "checkpoint": ckpts[-1][1].name, **gammas_of_checkpoint(ckpt)}
    return data
