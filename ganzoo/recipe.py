"""Declarative YAML recipes, validated by pydantic v2.

A recipe picks blocks by ``type`` from the registries (plugins included) and sets the training,
evaluation and sampling options. ``base: other.yaml`` inherits another recipe (deep merge of
mappings; lists and scalars are replaced), so an ablation is a few lines. ``--set a.b=value``
overrides any field from the command line (the value is parsed as YAML).

Every problem is reported as ``FILE: dotted.field.path: message`` (:class:`ganzoo.errors.RecipeError`).
"""
from __future__ import annotations

import copy
import errno
import os
import stat
from pathlib import Path
from typing import Any, Literal, Sequence

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from .blockref import REF_KEY, SCHEMA_DEFS, Block
from .config import BlockConfig, Section, name_problem, number_problem
from .errors import RecipeError, flatten
from .limits import STANDING_STATS_MAX
from .registry import block_flag, regularizer_active
from .training.collapse import CollapseConfig

MAX_BASE_DEPTH = 16


# ----------------------------------------------------------------------------- sections
class OptimConfig(Section):
    """Adam optimiser of one network."""

    lr: float = Field(gt=0, le=1, description="learning rate")
    betas: tuple[float, float] = Field((0.0, 0.999), description="Adam betas (official SAGAN: 0, 0.999)")
    eps: float = Field(1e-8, gt=0, le=1, description="Adam epsilon")
    weight_decay: float = Field(0.0, ge=0, description="L2 weight decay")

    @field_validator("betas")
    @classmethod
    def _betas(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not all(0.0 <= b < 1.0 for b in v):
            raise ValueError("each beta must be in [0, 1)")
        return v


class EmaConfig(Section):
    """Exponential moving average of G's weights, used for samples and metrics."""

    enabled: bool = Field(True, description="keep an EMA copy of G")
    decay: float = Field(0.9999, ge=0, lt=1, description="EMA decay per G step")
    start: int = Field(0, ge=0, description="G step at which averaging starts (copy before)")
    rampup: bool = Field(
        True, description="decay after t averaged steps is min(decay, (1 + t) / (10 + t)), so the average "
        "follows G closely early on (false: decay from the first step, which keeps the random initial "
        "weights in the average for tens of thousands of steps)"
    )
    foreach: bool = Field(
        True, description="update all of G's tensors in one fused _foreach_lerp_ (false: one lerp_ per "
        "tensor in a Python loop; the same result, more kernel launches)"
    )


class TrainConfig(Section):
    """Optimisation schedule, logging, checkpoints and speed options."""

    steps: int = Field(ge=1, description="number of G steps (iterations) to train")
    batch_size: int = Field(64, ge=1, le=65536, description="global batch size per D/G step")
    d_steps: int = Field(1, ge=1, le=100, description="D steps per G step")
    hflip: bool = Field(
        False, description="random horizontal flips of the real images: each image of the data order is "
        "mirrored with probability 1/2, drawn with the epoch's permutation (so a resumed run sees the same "
        "flips); what BigGAN-PyTorch and StudioGAN do on CIFAR-10"
    )
    accumulate: int = Field(1, ge=1, le=64, description="micro-batches accumulated per D and G step")
    g_optim: OptimConfig = Field(default_factory=lambda: OptimConfig(lr=1e-4), description="G optimiser (TTUR: 1e-4)")
    d_optim: OptimConfig = Field(default_factory=lambda: OptimConfig(lr=4e-4), description="D optimiser (TTUR: 4e-4)")
    ema: EmaConfig = Field(default_factory=EmaConfig, description="EMA of G")
    precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto", description="auto: bf16 autocast on CUDA, fp32 on CPU"
    )
    log_every: int = Field(50, ge=1, description="steps between metric log lines")
    sample_every: int = Field(1000, ge=0, description="steps between sample grids (0: only at the end)")
    checkpoint_every: int = Field(1000, ge=1, description="steps between checkpoints")
    keep_last: int = Field(3, ge=1, description="checkpoints kept besides the best by FID")
    time_limit_minutes: float | None = Field(
        None, gt=0, description="stop (with a checkpoint) after this much wall time"
    )
    channels_last: bool = Field(
        False, description="channels_last memory format for G, D and batches (faster convs on recent GPUs)"
    )
    sync_batchnorm: bool = Field(
        False, description="with several processes (torchrun), G's batch norms (conditional BN included) "
        "use statistics of the global batch instead of each process's slice; no effect in one process"
    )
    fused_optim: bool = Field(
        True, description="fused Adam kernel on CUDA (one launch for all of a network's parameters; "
        "ignored on the CPU)"
    )
    tf32: bool = Field(
        True, description="TF32 matrix units for fp32 matmuls and convs on CUDA (the fp32 parts under bf16 "
        "autocast, or everything with precision fp32); false: full fp32 arithmetic"
    )
    deterministic: bool = Field(
        False, description="CUDA: deterministic kernels (cuDNN without autotuning, "
        "torch.use_deterministic_algorithms, warn-only), so two runs of a recipe give the same numbers; "
        "slower: for comparisons (e.g. benchmarks/ddp_check.sh), not for training"
    )
    d_concat: bool = Field(
        False, description="D update: one forward of D over cat(real, fake) (and the labels twice) instead "
        "of one forward each, as BigGAN-PyTorch's G_D does: half the launches and larger kernels. The same "
        "losses and gradients, except that spectral norm's power iteration runs once per D micro-batch "
        "instead of twice, and a D with batch statistics would normalise real and fake together"
    )
    compile: bool = Field(
        False, description="torch.compile G's forward, and D's when train.d_concat is on and the regularizer "
        "does not run D itself (none, lecam) (default mode; the first steps compile for a minute or more). "
        "Otherwise D stays eager (two forwards of D before one backward update spectral-norm vectors in place, "
        "which compiled D gets wrong; R1 and the gradient penalty differentiate through D twice, bCR runs it "
        "again). The EMA copy stays eager. Combines with train.cuda_graph: the compiled kernels are captured "
        "in the graph"
    )
    cuda_graph: bool = Field(
        False, description="CUDA: capture the iteration (D and G updates, optimiser steps; not the EMA) "
        "once as a CUDA graph and replay it, removing the per-kernel launch overhead of small models; the "
        "same maths (inputs and noise drawn as without it, copied into static buffers). Static shapes; "
        "the first 2 iterations run eagerly (warm-up), and the graph is recaptured after any reload of "
        "weights or optimiser state or change of learning rate. Not with a regularizer whose penalty cannot "
        "be captured (r1, gradient_penalty: a double backward; lecam and bcr can), nor several processes "
        "(torchrun). Ignored on the CPU"
    )
    collapse: CollapseConfig = Field(
        default_factory=CollapseConfig, description="a guard against collapse: FID rising over several "
        "evaluations, or D's logit gap running away, is logged (collapse/signal in metrics.jsonl) and warned "
        "about; with early_stop the run stops on the FID rule (ganzoo/training/collapse.py)"
    )
    on_divergence: Literal["stop", "rollback"] = Field(
        "stop",
        description="when a loss, logit mean, penalty or weight becomes NaN/inf: stop (exit 3, the last "
        "checkpoint is the last good one) or rollback (continue from the last good checkpoint with the "
        "learning rates multiplied by rollback_lr_factor)",
    )
    rollback_lr_factor: float = Field(
        0.5, gt=0, le=1, description="learning-rate factor applied to G and D at each rollback"
    )
    max_rollbacks: int = Field(
        3, ge=0, le=100, description="rollbacks allowed in the whole run; the next divergence stops it"
    )


class EvalConfig(Section):
    """Sample-quality evaluation of EMA-G against a reference split."""

    every: int = Field(0, ge=0, description="steps between evaluations (0: only at the end)")
    metrics: list[Block("metric")] = Field(default_factory=list, description="metrics, e.g. [fid, kid]")
    num_samples: int = Field(10000, ge=2, description="generated samples per evaluation")
    batch_size: int = Field(200, ge=1, description="batch size for generation and feature extraction")
    standing_stats: int = Field(
        0, ge=0, le=STANDING_STATS_MAX,
        description="batches (of batch_size) over which EMA-G's batch-norm statistics are recomputed before each "
        "evaluation, as their exact average (BigGAN's standing statistics); 0: evaluate with the running "
        "statistics copied from G"
    )
    reference: Block("dataset") | None = Field(
        None, description="reference images (default: the training dataset's test split)"
    )
    inception_weights: str | None = Field(
        None, description="local FID Inception weights (.pth); env GANZOO_INCEPTION_WEIGHTS overrides unset"
    )
    missing_weights: Literal["error", "skip"] = Field(
        "error",
        description="when no Inception weights are set: error (before training starts) or skip the "
        "metrics with a warning (the quickstart does, so it runs anywhere)",
    )


# ----------------------------------------------------------------------------- recipe
class Recipe(Section):
    """A whole experiment: data, networks, loss, training and evaluation."""

    name: str = Field(min_length=1, max_length=200, description="run name (used for run folders)")
    description: str = Field("", description="free text")
    seed: int = Field(0, ge=0, le=2**32 - 1, description="seed for every random number generator")
    resolution: int = Field(ge=4, le=1024, description="image side in pixels")
    channels: int = Field(3, ge=1, le=4, description="image channels")
    num_classes: int = Field(
        0, ge=0, le=100000, description="classes for conditional G and projection D (0: unconditional)"
    )
    data: Block("dataset") = Field(description="training images")
    generator: Block("generator") = Field(description="generator backbone")
    discriminator: Block("discriminator") = Field(description="discriminator backbone")
    loss: Block("loss") = Field("hinge", description="adversarial loss")
    regularizer: Block("regularizer") = Field("none", description="D regularizer")
    augment: list[Block("augment")] = Field(
        default_factory=list, description="differentiable augmentations applied, in this order, to every "
        "image D sees (real and fake, in D's and G's updates): DiffAugment's policy is [color, translation, "
        "cutout]; empty: none"
    )
    train: TrainConfig = Field(description="training schedule")
    eval: EvalConfig = Field(default_factory=EvalConfig, description="evaluation")

    @model_validator(mode="after")
    def _cross_checks(self) -> "Recipe":
        problems: list[tuple[tuple[str, ...], str]] = []
        for name in ("data", "generator", "discriminator", "loss", "regularizer"):
            block: BlockConfig = getattr(self, name)
            problems += [((name, *loc), msg) for loc, msg in block.recipe_problems(self)]
        for i, aug in enumerate(self.augment):
            problems += [(("augment", str(i), *loc), m) for loc, m in aug.recipe_problems(self)]
        for i, metric in enumerate(self.eval.metrics):
            problems += [(("eval", "metrics", str(i), *loc), m) for loc, m in metric.recipe_problems(self)]
        if self.eval.reference is not None:
            problems += [(("eval", "reference", *loc), m) for loc, m in self.eval.reference.recipe_problems(self)]
        if self.train.batch_size % self.train.accumulate:
            problems.append((("train", "accumulate"), "must divide train.batch_size"))
        if self.train.cuda_graph and regularizer_active(self.regularizer) \
                and not block_flag("regularizer", self.regularizer, "graph_safe"):
            problems.append((("train", "cuda_graph"), f"cannot be combined with regularizer {self.regularizer.type} "
                             "(not graph_safe: its penalty's double backward or host reads are not captured): "
                             "set train.cuda_graph: false or use a graph_safe regularizer"))
        if problems:
            raise _many(problems)
        return self


def _many(problems: list[tuple[tuple[str, ...], str]]):
    from pydantic_core import PydanticCustomError

    loc, msg = problems[0]
    return PydanticCustomError("ganzoo_field", "{msg}", {"msg": msg, "loc": loc, "all": problems})


# ----------------------------------------------------------------------------- loading
MAX_RECIPE_BYTES = 1 << 20  # 1 MiB: the largest recipe is a few KiB; this bounds memory and parse time
MAX_VALUES = 100_000  # values in a recipe after expanding YAML aliases ("billion laughs" stay small)
RECIPE_SUFFIXES = (".yaml", ".yml")

# libyaml's parser where available: a 10 MB document took 169 s in the pure-Python one
_YamlBase = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class HugeInt(str):
    """An integer literal Python refuses to convert (more digits than sys.get_int_max_str_digits()).
    Kept as its text so that :func:`validate` reports it as ``FIELD: integer too large``."""


class _Loader(_YamlBase):  # type: ignore[misc,valid-type]
    """``yaml.safe_load``'s constructors (no Python tags), C parser, huge integers kept as text."""


def _construct_int(loader: Any, node: Any) -> Any:
    try:
        return yaml.SafeLoader.construct_yaml_int(loader, node)
    except ValueError:  # int-str conversion limit (sys.set_int_max_str_digits)
        return HugeInt(loader.construct_scalar(node))


_Loader.add_constructor("tag:yaml.org,2002:int", _construct_int)


def _yaml_load(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)  # noqa: S506  (_Loader is a SafeLoader: no Python objects)


def _show(text: str, limit: int = 120) -> str:
    """A user-supplied string for a message: at most ``limit`` characters (escaping happens at output)."""
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} characters)"


def _os_problem(exc: OSError | ValueError) -> str:
    if isinstance(exc, ValueError):  # e.g. an embedded NUL byte
        return "not a valid path"
    if exc.errno == errno.ENAMETOOLONG:
        return "path too long for the file system"
    if isinstance(exc, (FileNotFoundError, NotADirectoryError)):
        return "file not found"
    if isinstance(exc, PermissionError):
        return "permission denied"
    return f"cannot read: {exc.strerror or exc}"


def _path_problem(path: Path) -> str | None:
    """Why ``path`` cannot be a recipe file, or None. Checks the name and ``stat`` only (never opens
    it), so a FIFO, a device or another program's file is refused before anything is read."""
    try:
        st = os.stat(path)
        real = os.path.realpath(path)
    except (OSError, ValueError) as exc:
        return _os_problem(exc)
    if stat.S_ISDIR(st.st_mode):
        return "is a directory, not a recipe file"
    if path.suffix.lower() not in RECIPE_SUFFIXES:
        return "not a recipe file: its name must end in .yaml or .yml"
    if not stat.S_ISREG(st.st_mode):
        return "not a regular file (a device, FIFO or socket); a recipe must be a regular .yaml file"
    if Path(real).suffix.lower() not in RECIPE_SUFFIXES:
        return "not a recipe file: it links to a file whose name does not end in .yaml or .yml"
    if st.st_size > MAX_RECIPE_BYTES:
        return f"too large: {st.st_size} bytes (a recipe is at most {MAX_RECIPE_BYTES} bytes)"
    return None


def _read_bytes(path: Path) -> bytes:
    """Read at most MAX_RECIPE_BYTES of a regular file, never blocking on a FIFO swapped in."""
    src = str(path)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except (OSError, ValueError) as exc:
        raise RecipeError(src, _os_problem(exc)) from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise RecipeError(src, "not a regular file (a device, FIFO or socket); a recipe must be a regular .yaml file")
        chunks, size = [], 0
        while size <= MAX_RECIPE_BYTES:
            chunk = os.read(fd, MAX_RECIPE_BYTES + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as exc:
        raise RecipeError(src, _os_problem(exc)) from None
    finally:
        os.close(fd)
    if size > MAX_RECIPE_BYTES:
        raise RecipeError(src, f"too large: more than {MAX_RECIPE_BYTES} bytes (a recipe is at most {MAX_RECIPE_BYTES} bytes)")
    return b"".join(chunks)


def _read_yaml(path: Path) -> dict[str, Any]:
    src = str(path)
    problem = _path_problem(path)
    if problem:
        raise RecipeError(src, problem)
    raw = _read_bytes(path)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RecipeError(src, f"not UTF-8 text (byte {exc.start})") from None
    try:
        data = _yaml_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        what = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise RecipeError(src, f"invalid YAML: {where}{what}") from None
    except RecursionError:
        raise RecipeError(src, "invalid YAML: nesting too deep") from None
    if data is None:
        raise RecipeError(src, "empty recipe")
    if not isinstance(data, dict):
        raise RecipeError(src, f"a recipe must be a mapping of fields, got {type(data).__name__}")
    known = set(Recipe.model_fields) | {"base"}
    if data and not any(isinstance(k, str) and k in known for k in data):
        # say nothing of its content: it may be another program's file named .yaml
        raise RecipeError(src, f"not a ganzoo recipe: none of its {len(data)} top-level keys is a recipe field "
                               "(name, resolution, data, generator, discriminator, train, ... or base)")
    return data


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """Mappings merge key by key; anything else in ``over`` replaces ``base``."""
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _resolved(path: Path) -> Path:
    try:
        return path.resolve()
    except (OSError, ValueError, RuntimeError):
        return Path(os.path.abspath(path))


def load_raw(path: str | os.PathLike[str], _chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Read a recipe file and its ``base:`` chain into one merged mapping (not yet validated)."""
    path = Path(path)
    resolved = _resolved(path)
    if resolved in _chain:
        cycle = " -> ".join(p.name for p in (*_chain, resolved))
        raise RecipeError(str(path), f"cyclic base: {cycle}", ("base",))
    if len(_chain) >= MAX_BASE_DEPTH:
        raise RecipeError(str(path), f"base chain deeper than {MAX_BASE_DEPTH}", ("base",))
    data = _read_yaml(path)
    base = data.pop("base", None)
    if base is None:
        return data
    if not isinstance(base, str) or not base:
        raise RecipeError(str(path), "must be a path to another recipe (relative to this file)", ("base",))
    base_path = path.parent / base
    problem = _path_problem(base_path)
    if problem == "file not found":
        raise RecipeError(str(path), f"base recipe '{_show(base)}' not found (looked for {_show(str(base_path))})",
                          ("base",))
    if problem:
        raise RecipeError(str(path), f"base recipe '{_show(base)}': {problem}", ("base",))
    merged_base = load_raw(base_path, (*_chain, resolved))
    try:
        return deep_merge(merged_base, data)
    except RecursionError:
        raise RecipeError(str(path), "nesting too deep") from None


def apply_overrides(data: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Apply ``a.b.c=value`` overrides (value parsed as YAML) to a raw recipe mapping."""
    data = copy.deepcopy(data)
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise RecipeError("--set", f"'{_show(item)}' is not of the form path.to.field=value")
        if len(text) > MAX_RECIPE_BYTES:
            raise RecipeError("--set", f"value too large: {len(text)} characters", key.strip().split("."))
        try:
            value = _yaml_load(text) if text.strip() else ""
        except yaml.YAMLError:
            value = text
        except RecursionError:
            raise RecipeError("--set", "value nested too deep", key.strip().split(".")) from None
        parts = key.strip().split(".")
        node: Any = data
        for i, part in enumerate(parts[:-1]):
            child = node.get(part) if isinstance(node, dict) else None
            if isinstance(child, str) and i < len(parts) - 1:  # block shorthand -> mapping
                child = {"type": child}
            if child is None:
                child = {}
            if not isinstance(child, dict):
                raise RecipeError("--set", f"cannot set inside a {type(child).__name__}", parts[: i + 1])
            node[part] = child
            node = child
        node[parts[-1]] = value
    return data


def _check_values(data: Any, source: str) -> None:
    """Numbers every field must satisfy, before the models see them: integers Python can convert and
    that fit in 64 bits, finite floats of a sane size (:func:`ganzoo.config.number_problem`); and at
    most MAX_VALUES values after YAML aliases are expanded."""
    count = 0
    stack: list[tuple[tuple[str, ...], Any]] = [((), data)]
    while stack:
        loc, node = stack.pop()
        count += 1
        if count > MAX_VALUES:
            raise RecipeError(source, f"too many values (more than {MAX_VALUES} after expanding YAML aliases)")
        if isinstance(node, HugeInt):
            raise RecipeError(source, f"integer too large ({len(node)} characters)", loc)
        if isinstance(node, dict):
            stack.extend(((*loc, str(k)), v) for k, v in reversed(list(node.items())))
        elif isinstance(node, (list, tuple)):
            stack.extend(((*loc, str(i)), v) for i, v in reversed(list(enumerate(node))))
        else:
            problem = number_problem(node)
            if problem:
                raise RecipeError(source, problem, loc)


def validate(data: dict[str, Any], source: str = "<recipe>") -> Recipe:
    _check_values(data, source)
    name = data.get("name") if isinstance(data, dict) else None
    if isinstance(name, str):
        problem = name_problem(name)
        if problem:
            raise RecipeError(source, problem, ("name",))
    try:
        return Recipe.model_validate(data)
    except ValidationError as exc:
        raise RecipeError(source, flatten(exc.errors())) from None
    except RecursionError:
        raise RecipeError(source, "nesting too deep") from None


def load_recipe(path: str | os.PathLike[str], overrides: Sequence[str] = ()) -> Recipe:
    """Load, merge bases, apply overrides and validate: the one entry point for recipe files."""
    data = load_raw(path)
    if overrides:
        try:
            data = apply_overrides(data, overrides)
        except RecursionError:
            raise RecipeError(str(path), "nesting too deep") from None
    return validate(data, str(path))


def dump_recipe(recipe: Recipe) -> str:
    """The fully resolved recipe as YAML (every default filled in); loads back to an equal Recipe."""
    return yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False, default_flow_style=None)


def recipe_json_schema() -> dict[str, Any]:
    """JSON schema of recipes with every registered block (plugins included)."""
    SCHEMA_DEFS.clear()
    schema = Recipe.model_json_schema(ref_template="#/$defs/{model}")
    schema.setdefault("$defs", {}).update(SCHEMA_DEFS)
    SCHEMA_DEFS.clear()
    return _fix_refs(schema)


def _fix_refs(node: Any) -> Any:
    if isinstance(node, dict):
        return {("$ref" if k == REF_KEY else k): _fix_refs(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_fix_refs(v) for v in node]
    return node
