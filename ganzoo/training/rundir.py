"""Run folders: where a run lives, who owns it, and what may change when it is resumed.

Layout of ``runs/<name>/`` (see docs/training.md)::

    recipe.yaml          the fully resolved recipe, written before anything else
    metrics.jsonl        scalar logs, one JSON object per line
    tb/                  TensorBoard event files
    samples/             step-XXXXXXXX.png progress grids from EMA-G and a fixed noise batch
    checkpoints/         step-XXXXXXXX.pt (the last train.keep_last and the best by FID), best.json
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from ..errors import GanzooError, RecipeError
from ..recipe import Recipe, dump_recipe, load_recipe, apply_overrides, load_raw, validate
from ..atomic import atomic_write_text

RECIPE_FILE = "recipe.yaml"
SAMPLES_DIR = "samples"

# Recipe fields that may differ when a run is resumed: they change how long the run goes on and
# what it records, never the computation of the steps already taken.
RESUMABLE_FIELDS = (
    ("train", "steps"),
    ("train", "time_limit_minutes"),
    ("train", "log_every"),
    ("train", "sample_every"),
    ("train", "checkpoint_every"),
    ("train", "keep_last"),
    ("eval",),
    ("description",),
)


class RunFolderError(GanzooError):
    """The run folder cannot be used (taken by another run, not a run folder, ...)."""


def check_folder_name(name: str, source: str, field: str = "name") -> str:
    """A run name must be usable as one folder name."""
    if name in (".", "..") or any(c in name for c in "/\\\0") or name != name.strip() or not name:
        raise RecipeError(
            source, f"{name!r} cannot be a run folder name (no '/', '\\\\', leading or trailing spaces; "
            "not '.' or '..'); pass --name", (field,)
        )
    return name


def is_run_folder(path: Path) -> bool:
    return (path / RECIPE_FILE).is_file()


def _creation_leftover(path: Path) -> bool:
    """The temporary file of a ``recipe.yaml`` whose writer was killed before renaming it."""
    return path.is_file() and path.name.startswith(f".{RECIPE_FILE}.") and path.name.endswith(".tmp")


def check_free(run_dir: str | Path, overwrite: bool = False) -> None:
    """Raise unless ``run_dir`` is absent or empty (or, with ``overwrite``, an old run folder)."""
    run_dir = Path(run_dir)
    if not run_dir.exists():
        parent = run_dir.parent
        while not parent.exists() and parent != parent.parent:
            parent = parent.parent
        if not parent.is_dir():
            raise RunFolderError(f"{run_dir}: cannot create the run folder ({parent} is not a folder)")
        return
    if not run_dir.is_dir():
        raise RunFolderError(f"{run_dir}: exists and is not a folder")
    if all(_creation_leftover(p) for p in run_dir.iterdir()):
        return  # empty, or a run killed while writing its first file: nothing of value there
    if not is_run_folder(run_dir):
        raise RunFolderError(
            f"{run_dir}: folder exists, is not empty and is not a ganzoo run folder; choose another --out/--name"
        )
    if not overwrite:
        raise RunFolderError(
            f"{run_dir}: belongs to another run; use --resume {run_dir} to continue it, "
            "--force to replace it, or --name to pick another folder"
        )


def create(run_dir: str | Path, recipe: Recipe, overwrite: bool = False) -> Path:
    """Make the run folder and write ``recipe.yaml`` into it as its first file.

    With ``overwrite`` an existing run folder (one holding a ``recipe.yaml``) is deleted first.
    """
    run_dir = Path(run_dir)
    check_free(run_dir, overwrite)
    try:
        if run_dir.exists() and any(run_dir.iterdir()):
            shutil.rmtree(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run_dir / RECIPE_FILE, dump_recipe(recipe))
    except OSError as exc:
        raise RunFolderError(f"{run_dir}: cannot create the run folder ({exc.strerror or exc})") from None
    return run_dir


def _strip(data: dict[str, Any]) -> dict[str, Any]:
    import copy

    data = copy.deepcopy(data)
    for path in RESUMABLE_FIELDS:
        node = data
        for part in path[:-1]:
            node = node.get(part, {})
        node.pop(path[-1], None)
    return data


def _first_difference(a: Any, b: Any, loc: tuple[str, ...] = ()) -> tuple[tuple[str, ...], Any, Any] | None:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in list(a) + [k for k in b if k not in a]:
            found = _first_difference(a.get(key), b.get(key), (*loc, str(key)))
            if found:
                return found
        return None
    return None if a == b else (loc, a, b)


def resume_recipe(run_dir: str | Path, recipe: Recipe | None = None, overrides: tuple[str, ...] = ()) -> Recipe:
    """The recipe a resumed run continues with: the run's own ``recipe.yaml`` (with ``overrides``),
    or ``recipe`` if it differs from it only in :data:`RESUMABLE_FIELDS`. Nothing is written here:
    :func:`update_recipe` records the changed fields once the run is ready to continue."""
    run_dir = Path(run_dir)
    saved_path = run_dir / RECIPE_FILE
    if not run_dir.is_dir():
        raise RunFolderError(f"{run_dir}: no such run folder to resume")
    if not saved_path.is_file():
        raise RunFolderError(f"{run_dir}: not a ganzoo run folder (no {RECIPE_FILE}); cannot resume it")
    saved = load_recipe(saved_path)
    if recipe is None:
        recipe = validate(apply_overrides(load_raw(saved_path), overrides), f"{saved_path} (with --set)") \
            if overrides else saved
    diff = _first_difference(_strip(saved.model_dump(mode="json")), _strip(recipe.model_dump(mode="json")))
    if diff:
        loc, old, new = diff
        allowed = ", ".join(".".join(p) for p in RESUMABLE_FIELDS)
        raise RecipeError(
            str(saved_path), f"is {old!r} in the run but {new!r} now; a resumed run may only change {allowed}",
            loc,
        )
    return recipe


def update_recipe(run_dir: str | Path, recipe: Recipe) -> None:
    """Rewrite the run's ``recipe.yaml`` (atomically) if ``recipe`` differs from it."""
    path = Path(run_dir) / RECIPE_FILE
    if load_recipe(path) != recipe:
        atomic_write_text(path, dump_recipe(recipe))
