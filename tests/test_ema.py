"""The EMA of G: ramp-up of the decay, and spectral norm that follows the averaged weights."""
from __future__ import annotations

import pytest
import torch

from ganzoo.training.ema import ema_decay, make_ema, update_ema


def test_decay_ramps_up_then_holds():
    assert ema_decay(0.9999, 0) == 0.0  # not averaging yet: a copy
    assert ema_decay(0.9999, 1) == pytest.approx(2 / 11)
    assert ema_decay(0.9999, 90) == pytest.approx(91 / 100)
    assert ema_decay(0.9999, 10**6) == 0.9999
    assert ema_decay(0.9999, 1, rampup=False) == 0.9999
    ramp = [ema_decay(0.999, t) for t in range(1, 20000)]
    assert all(a <= b for a, b in zip(ramp, ramp[1:]))


def _sn_layers(model):
    for m in model.modules():
        for name, plist in getattr(m, "parametrizations", {}).items():
            yield m, name, plist


def test_ema_spectral_norm_estimates_its_own_weights():
    """G and its EMA drift apart (G is re-randomised; the EMA barely moves): the EMA's normalised
    weights must still have largest singular value ~1. Copying G's power-iteration vectors into the
    EMA (what this replaced) gives sigma estimates of the wrong matrix and values far from 1."""
    from conftest import tiny_recipe
    from ganzoo.recipe import Recipe
    from ganzoo.training.build import build_generator

    recipe = Recipe.model_validate(tiny_recipe(train={"steps": 1}))
    torch.manual_seed(0)
    G = build_generator(recipe)
    ema = make_ema(G)
    for _ in range(40):
        with torch.no_grad():
            for p in G.parameters():
                p.copy_(torch.randn_like(p))
            G.train()(torch.randn(2, recipe.generator.z_dim), torch.zeros(2, dtype=torch.long))  # G's own u, v
        update_ema(ema, G, 0.999)
    layers = list(_sn_layers(ema))
    assert layers, "the tiny recipe's G has spectral norm"
    for m, name, plist in layers:
        w = getattr(m, name)  # the normalised weight, in eval mode with the EMA's stored u, v
        mat = w.flatten(1) if plist[0].dim == 0 else w.movedim(plist[0].dim, 0).flatten(1)
        top = torch.linalg.svdvals(mat.double())[0].item()
        assert top == pytest.approx(1.0, abs=0.05), (name, top)
