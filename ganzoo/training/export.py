"""Export EMA-G as ``generator.safetensors`` + ``recipe.yaml``, and rebuild it with :func:`load_generator`.

The export folder is self-contained: the recipe says how to build the generator
(``GENERATOR.build(recipe.generator, recipe.resolution, recipe.num_classes, recipe.channels)``), the
safetensors file holds its state dict (parameters and buffers) and, as metadata, the step and the
ganzoo version. No pickle anywhere.
"""
from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import nn

from .. import __version__
from ..errors import GanzooError
from ..limits import STANDING_STATS_MAX
from ..recipe import Recipe, dump_recipe, load_recipe, validate
from ..atomic import atomic_write_bytes, atomic_write_text
from .checkpoint import GENERATOR_KEYS, CheckpointError, Choice, check_state_shapes, load_checkpoint, select_checkpoint

WEIGHTS_FILE = "generator.safetensors"
RECIPE_FILE = "recipe.yaml"
# the temporary files of an interrupted atomic write of either (ganzoo/atomic.py)
_EXPORT_TEMP = re.compile(rf"^\.({re.escape(WEIGHTS_FILE)}|{re.escape(RECIPE_FILE)})\..+\.tmp$")


def recipe_of(ckpt: dict[str, Any], source: str) -> Recipe:
    """The recipe stored in a checkpoint (validated against the blocks registered now)."""
    return validate(ckpt["recipe"], f"{source} (its stored recipe)")


def generator_from_checkpoint(
    ckpt: dict[str, Any], source: str, device: str | torch.device = "cpu", use_ema: bool = True
) -> tuple[nn.Module, Recipe]:
    """Rebuild G from a loaded checkpoint: EMA weights when present (and ``use_ema``), else raw G.
    Weights that do not fit the stored recipe's G are a one-line :class:`CheckpointError`."""
    from .build import build_generator

    recipe = recipe_of(ckpt, source)
    G = build_generator(recipe)
    key = "ema" if use_ema and ckpt.get("ema") is not None else "generator"
    check_state_shapes(ckpt[key], G, source, key, "the generator of its stored recipe")
    G.load_state_dict(ckpt[key])
    return G.to(device).eval().requires_grad_(False), recipe


def standing(G: nn.Module, recipe: Recipe, batches: int | None, device: str | torch.device,
             checkpoint: str | Path | None = None) -> tuple[nn.Module, int]:
    """G with standing batch-norm statistics over ``batches`` batches of ``recipe.eval.batch_size`` (None:
    the recipe's ``eval.standing_stats``, the statistics its evaluations used; 0: G as it is), and the
    number of batches used (0 where G has no batch norm). Where the run stored the ones its evaluation of
    ``checkpoint`` computed over as many batches (:func:`~.checkpoint.load_standing`), those; else
    computed here from noise seed 0."""
    from .checkpoint import load_standing
    from .plan import autocast_dtype
    from .sampling import batch_norms, with_buffers, with_standing_statistics

    batches = recipe.eval.standing_stats if batches is None else batches
    if not 0 <= batches <= STANDING_STATS_MAX:
        raise GanzooError(f"--standing-stats must be between 0 and {STANDING_STATS_MAX}, got {batches}")
    if batches == 0 or not batch_norms(G):
        return G, 0
    ec = recipe.eval
    stored = load_standing(checkpoint, batches, ec.batch_size) if checkpoint is not None else None
    if stored is not None:
        try:
            return with_buffers(G, stored).requires_grad_(False), batches
        except ValueError:
            pass  # not this generator's: computed below
    S = with_standing_statistics(G, batches, ec.batch_size, recipe.num_classes, 0,
                                 autocast_dtype(recipe.train.precision, torch.device(device)), progress=True)
    return S.requires_grad_(False), batches


def check_output(path: str | Path, what: str, folder: bool = False) -> Path:
    """Raise a one-line :class:`GanzooError` unless ``path`` can be written: a file (or, with
    ``folder``, a folder, which may not exist yet) in a place that takes a real test write. Checked
    before any work, so a read-only place or a folder named as a file fails at once, creating nothing."""
    path = Path(path)
    if folder:
        if path.exists() and not path.is_dir():
            raise GanzooError(f"{what} {path}: exists and is not a folder")
        where = path
        while not where.exists() and where != where.parent:
            where = where.parent
        if not where.is_dir():
            raise GanzooError(f"{what} {path}: cannot create the folder ({where} is not a folder)")
    else:
        if path.is_dir():
            raise GanzooError(f"{what} {path}: is a folder; name a file")
        where = path.parent
        if not where.is_dir():
            raise GanzooError(f"{what} {path}: folder {where} does not exist")
    try:  # os.access says yes to root on a read-only mount: write a real file
        fd, probe = tempfile.mkstemp(prefix=".ganzoo-probe.", suffix=".tmp", dir=where)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise GanzooError(f"{what} {path}: cannot write in {where} ({exc.strerror or exc})") from None
    return path


def _written_by_export(weights: Path) -> bool:
    """``weights`` is a plain file holding ganzoo's export metadata (not a user's own safetensors file)."""
    if weights.is_symlink() or not weights.is_file():
        return False
    try:
        from safetensors import safe_open

        with safe_open(str(weights), "pt") as f:
            return "ganzoo_version" in (f.metadata() or {})
    except Exception:  # unreadable, not safetensors: not ours
        return False


def check_export_folder(path: str | Path, what: str = "--out") -> Path:
    """:func:`check_output` for an export folder, which may be new, empty or an earlier export of ganzoo
    (its ``generator.safetensors`` with ganzoo's metadata, its ``recipe.yaml``), which is replaced. A run
    folder, or a folder holding anything else (a user's ``recipe.yaml``), is a one-line :class:`GanzooError`
    and nothing is written."""
    from .rundir import is_run_folder

    path = Path(path)
    if not path.is_dir():  # new (or not a folder: check_output says so)
        return check_output(path, what, folder=True)
    if is_run_folder(path):
        raise GanzooError(f"{what} {path}: is a run folder; export into a new or empty folder "
                          "(or an earlier export folder, which is replaced)")
    ours = _written_by_export(path / WEIGHTS_FILE)
    foreign = sorted(p.name + ("/" if p.is_dir() else "") for p in path.iterdir()
                     if not (p.is_file() and not p.is_symlink()
                             and (_EXPORT_TEMP.match(p.name) or (ours and p.name in (WEIGHTS_FILE, RECIPE_FILE)))))
    if foreign:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        raise GanzooError(f"{what} {path}: holds files ganzoo export did not write ({shown}); nothing was changed "
                          "(export into a new or empty folder, or an earlier export folder, which is replaced)")
    return check_output(path, what, folder=True)  # after the contents: a refused folder gets no probe file written


def export_generator(target: str | Path, out_dir: str | Path, best: bool = False,
                     checkpoint: str | None = None, standing_stats: int | None = None) -> Path:
    """Write EMA-G of a checkpoint (or of a run folder's best/last one: ``checkpoint``, see
    :func:`~ganzoo.training.checkpoint.select_checkpoint`; ``best=True`` is ``checkpoint="best"``)
    to ``out_dir``, with standing batch-norm statistics (``standing_stats``, see :func:`standing`)."""
    target = Path(target)
    which = None if target.is_file() else checkpoint or ("best" if best else None)
    export_choice(select_checkpoint(target, which), out_dir, standing_stats)
    return Path(out_dir)


def export_choice(choice: Choice, out_dir: str | Path, standing_stats: int | None = None,
                  device: str | torch.device = "cpu") -> tuple[int, int]:
    """Write EMA-G of the chosen checkpoint to ``out_dir`` (weights first, recipe last: a folder with a
    ``recipe.yaml`` always has matching weights; ``out_dir`` new, empty or an earlier export, see
    :func:`check_export_folder`), its batch-norm statistics standing ones over
    ``standing_stats`` batches (None: the recipe's ``eval.standing_stats``, so the export is the generator
    the run's evaluations measured; computed on ``device``); returns the checkpoint's step and the batches used."""
    from safetensors.torch import save

    out_dir = check_export_folder(out_dir)
    path = choice.path
    ckpt = load_checkpoint(path, need=GENERATOR_KEYS)
    G, recipe = generator_from_checkpoint(ckpt, str(path), device)
    G, batches = standing(G, recipe, standing_stats, device, path)
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in G.state_dict().items()}
    meta = {"step": str(ckpt["step"]), "ganzoo_version": __version__, "checkpoint": path.name,
            "weights": "ema" if ckpt.get("ema") is not None else "generator", "chosen": choice.why,
            "standing_stats": str(batches)}
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(out_dir / WEIGHTS_FILE, save(tensors, metadata=meta))
        atomic_write_text(out_dir / RECIPE_FILE, dump_recipe(recipe))
    except OSError as exc:
        raise GanzooError(f"--out {out_dir}: cannot write the export ({exc.strerror or exc})") from None
    return ckpt["step"], batches


def load_generator(path: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    """Rebuild an exported generator from ``path/recipe.yaml`` and ``path/generator.safetensors``.

    Returns G in eval mode with gradients off; ``G(z, y)`` with ``z: [B, G.z_dim]`` (and ``y`` class
    indices when ``G.recipe.num_classes > 0``) gives images in [-1, 1]. The recipe is attached as
    ``G.recipe``.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from .build import build_generator

    path = Path(path)
    recipe_path, weights_path = path / RECIPE_FILE, path / WEIGHTS_FILE
    for p in (recipe_path, weights_path):
        if not p.is_file():
            raise GanzooError(f"{p}: not found (an export folder holds {RECIPE_FILE} and {WEIGHTS_FILE})")
    recipe = load_recipe(recipe_path)
    G = build_generator(recipe)
    try:
        state = load_file(str(weights_path))
    except (SafetensorError, OSError) as exc:
        raise GanzooError(f"{weights_path}: unreadable safetensors file ({exc})") from None
    try:
        G.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise GanzooError(f"{weights_path}: does not match the generator of {recipe_path} ({first})") from None
    G.recipe = recipe
    return G.to(device).eval().requires_grad_(False)


class Opened(NamedTuple):
    """What :func:`open_generator` gives: G (eval mode), its recipe, the step (None if unknown), the
    file or folder it came from and why that one (``"best by FID 32.60"``, ``"last"``, ``"file"``,
    ``"export"``)."""

    G: nn.Module
    recipe: Recipe
    step: int | None
    source: str
    why: str
    warning: str | None = None
    standing: int = 0  # batches of G's standing batch-norm statistics (0: the running statistics)

    def describe(self) -> str:
        """``PATH (step N, best by FID 32.60, standing statistics over 50 batches)``: which checkpoint
        was used, and how."""
        return describe(self.source, self.step, self.why, self.standing)


def describe(source: str | Path, step: int | None, why: str, standing: int) -> str:
    """The one wording of which generator a command used (``Opened.describe``, ``ganzoo export``)."""
    parts = ([f"step {step}"] if step is not None else []) + \
        ([why] if why not in ("file", "export") else []) + \
        ([f"standing statistics over {standing} batches"] if standing else [])
    return f"{source} ({', '.join(parts)})" if parts else str(source)


def _number(meta: dict[str, str], key: str) -> int | None:
    value = meta.get(key)
    return int(value) if value is not None and value.isdigit() else None


def open_generator(
    target: str | Path, device: str | torch.device = "cpu", checkpoint: str | None = None,
    standing_stats: int | None = None,
) -> Opened:
    """EMA-G (eval mode) from a checkpoint, a run folder (its best or last checkpoint: ``checkpoint``,
    see :func:`~ganzoo.training.checkpoint.select_checkpoint`) or an export folder, with standing
    batch-norm statistics over ``standing_stats`` batches (see :func:`standing`; None: the recipe's
    ``eval.standing_stats`` for a checkpoint, the exported statistics for an export folder)."""
    target = Path(target)
    if target.is_dir() and (target / WEIGHTS_FILE).is_file():
        from safetensors import safe_open

        if checkpoint is not None:
            raise CheckpointError(f"--checkpoint {checkpoint}: {target} is an export folder (it holds one generator)")
        G = load_generator(target, device)
        with safe_open(str(target / WEIGHTS_FILE), "pt") as f:
            meta = f.metadata() or {}
        G, batches = standing(G, G.recipe, standing_stats, device) if standing_stats else (G, 0)
        return Opened(G, G.recipe, _number(meta, "step"), str(target), "export",
                      standing=batches or _number(meta, "standing_stats") or 0)
    choice = select_checkpoint(target, checkpoint)
    ckpt = load_checkpoint(choice.path, need=GENERATOR_KEYS)
    G, recipe = generator_from_checkpoint(ckpt, str(choice.path), device)
    G, batches = standing(G, recipe, standing_stats, device, choice.path)
    return Opened(G, recipe, ckpt["step"], str(choice.path), choice.why, choice.warning, batches)
