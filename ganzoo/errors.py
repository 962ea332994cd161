"""User-facing errors: one line each, ``FILE: dotted.field.path: message``, exit code 2."""
from __future__ import annotations

from typing import Any, Iterable, Sequence

EXIT_USAGE = 2

Problem = tuple[tuple[str, ...], str]


class GanzooError(Exception):
    """An error the CLI reports as one line (no traceback) with exit code 2."""

    exit_code = EXIT_USAGE


class RecipeError(GanzooError):
    """A recipe (or an override) is invalid. ``problems`` are (field path, message) pairs."""

    def __init__(self, source: str, problems: Sequence[Problem] | str, loc: Sequence[str] = ()) -> None:
        if isinstance(problems, str):
            problems = [(tuple(loc), problems)]
        self.source = str(source)
        self.problems = list(problems)
        super().__init__(self.lines()[0] if self.problems else self.source)

    def lines(self) -> list[str]:
        out = []
        for loc, msg in self.problems:
            path = ".".join(loc)
            out.append(f"{self.source}: {path}: {msg}" if path else f"{self.source}: {msg}")
        return out

    def __str__(self) -> str:
        return "\n".join(self.lines())


def _loc(parts: Iterable[Any]) -> tuple[str, ...]:
    return tuple(str(p) for p in parts)


def flatten(errors: Iterable[dict[str, Any]]) -> list[Problem]:
    """pydantic ``ValidationError.errors()`` -> [(loc, message)], expanding nested block errors."""
    out: list[Problem] = []
    seen: set[Problem] = set()
    for err in errors:
        loc = _loc(err.get("loc", ()))
        ctx = err.get("ctx") or {}
        if err.get("type") in ("ganzoo_block", "ganzoo_field"):
            inner = ctx.get("all") or [(ctx.get("loc", ()), ctx.get("msg", err["msg"]))]
            items = [(loc + _loc(il), m) for il, m in inner]
        else:
            msg = err.get("msg", "invalid")
            if msg.startswith("Value error, "):
                msg = msg[len("Value error, "):]
            if "input" in err and err.get("type") in ("extra_forbidden",):
                msg = "unknown field (not allowed here)"
            items = [(loc, msg)]
        for item in items:
            if item not in seen:
                seen.add(item)
                out.append(item)
    return out


def field_error(loc: str | Sequence[str], msg: str):
    """An error for a model validator that names a field path (``"generator.attention_resolutions"``)."""
    from pydantic_core import PydanticCustomError

    parts = tuple(loc.split(".")) if isinstance(loc, str) else tuple(loc)
    return PydanticCustomError("ganzoo_field", "{msg}", {"msg": msg, "loc": parts})
