"""``Block("attention")``: a pydantic field type that accepts any block of a kind, plugins included.

Used in recipes and in configs that nest other blocks (a generator's ``attention`` field, say)::

    attention: Block("attention") = "sagan"

A value may be a name (shorthand for ``{type: name}``), a mapping with a ``type`` tag, or a config
instance. The tag is looked up in the registry at validation time, so blocks registered by plugins
validate exactly like built-ins, with the same "did you mean" errors. Field errors inside the
block keep their path (``generator.attention.reduction``) through :func:`ganzoo.errors.flatten`.
"""
from __future__ import annotations

from typing import Annotated, Any

from pydantic import GetCoreSchemaHandler, GetJsonSchemaHandler, ValidationError
from pydantic_core import PydanticCustomError, core_schema

from .config import BlockConfig

# $defs collected while a JSON schema is generated (see ganzoo.recipe.recipe_json_schema)
SCHEMA_DEFS: dict[str, Any] = {}
REF_KEY = "x-ganzoo-ref"


class _BlockRef:
    def __init__(self, kind: str) -> None:
        self.kind = kind

    def validate(self, value: Any) -> BlockConfig:
        from .registry import registry

        reg = registry(self.kind)
        if isinstance(value, BlockConfig):
            if value.type in reg and reg.get(value.type).config is type(value):
                return value
            value = value.model_dump()
        if isinstance(value, str):
            value = {"type": value}
        if not isinstance(value, dict):
            raise PydanticCustomError(
                "ganzoo_block",
                "expected a {kind} name or a mapping with a 'type' key, got {got}",
                {"kind": self.kind, "got": type(value).__name__},
            )
        name = value.get("type")
        if name is None:
            raise PydanticCustomError(
                "ganzoo_block", "{kind} needs a 'type'; known: {known}",
                {"kind": self.kind, "known": ", ".join(reg.names())},
            )
        if not isinstance(name, str) or name not in reg:
            raise PydanticCustomError(
                "ganzoo_block", "{msg}", {"msg": reg.unknown_message(str(name)), "loc": ("type",)}
            )
        try:
            return reg.get(name).config.model_validate(value)
        except ValidationError as exc:
            from .errors import flatten

            problems = flatten(exc.errors())
            loc, msg = problems[0]
            raise PydanticCustomError(
                "ganzoo_block", "{msg}", {"msg": msg, "loc": loc, "all": problems}
            ) from None

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler):
        return core_schema.no_info_plain_validator_function(
            self.validate,
            serialization=core_schema.plain_serializer_function_ser_schema(
                lambda v: v.model_dump(mode="json") if isinstance(v, BlockConfig) else v,
                when_used="always",
            ),
        )

    def __get_pydantic_json_schema__(self, schema: Any, handler: GetJsonSchemaHandler):
        from .registry import registry

        refs = {}
        for entry in registry(self.kind):
            sub = entry.config.model_json_schema(ref_template="#/$defs/{model}")
            SCHEMA_DEFS.update(sub.pop("$defs", {}))
            key = f"{self.kind}.{entry.name}"
            sub.setdefault("description", entry.doc)
            SCHEMA_DEFS[key] = sub
            refs[entry.name] = f"#/$defs/{key}"
        names = sorted(refs)
        return {
            "x-ganzoo-kind": self.kind,
            "description": f"a {self.kind} block: a name ({', '.join(names)}) or a mapping with its 'type'",
            # "x-ganzoo-ref" becomes "$ref" once the whole schema is assembled (recipe_json_schema):
            # pydantic would try to resolve a "$ref" to a definition it did not make itself.
            "anyOf": [{"type": "string", "enum": names}] + [{REF_KEY: r} for r in refs.values()],
        }


def Block(kind: str) -> Any:  # noqa: N802  (reads like a type in annotations)
    """Annotated type of a field holding a block of ``kind`` (validated against the registry)."""
    return Annotated[BlockConfig, _BlockRef(kind)]
