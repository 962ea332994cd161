"""The effective weight of a (possibly weight-normed) layer, computed plainly in float64.

Reference implementations (``reference(x)`` of attention blocks, the checks in :mod:`ganzoo.testing`)
need the weight a layer's *next* forward will use, without the side effects of computing it (a
spectral norm steps its power iteration in training mode). Weight norms built on
``torch.nn.utils.parametrize`` provide this by giving each parametrization a
``reference(weight: float64 tensor) -> float64 tensor`` method that has no side effects.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import parametrize


def reference_weight(module: nn.Module, name: str = "weight") -> torch.Tensor:
    """``module.<name>`` as its next forward will compute it, in float64, detached, with no side effects."""
    if parametrize.is_parametrized(module, name):
        plist = module.parametrizations[name]
        w = plist.original.detach().to(torch.float64)
        for p in plist:
            ref = getattr(p, "reference", None)
            if ref is None:
                raise TypeError(
                    f"parametrization {type(p).__name__} on {type(module).__name__}.{name} has no "
                    "reference(weight) method, so its effective weight cannot be computed in float64"
                )
            w = ref(w)
        return w
    w = getattr(module, name, None)
    if not isinstance(w, torch.Tensor):
        raise TypeError(f"{type(module).__name__} has no tensor attribute '{name}'")
    return w.detach().to(torch.float64)


def reference_bias(module: nn.Module) -> torch.Tensor | None:
    """``module.bias`` in float64 (None when the layer has no bias)."""
    b = getattr(module, "bias", None)
    return None if b is None else b.detach().to(torch.float64)
