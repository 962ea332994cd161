"""User-facing errors: one line each, ``FILE: dotted.field.path: message``, exit code 2."""
from __future__ import annotations

import re
import unicodedata
from typing import Any, Iterable, Sequence

EXIT_USAGE = 2

# Characters that move the cursor, recolour or retitle a terminal, or reorder text: never printed raw.
_BIDI = set("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
_IDENT = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_\-]{0,63}\Z")


def _is_control(ch: str) -> bool:
    return unicodedata.category(ch) in ("Cc", "Zl", "Zp") or ch in _BIDI


def escape(text: str) -> str:
    """``text`` as one printable line: control characters (ESC, CR, LF, C1 codes, bidi overrides, ...)
    become ``\\x1b``-style escapes, so a message can neither drive the terminal nor fake a line."""
    if not any(_is_control(ch) for ch in text):
        return text
    out = []
    for ch in text:
        if _is_control(ch):
            code = ord(ch)
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")
        else:
            out.append(ch)
    return "".join(out)


def control_char_problem(name: str) -> str | None:
    """Why ``name`` (a recipe name, a run folder name) is refused for holding control characters."""
    bad = next((ch for ch in name if _is_control(ch) or unicodedata.category(ch) == "Cs"), None)
    if bad is None:
        return None
    return f"must not contain control characters (found U+{ord(bad):04X})"


def safe_key(part: Any) -> str:
    """A field-path element for a message: a short identifier or list index as it is; anything else
    (a line of another program's file, a long or odd key) as a short placeholder, never its text."""
    text = str(part)
    if _IDENT.match(text):
        return text
    return f"<key of {len(text)} characters>" if len(text) > 64 else repr(text)


def terminal_lines(exc: BaseException) -> list[str]:
    """The lines to print for an error: one per problem, every control character escaped."""
    text = str(exc)
    lines = exc.lines() if isinstance(exc, RecipeError) else text.rstrip("\n").split("\n")
    lines = [line for line in lines if line.strip()] or [type(exc).__name__]
    return [escape(line) for line in lines]

Problem = tuple[tuple[str, ...], str]


class GanzooWarning(UserWarning):
    """A warning of ganzoo's own (a plugin skipped, lines dropped from a log): the CLI prints it as one line,
    ``ganzoo: KIND: message``, without the source line Python's default display adds."""


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
            line = f"{self.source}: {path}: {msg}" if path else f"{self.source}: {msg}"
            out.append(escape(line))  # one problem, one printable line
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
        if err.get("type") == "extra_forbidden" and loc:  # an unknown key: its text is not ours to echo
            loc = (*loc[:-1], safe_key(loc[-1]))
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
