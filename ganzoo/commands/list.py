"""ganzoo list [KIND] [GLOB]"""
from __future__ import annotations

import argparse

from ..errors import escape
from ..registry import REGISTRIES, registry

NAME = "list"
HELP = "list registered blocks (built-in and plugins), optionally of one kind and matching a glob"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("kind", nargs="?", help=f"one of: {', '.join(REGISTRIES)}")
    p.add_argument("pattern", nargs="?", default="*", help="glob on block names, e.g. 'sagan*' or 'example.*'")


def main(args: argparse.Namespace) -> int:
    kinds = [registry(args.kind)] if args.kind else list(REGISTRIES.values())
    # plugins choose their names, docstrings and distribution metadata: never print them raw
    rows = [(r.kind, escape(e.name), escape(e.source), escape(e.doc)) for r in kinds for e in r.list(args.pattern)]
    if not rows:
        print(f"no blocks match {escape(repr(args.pattern))}")
        return 0
    w = [max(len(row[i]) for row in rows) for i in range(3)]
    for kind, name, source, doc in rows:
        print(f"{kind:<{w[0]}}  {name:<{w[1]}}  {source:<{w[2]}}  {doc}".rstrip())
    return 0
