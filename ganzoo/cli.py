"""The ``ganzoo`` command line. Each sub-command lives in its own module under ``ganzoo/commands/``.

A command module defines ``NAME``, ``HELP``, ``add_arguments(parser)`` and ``main(args) -> int``.
Errors the user can fix (:class:`ganzoo.errors.GanzooError`) are printed as one line each on
stderr, with exit code 2 and no traceback.
"""
from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from typing import Sequence

from . import __version__
from .errors import GanzooError

ORDER = ["list", "validate", "schema", "run", "eval", "sample", "export", "ablate", "report"]


def _commands():
    from . import commands

    mods = [importlib.import_module(f"ganzoo.commands.{m.name}") for m in pkgutil.iter_modules(commands.__path__)]
    mods = [m for m in mods if hasattr(m, "NAME")]
    return sorted(mods, key=lambda m: (ORDER.index(m.NAME) if m.NAME in ORDER else len(ORDER), m.NAME))


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2 (argparse's own convention too)
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="ganzoo", description="Modular GAN component zoo: SAGAN and its ablations.")
    parser.add_argument("--version", action="version", version=f"ganzoo {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for mod in _commands():
        p = sub.add_parser(mod.NAME, help=mod.HELP, description=mod.HELP)
        mod.add_arguments(p)
        p.set_defaults(_main=mod.main)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.command_line = ["ganzoo", *argv]  # for records (reports, run folders)
    if not getattr(args, "_main", None):
        parser.print_help()
        return 2
    try:
        return int(args._main(args) or 0)
    except GanzooError as exc:
        for line in str(exc).splitlines() or [type(exc).__name__]:
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
