"""Which feature norm a backbone layer gets, and the factory that builds it.

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

A norm *modulated by the latent* (class flag ``modulated_by_latent``, e.g. ``self_modulated_batch``)
is built with the size of the vector G hands it and G's linear-layer factory (:func:`norm_builder`),
and called with that vector. Where no latent reaches -- G's output layer, a discriminator's norms --
the *plain* counterpart is used (:func:`plain`): the norm its config's ``unmodulated()`` returns, then
that norm's unconditional counterpart.
"""
from __future__ import annotations

import functools
from typing import Callable

from torch import nn

from ..config import BlockConfig
from ..contracts import flag
from ..registry import NORM


def is_conditional(cfg: BlockConfig | str) -> bool:
    """Whether the norm ``cfg`` (a config or a registered name) uses class labels."""
    name = cfg if isinstance(cfg, str) else cfg.type
    declared = getattr(NORM.get(name).obj, "conditional", None)
    if declared is None:
        declared = name.rpartition(".")[2].startswith("conditional_")
    return bool(declared)


def is_modulated(cfg: BlockConfig | str) -> bool:
    """Whether the norm ``cfg`` (a config or a registered name) is modulated by the generator's latent."""
    name = cfg if isinstance(cfg, str) else cfg.type
    return bool(flag("norm", NORM.get(name).obj, "modulated_by_latent"))


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


def plain(cfg: BlockConfig) -> BlockConfig | None:
    """The norm for a layer that neither labels nor the latent reach (G's output layer, D's norms), or None:
    a norm modulated by the latent gives way to its config's ``unmodulated()``, then the unconditional
    counterpart of that (``self_modulated_batch`` -> ``batch``, ``conditional_batch`` -> ``batch``)."""
    if is_modulated(cfg):
        method = getattr(cfg, "unmodulated", None)
        cfg = method() if callable(method) else None
        if cfg is None or is_modulated(cfg):
            return None
    return unconditional(cfg)


def norm_builder(cfg: BlockConfig, num_classes: int = 0, latent_dim: int = 0,
                 which_linear: Callable[..., nn.Module] | None = None) -> Callable[[int], nn.Module]:
    """``channels -> norm``: the factory a backbone hands its blocks (BigGAN-PyTorch's ``which_bn``).

    A norm modulated by the latent is also given ``latent_dim`` (the size of the vector it will be
    called with) and ``which_linear`` (the backbone's linear-layer factory, so its layers get the
    backbone's init and weight norm); other norms get neither."""
    extra = {"latent_dim": latent_dim, "which_linear": which_linear} if is_modulated(cfg) else {}
    return functools.partial(NORM.build, cfg, num_classes=num_classes, **extra)
