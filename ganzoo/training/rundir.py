"""Run folders: where a run lives, who owns it, and what may change when it is resumed.

Layout of ``runs/<name>/`` (see docs/training.md)::

    recipe.yaml          the fully resolved recipe, written before anything else
    metrics.jsonl        scalar logs, one JSON object per line
    tb/                  TensorBoard event files
    samples/             step-XXXXXXXX.png progress grids from EMA-G and a fixed noise batch
    checkpoints/         step-XXXXXXXX.pt (the last train.keep_last and the best by FID), best.json
    ganzoo-run.json      the marker: {"format": "ganzoo-run", "version": 1, ...}, written right after
                         recipe.yaml; what makes a folder a run folder (see :func:`is_run_folder`)

``--force`` removes only what ganzoo writes there (:func:`foreign_entries` lists anything else) and
refuses, changing nothing, a folder that also holds other files: a user's ``notes.txt`` or ``data/``
is never deleted.
"""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

from .. import __version__
from ..config import check_run_name
from ..errors import GanzooError, RecipeError
from ..recipe import Recipe, dump_recipe, load_recipe, apply_overrides, load_raw, validate
from ..atomic import atomic_write_text

RECIPE_FILE = "recipe.yaml"
SAMPLES_DIR = "samples"
MARKER_FILE = "ganzoo-run.json"  # visible: a user sees what the folder is (and preflight checks find no hidden files)
MARKER_FORMAT = "ganzoo-run"
MARKER_VERSION = 1

# Everything ganzoo writes in a run folder: top-level files, and folders with the names they hold
# (a hidden ``.NAME.*.tmp`` is a temporary file of an atomic write, see ganzoo/atomic.py)
GAMMAS_FILE = "gammas.json"  # the attention gates at the last checkpoint (training/gammas.py)
OWN_FILES = {RECIPE_FILE, MARKER_FILE, "metrics.jsonl", "command.txt", "ablate-done.json", GAMMAS_FILE}
_TEMP = r"\..+\.tmp"
OWN_DIRS = {
    "checkpoints": re.compile(rf"^(step-\d+\.pt(\.damaged)?|step-\d+\.standing\.safetensors|best\.json|{_TEMP})$"),
    SAMPLES_DIR: re.compile(rf"^(step-\d+\.png|{_TEMP})$"),
    "tb": re.compile(r"^events\.out\.tfevents\..+$"),
}
_OWN_TEMP = re.compile(rf"^\.({'|'.join(re.escape(n) for n in sorted(OWN_FILES))}|ganzoo-preflight)\..+\.tmp$")
# a run folder written before the marker existed: recipe.yaml and at least one of these
_LEGACY_EVIDENCE = ("metrics.jsonl", "checkpoints", SAMPLES_DIR, "tb")

# Recipe fields that may differ when a run is resumed: they change how long the run goes on and
# what it records, never the computation of the steps already taken.
RESUMABLE_FIELDS = (
    ("train", "steps"),
    ("train", "time_limit_minutes"),
    ("train", "log_every"),
    ("train", "sample_every"),
    ("train", "checkpoint_every"),
    ("train", "keep_last"),
    ("train", "collapse"),  # ganzoo/training/collapse.py: what is watched, never how steps compute
    ("eval",),
    ("description",),
)


class RunFolderError(GanzooError):
    """The run folder cannot be used (taken by another run, not a run folder, ...)."""


def check_folder_name(name: str, source: str, field: str = "name") -> str:
    """A run name must be usable as one folder name (and hold no control characters, nor be too long)."""
    check_run_name(name, source, field)
    if name in (".", "..") or any(c in name for c in "/\\\0") or name != name.strip() or not name:
        raise RecipeError(
            source, f"{name!r} cannot be a run folder name (no '/', '\\\\', leading or trailing spaces; "
            "not '.' or '..'); pass --name", (field,)
        )
    return name


def has_marker(path: Path) -> bool:
    """The folder holds ganzoo's run marker (a JSON file only ganzoo writes)."""
    try:
        info = json.loads((path / MARKER_FILE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(info, dict) and info.get("format") == MARKER_FORMAT


def is_run_folder(path: Path) -> bool:
    """A folder ganzoo made for a run: it has the marker, or (a run folder written before the marker
    existed) a ``recipe.yaml`` with metrics, checkpoints, samples or TensorBoard files beside it. A
    folder that merely holds a ``recipe.yaml`` is not one."""
    if not (path / RECIPE_FILE).is_file():
        return False
    return has_marker(path) or any((path / name).exists() for name in _LEGACY_EVIDENCE)


def write_marker(run_dir: str | Path) -> None:
    """Mark ``run_dir`` as a ganzoo run folder (atomically; kept if already there)."""
    run_dir = Path(run_dir)
    if not has_marker(run_dir):
        info = {"format": MARKER_FORMAT, "version": MARKER_VERSION, "ganzoo_version": __version__}
        atomic_write_text(run_dir / MARKER_FILE, json.dumps(info) + "\n")


def _own(entry: Path) -> bool:
    name = entry.name
    if entry.is_symlink():
        return False
    if name in OWN_DIRS:
        return entry.is_dir() and all(
            OWN_DIRS[name].match(p.name) and p.is_file() and not p.is_symlink() for p in entry.iterdir()
        )
    return entry.is_file() and (name in OWN_FILES or bool(_OWN_TEMP.match(name)))


def foreign_entries(run_dir: str | Path) -> list[str]:
    """Names in ``run_dir`` that ganzoo did not write (``data/`` for a folder, or for one of ganzoo's
    folders holding something else), sorted."""
    run_dir = Path(run_dir)
    return sorted(p.name + ("/" if p.is_dir() else "") for p in run_dir.iterdir() if not _own(p))


def _creation_leftover(path: Path) -> bool:
    """The temporary file of a ``recipe.yaml`` whose writer was killed before renaming it."""
    return path.is_file() and path.name.startswith(f".{RECIPE_FILE}.") and path.name.endswith(".tmp")


def check_free(run_dir: str | Path, overwrite: bool = False) -> None:
    """Raise unless ``run_dir`` is absent or empty (or, with ``overwrite``, a run folder holding only
    what ganzoo wrote)."""
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
    foreign = foreign_entries(run_dir)
    if foreign:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        raise RunFolderError(
            f"{run_dir}: --force replaces only what ganzoo wrote, and this run folder also holds {shown}; "
            "nothing was changed (move them away, or choose another --name)"
        )


def _remove_own(run_dir: Path) -> None:
    """Delete what ganzoo wrote in ``run_dir`` (never anything :func:`foreign_entries` lists)."""
    for entry in run_dir.iterdir():
        if not _own(entry):
            continue
        if entry.is_dir():
            for p in entry.iterdir():
                p.unlink()
            entry.rmdir()
        else:
            entry.unlink()


def create(run_dir: str | Path, recipe: Recipe, overwrite: bool = False) -> Path:
    """Make the run folder and write ``recipe.yaml`` into it as its first file, then the marker.

    With ``overwrite`` ganzoo's own files of an existing run folder are deleted first (the folder
    must hold nothing else: :func:`check_free`).
    """
    run_dir = Path(run_dir)
    check_free(run_dir, overwrite)
    try:
        if run_dir.exists():
            _remove_own(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run_dir / RECIPE_FILE, dump_recipe(recipe))
        write_marker(run_dir)
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


def recipe_difference(saved: Recipe, other: Recipe) -> tuple[tuple[str, ...], Any, Any] | None:
    """The first field (path, value in ``saved``, value in ``other``) in which two recipes differ,
    ignoring :data:`RESUMABLE_FIELDS`; None if they agree."""
    return _first_difference(_strip(saved.model_dump(mode="json")), _strip(other.model_dump(mode="json")))


def resume_recipe(run_dir: str | Path, recipe: Recipe | None = None, overrides: tuple[str, ...] = ()) -> Recipe:
    """The recipe a resumed run continues with: the run's own ``recipe.yaml`` (with ``overrides``),
    or ``recipe`` if it differs from it only in :data:`RESUMABLE_FIELDS`. Nothing is written here:
    :func:`update_recipe` records the changed fields once the run is ready to continue."""
    run_dir = Path(run_dir)
    saved_path = run_dir / RECIPE_FILE
    if not run_dir.is_dir():
        raise RunFolderError(f"{run_dir}: is a file; --resume takes the run's folder" if run_dir.exists()
                             else f"{run_dir}: no such run folder to resume")
    if not saved_path.is_file():
        raise RunFolderError(f"{run_dir}: not a ganzoo run folder (no {RECIPE_FILE}); cannot resume it")
    saved = load_recipe(saved_path)
    if recipe is None:
        recipe = validate(apply_overrides(load_raw(saved_path), overrides), f"{saved_path} (with --set)") \
            if overrides else saved
    diff = recipe_difference(saved, recipe)
    if diff:
        loc, old, new = diff
        allowed = ", ".join(".".join(p) for p in RESUMABLE_FIELDS)
        raise RecipeError(
            str(saved_path), f"is {old!r} in the run but {new!r} now; a resumed run may only change {allowed}",
            loc,
        )
    return recipe


def update_recipe(run_dir: str | Path, recipe: Recipe) -> None:
    """Rewrite the run's ``recipe.yaml`` (atomically) if ``recipe`` differs from it; a resumed run
    folder written before the marker existed gets its marker here."""
    path = Path(run_dir) / RECIPE_FILE
    if load_recipe(path) != recipe:
        atomic_write_text(path, dump_recipe(recipe))
    write_marker(run_dir)
