"""Imports every built-in block module, which registers it.

Each kind lives in its own package (``ganzoo/attention/``, ``ganzoo/losses/``, ...), one block per
file. Every module in these packages is imported here, so adding a block means adding one file.
"""
from __future__ import annotations

import importlib
import pkgutil

PACKAGES = (
    "ganzoo.attention",
    "ganzoo.norms",
    "ganzoo.losses",
    "ganzoo.regularizers",
    "ganzoo.augment",
    "ganzoo.models",
    "ganzoo.datasets",
    "ganzoo.metrics",
)


def import_all() -> None:
    for pkg_name in PACKAGES:
        try:
            pkg = importlib.import_module(pkg_name)
        except ModuleNotFoundError as exc:
            if exc.name == pkg_name:
                continue  # kind with no built-in blocks yet
            raise
        for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda m: m.name):
            if not info.name.startswith("_"):
                importlib.import_module(f"{pkg_name}.{info.name}")


import_all()
