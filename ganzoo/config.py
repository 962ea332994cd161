"""Base class for every block's config.

Each block's config sits in the same file as its ``nn.Module`` and is registered with it. It is a
pydantic v2 model with a ``type: Literal["name"]`` tag (the discriminator in recipes), forbids unknown
fields, and documents and bounds every field with ``Field(..., description=..., ge=...)``.
"""
from __future__ import annotations

import typing
from typing import Any

from pydantic import BaseModel, ConfigDict


class BlockConfig(BaseModel):
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


class Section(BaseModel):
    """A plain (non-block) recipe section: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


def dump(model: BaseModel) -> dict[str, Any]:
    return model.model_dump(mode="json")
