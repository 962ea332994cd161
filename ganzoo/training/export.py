"""Export EMA-G as ``generator.safetensors`` + ``recipe.yaml``, and rebuild it with :func:`load_generator`.

The export folder is self-contained: the recipe says how to build the generator
(``GENERATOR.build(recipe.generator, recipe.resolution, recipe.num_classes, recipe.channels)``), the
safetensors file holds its state dict (parameters and buffers) and, as metadata, the step and the
ganzoo version. No pickle anywhere.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import __version__
from ..errors import GanzooError
from ..recipe import Recipe, dump_recipe, load_recipe, validate
from ..atomic import atomic_write_bytes, atomic_write_text
from .checkpoint import load_checkpoint, resolve_checkpoint

WEIGHTS_FILE = "generator.safetensors"
RECIPE_FILE = "recipe.yaml"


def recipe_of(ckpt: dict[str, Any], source: str) -> Recipe:
    """The recipe stored in a checkpoint (validated against the blocks registered now)."""
    return validate(ckpt["recipe"], f"{source} (its stored recipe)")


def generator_from_checkpoint(
    ckpt: dict[str, Any], source: str, device: str | torch.device = "cpu", use_ema: bool = True
) -> tuple[nn.Module, Recipe]:
    """Rebuild G from a loaded checkpoint: EMA weights when present (and ``use_ema``), else raw G."""
    from .build import build_generator

    recipe = recipe_of(ckpt, source)
    G = build_generator(recipe)
    state = ckpt["ema"] if use_ema and ckpt.get("ema") is not None else ckpt["generator"]
    G.load_state_dict(state)
    return G.to(device).eval().requires_grad_(False), recipe


def export_generator(target: str | Path, out_dir: str | Path, best: bool = False) -> Path:
    """Write EMA-G of a checkpoint (or of a run folder's latest/best one) to ``out_dir``."""
    from safetensors.torch import save

    path = resolve_checkpoint(target, best=best)
    ckpt = load_checkpoint(path)
    G, recipe = generator_from_checkpoint(ckpt, str(path))
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in G.state_dict().items()}
    meta = {"step": str(int(ckpt["step"])), "ganzoo_version": __version__, "checkpoint": path.name,
            "weights": "ema" if ckpt.get("ema") is not None else "generator"}
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise GanzooError(f"--out {out_dir}: exists and is not a folder")
    out_dir.mkdir(parents=True, exist_ok=True)
    # weights first, recipe last: a folder with a recipe.yaml always has matching weights
    atomic_write_bytes(out_dir / WEIGHTS_FILE, save(tensors, metadata=meta))
    atomic_write_text(out_dir / RECIPE_FILE, dump_recipe(recipe))
    return out_dir


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


def open_generator(
    target: str | Path, device: str | torch.device = "cpu", best: bool = False
) -> tuple[nn.Module, Recipe, int | None, str]:
    """EMA-G (eval mode) from a checkpoint, a run folder (latest or best checkpoint) or an export
    folder: ``(G, recipe, step or None, source description)``."""
    target = Path(target)
    if target.is_dir() and (target / WEIGHTS_FILE).is_file():
        from safetensors import safe_open

        G = load_generator(target, device)
        with safe_open(str(target / WEIGHTS_FILE), "pt") as f:
            step = (f.metadata() or {}).get("step")
        return G, G.recipe, int(step) if step is not None else None, str(target)
    path = resolve_checkpoint(target, best=best)
    ckpt = load_checkpoint(path)
    G, recipe = generator_from_checkpoint(ckpt, str(path), device)
    return G, recipe, int(ckpt["step"]), str(path)
