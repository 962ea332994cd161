"""The ``ganzoo`` command line. Each sub-command lives in its own module under ``ganzoo/commands/``.

A command module defines ``NAME``, ``HELP``, ``add_arguments(parser)`` and ``main(args) -> int``.
Errors the user can fix (:class:`ganzoo.errors.GanzooError`) are printed as one line each on
stderr, with exit code 2 and no traceback; control characters in them are escaped.

Start-up stays instant: the command list (``ganzoo --help``) is read from each module's ``NAME`` and
``HELP`` string constants without importing it, and only the command being run is imported, so
``--help`` and argument errors never import torch. Keep heavy imports inside ``main``.
"""
from __future__ import annotations

import argparse
import ast
import importlib
import pkgutil
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from . import __version__
from .errors import GanzooError, GanzooWarning, escape, terminal_lines

ORDER = ["list", "validate", "schema", "check", "run", "eval", "sample", "attention-maps", "export", "ablate", "report"]


@dataclass(frozen=True)
class CommandSpec:
    name: str
    help: str
    module: str


def _constants(path: Path) -> dict[str, str]:
    """Top-level ``NAME = "..."`` / ``HELP = "..."`` string constants of a module, without importing it."""
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (OSError, SyntaxError, ValueError):
        return {}
    out = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            for target in node.targets:
                if isinstance(target, ast.Name) and target.id in ("NAME", "HELP"):
                    out[target.id] = node.value.value
    return out


def command_specs() -> list[CommandSpec]:
    from . import commands

    specs = []
    for info in pkgutil.iter_modules(commands.__path__):
        module = f"ganzoo.commands.{info.name}"
        consts = _constants(Path(commands.__path__[0]) / f"{info.name}.py")
        if "NAME" not in consts or "HELP" not in consts:  # not plain constants: import to find out
            mod = importlib.import_module(module)
            if not hasattr(mod, "NAME"):
                continue
            consts = {"NAME": mod.NAME, "HELP": getattr(mod, "HELP", "")}
        specs.append(CommandSpec(consts["NAME"], consts["HELP"], module))
    return sorted(specs, key=lambda c: (ORDER.index(c.name) if c.name in ORDER else len(ORDER), c.name))


def _commands():
    """Every command module, imported (for tools that inspect them all; the CLI itself does not)."""
    return [importlib.import_module(spec.module) for spec in command_specs()]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2 (argparse's own convention too)
        self.exit(2, f"{self.prog}: error: {escape(message)}\n")


def _chosen(argv: Sequence[str], names: set[str]) -> str | None:
    """The command named on the command line (the first argument that is not an option)."""
    for arg in argv:
        if arg == "--":
            return None
        if not arg.startswith("-"):
            return arg if arg in names else None
    return None


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The full parser; with ``argv``, only the command it names gets its arguments (and is imported)."""
    parser = _Parser(prog="ganzoo", description="Modular GAN component zoo: SAGAN and its ablations.")
    parser.add_argument("--version", action="version", version=f"ganzoo {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    specs = command_specs()
    chosen = None if argv is None else _chosen(argv, {s.name for s in specs})
    for spec in specs:
        p = sub.add_parser(spec.name, help=spec.help, description=spec.help)
        if argv is None or spec.name == chosen:
            mod = importlib.import_module(spec.module)
            mod.add_arguments(p)
            p.set_defaults(_main=mod.main)
    return parser


def _show_warning(message, category, filename, lineno, file=None, line=None, _default=warnings.showwarning):
    """ganzoo's own warnings as one line on stderr (``ganzoo: PluginWarning: ...``); others as Python shows them."""
    if isinstance(category, type) and issubclass(category, GanzooWarning):
        print(f"ganzoo: {category.__name__}: {escape(str(message))}", file=file or sys.stderr)
    else:
        _default(message, category, filename, lineno, file, line)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    warnings.showwarning = _show_warning
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    args.command_line = ["ganzoo", *argv]  # for records (reports, run folders)
    if not getattr(args, "_main", None):
        parser.print_help()
        return 2
    try:
        return int(args._main(args) or 0)
    except GanzooError as exc:
        for line in terminal_lines(exc):
            print(line, file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("ganzoo: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


def entry() -> None:
    sys.exit(main())


if __name__ == "__main__":  # pragma: no cover
    entry()
