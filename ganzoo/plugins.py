"""Plugin discovery through the ``ganzoo.plugins`` entry-point group.

A plugin package declares, in its ``pyproject.toml``::

    [project.entry-points."ganzoo.plugins"]
    example = "ganzoo_example_plugin:register"

The entry point's *name* (``example``) is the plugin's namespace: every block it registers must be
named ``example.<something>``, so a plugin can never shadow a built-in or another plugin. The target
is either a callable, called once with the :mod:`ganzoo.registry` module, or a module whose import
registers its blocks.

Set ``GANZOO_DISABLE_PLUGINS=1`` to load the built-in blocks only. Plugins are loaded once, lazily, on the first use of any registry. Two distributions that claim one
entry-point name (one namespace) are both skipped, with one warning naming both. A plugin that fails to import or
to register anything is rolled back (none of its blocks stay registered) and reported in one
:class:`PluginWarning` naming its distribution and the error; everything else keeps working.
"""
from __future__ import annotations

import importlib.metadata as md
import os
import threading
import warnings
from dataclasses import dataclass, field
from types import ModuleType
from typing import TYPE_CHECKING

from .errors import GanzooWarning, escape

if TYPE_CHECKING:  # pragma: no cover
    from .registry import Registry

GROUP = "ganzoo.plugins"


class PluginWarning(GanzooWarning):
    """A plugin could not be loaded and was skipped."""


@dataclass
class PluginInfo:
    namespace: str
    distribution: str
    version: str
    target: str
    ok: bool = False
    error: str | None = None
    blocks: list[tuple[str, str]] = field(default_factory=list)  # (kind, name)

    @property
    def source(self) -> str:
        return f"{self.distribution} {self.version}"


_lock = threading.RLock()
_state = {"loaded": False, "loading": False}
_current: list[PluginInfo] = []  # stack: the plugin being loaded right now
_registered: list[tuple["Registry", str]] = []
LOADED: dict[str, PluginInfo] = {}


def current_source() -> str:
    return _current[-1].source if _current else "builtin"


def current_namespace() -> str | None:
    return _current[-1].namespace if _current else None


def record(reg: "Registry", name: str) -> None:
    if _current:
        _registered.append((reg, name))
        _current[-1].blocks.append((reg.kind, name))


def _builtins() -> None:
    from . import blocks  # noqa: F401  (importing registers every built-in block)


def _dist_of(ep: md.EntryPoint) -> tuple[str, str]:
    dist = getattr(ep, "dist", None)
    if dist is None:
        return ep.value.split(":")[0].split(".")[0], "?"
    return dist.metadata["Name"] or dist.name, dist.version


def load_all(force: bool = False) -> dict[str, PluginInfo]:
    """Import built-in blocks, then every plugin once. Safe to call repeatedly."""
    with _lock:
        if _state["loading"] or (_state["loaded"] and not force):
            return LOADED
        _state["loading"] = True
        try:
            _builtins()
            disabled = os.environ.get("GANZOO_DISABLE_PLUGINS", "") not in ("", "0")
            eps = [] if disabled else md.entry_points(group=GROUP)
            by_name: dict[str, list[md.EntryPoint]] = {}
            for ep in eps:
                by_name.setdefault(ep.name, []).append(ep)
            for name in sorted(by_name):
                if name in LOADED and not force:
                    continue
                claims = {_dist_of(ep): ep for ep in by_name[name]}  # one per distribution
                if len(claims) > 1:
                    _conflict(name, claims)
                else:
                    _load_one(next(iter(claims.values())))
            _state["loaded"] = True
        finally:
            _state["loading"] = False
    return LOADED


def _conflict(name: str, claims: dict[tuple[str, str], md.EntryPoint]) -> None:
    """Several distributions claim one namespace: none of them is loaded (whichever came first on
    sys.path would otherwise win silently, and recipes would mean different blocks on different
    machines); one warning names them all."""
    dists = sorted(f"{d} {v}" for d, v in claims)
    info = PluginInfo(name, " and ".join(d for d, _ in sorted(claims)), "", ", ".join(ep.value for ep in claims.values()))
    info.error = (f"the namespace '{name}' is claimed by several distributions ({', '.join(dists)}); "
                  "none of them was loaded: uninstall all but one")
    LOADED[name] = info
    warnings.warn(escape(f"ganzoo plugins from distributions {' and '.join(dists)} were skipped: {info.error}"),
                  PluginWarning, stacklevel=3)


def _load_one(ep: md.EntryPoint) -> None:
    dist, version = _dist_of(ep)
    info = PluginInfo(ep.name, dist, version, ep.value)
    previous = LOADED.get(ep.name)
    if previous is not None and previous.ok:
        return
    LOADED[ep.name] = info
    start = len(_registered)
    _current.append(info)
    try:
        if "." in ep.name or not ep.name.isidentifier():
            raise ValueError(f"entry-point name '{ep.name}' must be a plain identifier (it is the namespace)")
        target = ep.load()
        if callable(target) and not isinstance(target, ModuleType):
            from . import registry

            target(registry)
        info.ok = True
    except BaseException as exc:  # noqa: BLE001  (a broken plugin must never take ganzoo down)
        if isinstance(exc, (KeyboardInterrupt, SystemExit)) and not isinstance(exc, SystemExit):
            raise
        for reg, name in reversed(_registered[start:]):
            reg.unregister(name)
        del _registered[start:]
        info.blocks.clear()
        info.error = escape(f"{type(exc).__name__}: {exc}")
        warnings.warn(
            escape(f"ganzoo plugin '{ep.name}' from distribution {dist} {version} was skipped: {info.error}"),
            PluginWarning,
            stacklevel=2,
        )
    finally:
        _current.pop()
