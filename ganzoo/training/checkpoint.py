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
    regularizer                         a ``stateful`` regularizer's ``state_dict()`` (LeCam's moving
                                        averages); only present for such a regularizer, required then
    sha256                              digest of everything above (:func:`payload_digest`); absent in
                                        checkpoints written before it was added, which load unverified

Every load verifies the digest (a flipped bit is a one-line error naming the file) and the payload's
shape (:func:`check_payload`), so a damaged or foreign checkpoint is refused before any state is
touched. Beside a checkpoint whose step was evaluated with standing statistics (``eval.standing_stats``)
sits ``step-N.standing.safetensors``: EMA-G's batch-norm buffers as that evaluation computed them
(:func:`save_standing`), so sampling and exporting use the measured generator without recomputing
them; it is pruned with its checkpoint. Which checkpoint of a run folder a command uses is decided in one place,
:func:`select_checkpoint` (``--checkpoint best|last``); paths read from run-folder files never leave
the run folder's ``checkpoints/``.
"""
from __future__ import annotations

import hashlib
import json
import math
import pickle
import random
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

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


# ----------------------------------------------------------------------------- standing statistics
STANDING_SUFFIX = ".standing.safetensors"


def standing_path(ckpt: str | Path) -> Path:
    """``step-N.standing.safetensors`` beside checkpoint ``step-N.pt``."""
    ckpt = Path(ckpt)
    return ckpt.with_name(ckpt.name.removesuffix(".pt") + STANDING_SUFFIX)


def save_standing(ckpt: str | Path, buffers: Mapping[str, torch.Tensor], batches: int, batch_size: int,
                  seed: int) -> Path:
    """Write EMA-G's standing batch-norm buffers of the evaluation of checkpoint ``ckpt`` beside it
    (atomically; safetensors, no pickle), with how they were computed as metadata."""
    from safetensors.torch import save

    tensors = {k: v.detach().cpu().contiguous() for k, v in buffers.items()}
    meta = {"batches": str(batches), "batch_size": str(batch_size), "seed": str(seed)}
    return atomic_write(standing_path(ckpt), lambda f: f.write(save(tensors, metadata=meta)))


def load_standing(ckpt: str | Path, batches: int, batch_size: int) -> dict[str, torch.Tensor] | None:
    """The standing buffers stored beside checkpoint ``ckpt``, if they were computed over ``batches``
    batches of ``batch_size``; None if there are none, they were computed otherwise, or the file does
    not read (then the caller recomputes them: the file is a cache of the evaluation's)."""
    from safetensors import SafetensorError, safe_open

    path = standing_path(ckpt)
    if not path.is_file():
        return None
    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
            if meta.get("batches") != str(batches) or meta.get("batch_size") != str(batch_size):
                return None
            return {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError):
        return None


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


# ----------------------------------------------------------------------------- digest
DIGEST_KEY = "sha256"


def _feed(h: Any, obj: Any) -> None:
    """Hash ``obj`` (a checkpoint's nested dicts, lists, tensors and plain values) canonically: the
    same bytes before ``torch.save`` and after ``torch.load``, whatever device or strides a tensor had."""
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous()
        h.update(f"T{t.dtype}{tuple(t.shape)};".encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy().data)
    elif isinstance(obj, Mapping):
        h.update(f"D{len(obj)};".encode())
        for k, v in obj.items():
            _feed(h, k)
            _feed(h, v)
    elif isinstance(obj, (list, tuple)):
        h.update(f"{'L' if isinstance(obj, list) else 'U'}{len(obj)};".encode())
        for v in obj:
            _feed(h, v)
    else:  # None, bool, int, float, str, torch.dtype, ...: their repr round-trips exactly
        h.update(f"{type(obj).__name__}:{obj!r};".encode())


def payload_digest(body: Mapping[str, Any]) -> str:
    """sha256 (hex) of every entry of a checkpoint except the digest itself."""
    h = hashlib.sha256()
    _feed(h, {k: v for k, v in body.items() if k != DIGEST_KEY})
    return h.hexdigest()


# ----------------------------------------------------------------------------- save / load
def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> Path:
    """Write ``payload`` (plus format tags and its digest) atomically to ``path``."""
    body = {"format": FORMAT, "version": FORMAT_VERSION, "ganzoo_version": __version__, **payload}
    body.pop(DIGEST_KEY, None)
    body[DIGEST_KEY] = payload_digest(body)
    try:
        return atomic_write(path, lambda f: torch.save(body, f))
    except OSError as exc:
        raise CheckpointError(
            f"{path}: cannot write the checkpoint ({exc.strerror or exc}); the previous one is intact"
        ) from None


# what a checkpoint must hold to rebuild G (sample, eval, export), and to continue training (resume)
GENERATOR_KEYS = ("recipe", "generator")
RESUME_KEYS = ("recipe", "generator", "discriminator", "g_optim", "d_optim", "rng", "data")


def load_checkpoint(
    path: str | Path, map_location: str | torch.device = "cpu", need: Iterable[str] = ()
) -> dict[str, Any]:
    """Read a checkpoint with ``weights_only=True``, verify its digest (when it has one) and check
    its payload (:func:`check_payload`, with the keys in ``need``); anything else is refused with a
    one-line :class:`CheckpointError` naming the file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except OSError as exc:
        raise CheckpointError(f"{path}: unreadable checkpoint ({exc.strerror or _first_line(exc)})") from None
    except Exception as exc:  # noqa: BLE001  any bytes at all: torch's unpickler raises KeyError, IndexError, ...
        raise CheckpointError(f"{path}: {_load_problem(path, exc)}") from None
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a ganzoo checkpoint")
    if obj.get("version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format version {obj.get('version')} is not supported "
            f"(this ganzoo reads version {FORMAT_VERSION})"
        )
    if DIGEST_KEY in obj and obj[DIGEST_KEY] != payload_digest(obj):
        raise CheckpointError(f"{path}: damaged checkpoint: its content does not match its sha256 digest")
    check_payload(obj, path, need)
    return obj


# torch's weights-only unpickler refusing a global (a class or function: code a full unpickler would run)
_UNSAFE_GLOBAL = re.compile(
    r"GLOBAL ([A-Za-z_][\w.]*) was not an allowed global by default"
    r"|Trying to load unsupported GLOBAL ([A-Za-z_][\w.]*) whose module \S+ is blocked"
)
_UNSAFE_CALL = re.compile(r"Trying to call reduce for unrecognized function|Can only create new object for")
_MAGIC = {
    b"\x89PNG\r\n\x1a\n": "a PNG image", b"\xff\xd8\xff": "a JPEG image", b"GIF8": "a GIF image",
    b"\x1f\x8b": "a gzip file", b"PK\x03\x04": "a damaged or truncated checkpoint, or a zip archive that "
    "torch.save did not write",
}


def _load_problem(path: Path, exc: Exception) -> str:
    """What is wrong with a file ``torch.load(weights_only=True)`` failed on, as the end of a one-line
    message: refused for safety only when it really is a pickle whose globals the weights-only unpickler
    rejected; otherwise not a readable ganzoo checkpoint, with what the file looks like. Never torch's
    own text, whose advice (``weights_only=False``) would run the file's code."""
    if isinstance(exc, pickle.UnpicklingError):
        text = str(exc)
        m = _UNSAFE_GLOBAL.search(text)
        if m or _UNSAFE_CALL.search(text):
            what = f"global {(m.group(1) or m.group(2))[:80]}" if m else "a call of a function or class"
            return (f"refused: not a weights-only checkpoint (it holds pickled objects that could run code: "
                    f"{what}); refused for safety, nothing in it was run")
    return f"unreadable checkpoint: not a readable ganzoo checkpoint ({_looks_like(path, exc)})"


def _looks_like(path: Path, exc: Exception) -> str:
    try:
        with open(path, "rb") as f:
            head = f.read(4096)
    except OSError as err:
        return err.strerror or type(err).__name__
    if not head:
        return "the file is empty"
    for magic, what in _MAGIC.items():
        if head.startswith(magic):
            if magic == b"PK\x03\x04" and isinstance(exc, RuntimeError):  # torch's zip reader: say why
                why = re.sub(r"^\[enforce fail at [^\]]*\]\s*\.?\s*", "", _first_line(exc))
                why = why.split(". ")[0].removesuffix(".")
                if why and len(why) <= 200 and "weights_only" not in why:
                    what += f": {why}"
            return f"it is {what}"
    if not head.strip(b"\0"):
        return "it starts with only zero bytes"
    if head.startswith(b"\x80") and len(head) > 1 and 2 <= head[1] <= 5:
        return "it is a pickle that is damaged, truncated or not written by torch.save"
    try:
        head.decode("utf-8")
        return "it is text"
    except UnicodeDecodeError as err:
        if err.start >= len(head) - 3 and err.reason == "unexpected end of data":
            return "it is text"  # a multi-byte character cut at the end of the sample
    return "its bytes are not in the format torch.save writes"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _state_dict_problem(v: Any) -> str | None:
    if not isinstance(v, Mapping):
        return f"is {type(v).__name__}, not a state dict"
    bad = next((k for k, t in v.items() if not isinstance(k, str) or not isinstance(t, torch.Tensor)), None)
    return None if bad is None else f"entry {bad!r} is not a tensor"


def _optim_problem(v: Any) -> str | None:
    if not isinstance(v, Mapping) or not isinstance(v.get("state"), Mapping) \
            or not isinstance(v.get("param_groups"), list):
        return "is not an optimiser state dict (state, param_groups)"
    return None


def _rng_problem(v: Any) -> str | None:
    if not isinstance(v, Mapping) or not isinstance(v.get("torch"), torch.Tensor) \
            or not isinstance(v.get("numpy"), Mapping) or not isinstance(v.get("python"), Mapping):
        return "is not a set of RNG states (torch, numpy, python)"
    return None


def _data_problem(v: Any) -> str | None:
    if not isinstance(v, Mapping) or not isinstance(v.get("generator"), torch.Tensor) \
            or not all(_is_int(v.get(k)) and v.get(k) >= 0 for k in ("epoch", "pos", "n")):
        return "is not a data-order state (generator, epoch, pos, n)"
    return None


_CHECKS = {
    "recipe": lambda v: None if isinstance(v, Mapping) else f"is {type(v).__name__}, not a recipe mapping",
    "generator": _state_dict_problem,
    "discriminator": _state_dict_problem,
    "ema": lambda v: None if v is None else _state_dict_problem(v),
    "g_optim": _optim_problem,
    "d_optim": _optim_problem,
    "rng": _rng_problem,
    "data": _data_problem,
    "wall_time": lambda v: None if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    else f"{v!r} is not a number of seconds",
    "rollbacks": lambda v: None if _is_int(v) and v >= 0 else f"{v!r} is not a count",
    "regularizer": _state_dict_problem,
    "collapse": lambda v: None if isinstance(v, Mapping) else "is not a mapping",
}


def check_payload(ckpt: Mapping[str, Any], path: str | Path, need: Iterable[str] = ()) -> None:
    """Raise a one-line :class:`CheckpointError` (``FILE: key: problem``) unless ``ckpt`` has a step
    (an int >= 0), every key in ``need``, and every key it has of the right kind."""
    step = ckpt.get("step")
    if not _is_int(step) or step < 0:
        raise CheckpointError(f"{path}: step: {step!r} is not a step count (an integer >= 0)")
    for key in need:
        if key not in ckpt or (key != "ema" and ckpt[key] is None):
            raise CheckpointError(f"{path}: {key}: missing (a checkpoint for this needs {', '.join(need)})")
    for key, check in _CHECKS.items():
        if key in ckpt:
            problem = check(ckpt[key])
            if problem:
                raise CheckpointError(f"{path}: {key}: {problem}")


def check_state_shapes(state: Mapping[str, torch.Tensor], model: Any, path: str | Path,
                       key: str, what: str) -> None:
    """Raise a one-line :class:`CheckpointError` unless ``state`` has exactly ``model``'s entries and
    shapes (instead of ``load_state_dict``'s multi-line ``size mismatch`` traceback); ``model`` is
    anything with a ``state_dict()`` (a network, a stateful regularizer)."""
    want = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in state.items()}
    missing = [k for k in want if k not in got]
    extra = [k for k in got if k not in want]
    wrong = [k for k in want if k in got and want[k] != got[k]]
    if wrong:
        k = wrong[0]
        problem = f"{k} has shape {list(got[k])}, {what} needs {list(want[k])}"
    elif missing:
        problem = f"{missing[0]!r} is missing"
    elif extra:
        problem = f"{extra[0]!r} is not in {what}"
    else:
        return
    count = len(wrong) + len(missing) + len(extra)
    raise CheckpointError(f"{path}: {key}: does not fit {what} ({problem}; {count} entries differ)")


def _networks_on_meta(recipe: Any) -> dict[str, torch.nn.Module]:
    """G and D of ``recipe`` without memory or RNG draws (meta tensors), for shape checks."""
    from .build import build_discriminator, build_generator

    try:
        with torch.device("meta"):
            G, D = build_generator(recipe), build_discriminator(recipe)
    except Exception:  # a block that cannot be built on the meta device: build it for real
        G, D = build_generator(recipe), build_discriminator(recipe)
    return {"generator": G, "discriminator": D, "ema": G}


def check_resumable(ckpt: Mapping[str, Any], path: str | Path, run_dir: str | Path) -> None:
    """Raise a one-line :class:`CheckpointError` unless ``ckpt`` was written by the run in
    ``run_dir``: its stored recipe equals the run's ``recipe.yaml`` except in the fields a resume may
    change, and its networks have the shapes of that recipe's G and D."""
    from ..errors import RecipeError
    from ..recipe import load_recipe, validate
    from .rundir import RECIPE_FILE, recipe_difference

    recipe_path = Path(run_dir) / RECIPE_FILE
    recipe = load_recipe(recipe_path)
    try:
        stored = validate(dict(ckpt["recipe"]), f"{path} (its stored recipe)")
    except RecipeError:
        stored = None  # e.g. written by an older ganzoo; the shapes below still decide
    if stored is not None:
        diff = recipe_difference(recipe, stored)
        if diff:
            loc, old, new = diff
            raise CheckpointError(
                f"{path}: written by another recipe ({'.'.join(loc)} is {new!r} there, {old!r} in {recipe_path}); "
                "refusing to resume from it"
            )
    for key, net in _networks_on_meta(recipe).items():
        if ckpt.get(key) is not None:
            check_state_shapes(ckpt[key], net, path, key, f"the {key} of {recipe_path}")
    check_regularizer_state(ckpt, path, recipe)


# ----------------------------------------------------------------------------- regularizer state
REGULARIZER_KEY = "regularizer"


def regularizer_state(reg: Any) -> dict[str, Any]:
    """``{"regularizer": state_dict}`` for a ``stateful`` regularizer (``ganzoo/contracts.py``), else
    ``{}``: the entry a checkpoint payload gets."""
    from ..contracts import flag

    if reg is None or not flag("regularizer", reg, "stateful"):
        return {}
    return {REGULARIZER_KEY: reg.state_dict()}


def check_regularizer_state(ckpt: Mapping[str, Any], path: str | Path, recipe: Any) -> None:
    """Raise a one-line :class:`CheckpointError` unless ``ckpt`` holds the state the recipe's regularizer
    keeps (none, or a ``state_dict`` of its entries and shapes)."""
    from ..registry import REGULARIZER

    reg = REGULARIZER.build(recipe.regularizer)
    want = regularizer_state(reg)
    if not want:
        return
    what = f"regularizer {recipe.regularizer.type}"
    if ckpt.get(REGULARIZER_KEY) is None:
        raise CheckpointError(f"{path}: {REGULARIZER_KEY}: missing ({what} keeps state that the checkpoint must hold)")
    check_state_shapes(ckpt[REGULARIZER_KEY], reg, path, REGULARIZER_KEY, what)


def load_regularizer_state(reg: Any, ckpt: Mapping[str, Any]) -> None:
    """Restore a ``stateful`` regularizer from a checkpoint (checked by :func:`check_resumable`);
    values are copied into its tensors in place (a captured CUDA graph keeps reading them)."""
    if regularizer_state(reg) and ckpt.get(REGULARIZER_KEY) is not None:
        reg.load_state_dict(ckpt[REGULARIZER_KEY])


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


DAMAGED_SUFFIX = ".damaged"


def latest_checkpoint(run_dir: str | Path) -> tuple[Path, dict[str, Any]] | None:
    """The newest checkpoint of a run folder that loads and passes its checks, with its content, for
    a resume; None if the folder has no checkpoint.

    Checkpoints are written atomically, so a bad one only comes from outside damage (truncation, a
    flipped bit, a hand-made file). A damaged newest one is set aside as ``step-N.pt.damaged`` (kept
    for inspection, no longer listed or pruned) with a warning, and the one before is used. When
    checkpoints exist but none is usable this raises :class:`CheckpointError` naming them, and
    nothing is changed: a resume never silently starts again from step 0. A checkpoint written by
    another recipe (:func:`check_resumable`) is refused outright.
    """
    run_dir = Path(run_dir)
    damaged: list[tuple[Path, str]] = []
    for _, path in reversed(list_checkpoints(run_dir)):
        try:
            ckpt = load_checkpoint(path, need=RESUME_KEYS)
        except CheckpointError as exc:
            damaged.append((path, str(exc).removeprefix(f"{path}: ")))
            continue
        check_resumable(ckpt, path, run_dir)
        if damaged:
            for bad, _ in damaged:
                try:
                    bad.rename(bad.with_name(bad.name + DAMAGED_SUFFIX))
                except OSError:
                    pass  # another process set it aside, or a read-only folder: it stays listed
            warnings.warn(
                f"{run_dir}: resuming from {path.name} (step {ckpt['step']}); set aside the damaged newer "
                f"checkpoint(s) as *{DAMAGED_SUFFIX}: {_describe(damaged)}",
                stacklevel=2,
            )
        return path, ckpt
    if damaged:
        raise CheckpointError(
            f"{run_dir}: cannot resume: no checkpoint in {CKPT_DIR}/ is usable ({_describe(damaged)}); nothing "
            f"was changed (move them out of {CKPT_DIR}/ to train again from step 0)"
        )
    return None


def _describe(damaged: list[tuple[Path, str]]) -> str:
    return "; ".join(f"{p.name}: {why}" for p, why in damaged)


def prune_checkpoints(run_dir: str | Path, keep_last: int, keep: set[int] = frozenset()) -> list[Path]:
    """Delete step checkpoints (with their standing buffers) except the newest ``keep_last`` and the steps in ``keep``."""
    ckpts = list_checkpoints(run_dir)
    keep_steps = {s for s, _ in ckpts[-keep_last:]} | set(keep)
    removed = []
    for step, path in ckpts:
        if step not in keep_steps:
            path.unlink(missing_ok=True)
            standing_path(path).unlink(missing_ok=True)  # its evaluation's standing buffers, if any
            removed.append(path)
    remove_stale_temps(Path(run_dir) / CKPT_DIR)
    return removed


# ----------------------------------------------------------------------------- best / last
BEST_FILE = "best.json"


def read_best(run_dir: str | Path, strict: bool = True) -> dict[str, Any] | None:
    """The run folder's ``checkpoints/best.json`` as ``{"step", "fid", "file"}``, or None if absent.

    Its ``file`` must be a plain checkpoint name (``step-NNNNNNNN.pt``, of its ``step``) inside
    ``checkpoints/``: a path elsewhere (``../../x.pt``, ``/abs.pt``) is never followed. A file that is
    not JSON, lacks a field or names something else raises a one-line :class:`CheckpointError`
    (``strict``) or is ignored with a warning (``strict=False``, for the training loop).
    """
    path = Path(run_dir) / CKPT_DIR / BEST_FILE
    if not path.exists():
        return None
    try:
        return _parse_best(path)
    except CheckpointError as exc:
        if strict:
            raise
        warnings.warn(f"ignoring {exc}", stacklevel=2)
        return None


def _parse_best(path: Path) -> dict[str, Any]:
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: not readable JSON ({_first_line(exc)})") from None
    if not isinstance(info, dict):
        raise CheckpointError(f"{path}: not a JSON object")
    name, step, fid = info.get("file"), info.get("step"), info.get("fid")
    if not isinstance(name, str):
        raise CheckpointError(f"{path}: file: missing (the name of a checkpoint in {CKPT_DIR}/)")
    m = CKPT_RE.match(name)
    if not m:
        raise CheckpointError(
            f"{path}: file: {name!r} is not a checkpoint name in {CKPT_DIR}/ (step-NNNNNNNN.pt); not followed"
        )
    if not _is_int(step) or step != int(m.group(1)):
        raise CheckpointError(f"{path}: step: {step!r} is not the step of {name}")
    if not isinstance(fid, (int, float)) or isinstance(fid, bool) or not math.isfinite(fid):
        raise CheckpointError(f"{path}: fid: {fid!r} is not a finite number")
    return {"step": step, "fid": float(fid), "file": name}


CHOICES = ("best", "last")


@dataclass
class Choice:
    """The checkpoint a command uses: ``path``, why (``"best by FID 32.60"``, ``"last"``, ``"file"``)
    and a ``warning`` to show (a broken ``best.json`` passed over), if any."""

    path: Path
    why: str
    warning: str | None = None


def select_checkpoint(target: str | Path, which: str | None = None) -> Choice:
    """The checkpoint to use for ``target``, a checkpoint file (used as is) or a run folder.

    In a run folder ``which`` is ``"best"`` (the one ``checkpoints/best.json`` names), ``"last"``
    (the newest ``step-N.pt``) or None: best where the run has recorded one, else last (a broken
    ``best.json`` is then passed over with a warning). One-line :class:`CheckpointError` otherwise.
    """
    if which is not None and which not in CHOICES:
        raise CheckpointError(f"--checkpoint: {which!r} is not one of {', '.join(CHOICES)}")
    target = Path(target)
    if target.is_file():
        if which is not None:
            raise CheckpointError(
                f"--checkpoint {which}: chooses within a run folder, and {target} is a checkpoint file; drop one"
            )
        return Choice(target, "file")
    if not target.is_dir():
        raise CheckpointError(f"{target}: no such run folder or checkpoint")
    folder, warning = target / CKPT_DIR, None
    if which != "last":
        try:
            best = read_best(target)
            if best is not None and not (folder / best["file"]).is_file():
                raise CheckpointError(f"{folder / BEST_FILE}: file: names {best['file']}, which does not exist")
        except CheckpointError as exc:
            if which == "best":
                raise
            best, warning = None, f"{exc}; using the last checkpoint"
        if best is not None:
            return Choice(folder / best["file"], f"best by FID {best['fid']:.2f}")
        if which == "best" and warning is None:
            raise CheckpointError(
                f"{target}: no best checkpoint recorded ({CKPT_DIR}/{BEST_FILE} is written by an evaluation "
                "with fid); use --checkpoint last"
            )
    ckpts = list_checkpoints(target)
    if not ckpts:
        raise CheckpointError(f"{target}: no checkpoints in {folder}")
    return Choice(ckpts[-1][1], "last", warning)


def resolve_checkpoint(target: str | Path, best: bool = False) -> Path:
    """A checkpoint file from a path that is a checkpoint or a run folder (last, or best by FID)."""
    target = Path(target)
    return target if target.is_file() else select_checkpoint(target, "best" if best else "last").path
