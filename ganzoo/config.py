"""Base class for every block's config.

Each block's config sits in the same file as its ``nn.Module`` and is registered with it. It is a
pydantic v2 model with a ``type: Literal["name"]`` tag (the discriminator in recipes), forbids unknown
fields, and documents and bounds every field with ``Field(..., description=..., ge=...)``.
"""
from __future__ import annotations

import math
import typing
from typing import Any

import annotated_types
from pydantic import BaseModel, ConfigDict, model_validator

from .errors import RecipeError, control_char_problem, field_error
from .limits import INT_MAX

FLOAT_MAX = 1e12  # |x| of every float field, unless the field declares its own upper bound
NAME_MAX_BYTES = 240  # a run folder name: below NAME_MAX (255) with room for ablate's "-s<seed>"


def number_problem(value: Any, bounded: bool = True) -> str | None:
    """Why a number cannot be a field's value in any recipe, or None. ``bounded=False``: the field
    declares its own upper bound, so only finiteness (floats) and the 64-bit range (ints) apply."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return "integer too large" if abs(value) > INT_MAX else None
    if isinstance(value, float):
        if not math.isfinite(value):
            return "must be a finite number"
        if bounded and abs(value) > FLOAT_MAX:
            return f"number too large (at most {FLOAT_MAX:g} in size)"
    return None


def _has_upper_bound(field: Any) -> bool:
    return any(isinstance(m, (annotated_types.Le, annotated_types.Lt)) for m in field.metadata)


class _Checked(BaseModel):
    """Generic bounds on every numeric field of every config (ints in int64, floats finite and at most
    FLOAT_MAX in size), so a value that validates is one a run can use."""

    @model_validator(mode="after")
    def _generic_number_bounds(self):
        for name, field in type(self).model_fields.items():
            value = getattr(self, name, None)
            items = enumerate(value) if isinstance(value, (list, tuple)) else [(None, value)]
            bounded = not _has_upper_bound(field)
            for i, item in items:
                problem = number_problem(item, bounded)
                if problem:
                    raise field_error((name,) if i is None else (name, str(i)), problem)
        return self


def name_problem(name: str) -> str | None:
    """Why ``name`` cannot be any recipe's ``name`` (every loader refuses it), or None: control
    characters, or more bytes than a folder name can hold."""
    problem = control_char_problem(name)
    if problem:
        return problem
    size = len(name.encode("utf-8", "surrogatepass"))
    if size > NAME_MAX_BYTES:
        return f"too long for a run folder name ({size} bytes in UTF-8; at most {NAME_MAX_BYTES})"
    return None


def run_name_problem(name: str) -> str | None:
    """Why ``name`` cannot name a run folder, or None (the rules ``ganzoo run``, ``ablate`` and
    ``validate`` share)."""
    problem = name_problem(name)
    if problem:
        return problem
    if not name or name in (".", "..") or any(c in name for c in "/\\\0") or name != name.strip():
        return ("cannot be a run folder name (no '/', '\\', leading or trailing spaces; not '.' or '..'); "
                "pass --name")
    return None


def check_run_name(name: str, source: str, field: str = "name") -> str:
    """Raise :class:`RecipeError` (``SOURCE: FIELD: ...``) unless ``name`` can name a run folder."""
    problem = run_name_problem(name)
    if problem:
        raise RecipeError(source, f"{name[:80]!r} {problem}", (field,) if field else ())
    return name


class BlockConfig(_Checked):
    """Config of one registered block. Subclasses set ``type: Literal["<name>"] = "<name>"``."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)

    type: str

    def recipe_problems(self, recipe: Any) -> list[tuple[tuple[str, ...], str]]:
        """Cross-field checks against the whole recipe: ``[(field path within this block, message)]``.

        Override in blocks whose validity depends on other sections (a backbone checks that every
        attention resolution is one of its feature resolutions, say).
        """
        return []


def config_tag(config: type[BaseModel]) -> str:
    """The ``type`` tag of a config class (its single ``Literal`` value)."""
    field = config.model_fields.get("type")
    if field is None:
        raise TypeError(f"{config.__name__} has no 'type' field")
    args = typing.get_args(field.annotation)
    if typing.get_origin(field.annotation) is not typing.Literal or len(args) != 1:
        raise TypeError(f"{config.__name__}.type must be Literal['<name>'] with exactly one value")
    if field.default != args[0]:
        raise TypeError(f"{config.__name__}.type must default to its literal {args[0]!r}")
    return args[0]


class Section(_Checked):
    """A plain (non-block) recipe section: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


def dump(model: BaseModel) -> dict[str, Any]:
    return model.model_dump(mode="json")
