"""The unconditional counterpart of a feature norm, used where G has no class labels.

G's ``norm`` (default ``conditional_batch``) needs labels. Where there are none -- every norm of G
when the recipe has ``num_classes: 0``, and G's output layer always -- G uses the norm's
unconditional counterpart:

* a norm that is not class-conditional is its own counterpart (``batch``, ``group``, ``none``...);
* a conditional norm whose config has a method ``unconditional()`` gets what it returns;
* otherwise ``conditional_<name>`` maps to ``<name>`` (``conditional_batch`` -> ``batch``),
  keeping the config fields both have (``eps``, ``momentum``, ...);
* a conditional norm with none of these has no counterpart, and an unconditional recipe using it
  fails validation at ``generator.norm``.

A norm counts as class-conditional when its class has ``conditional = True`` or, failing such an
attribute, when its name is ``conditional_<name>`` (plugins: ``<ns>.conditional_<name>``).
"""
from __future__ import annotations

from ..config import BlockConfig
from ..registry import NORM


def is_conditional(cfg: BlockConfig | str) -> bool:
    """Whether the norm ``cfg`` (a config or a registered name) uses class labels."""
    name = cfg if isinstance(cfg, str) else cfg.type
    flag = getattr(NORM.get(name).obj, "conditional", None)
    if flag is None:
        flag = name.rpartition(".")[2].startswith("conditional_")
    return bool(flag)


def unconditional(cfg: BlockConfig) -> BlockConfig | None:
    """The unconditional counterpart of the norm ``cfg`` (itself if it is unconditional), or None."""
    if not is_conditional(cfg):
        return cfg
    method = getattr(cfg, "unconditional", None)
    if callable(method):
        return method()
    ns, dot, name = cfg.type.rpartition(".")
    base = ns + dot + name[len("conditional_"):] if name.startswith("conditional_") else None
    if base is None or base not in NORM or is_conditional(base):
        return None
    target = NORM.get(base).config
    shared = {k: v for k, v in cfg.model_dump().items() if k in target.model_fields and k != "type"}
    return target.model_validate({**shared, "type": base})
