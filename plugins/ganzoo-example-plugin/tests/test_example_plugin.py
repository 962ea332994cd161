"""The plugin's own tests: ganzoo's property checks run directly on this plugin's blocks."""
from __future__ import annotations

import pytest
import torch

from ganzoo.registry import ATTENTION, LOSS
from ganzoo.testing import check_attention_block, check_loss
from ganzoo.testing.conformance import iter_checks


def test_blocks_are_registered_under_the_namespace():
    assert ATTENTION.get("example.linear_attention").source.startswith("ganzoo-example-plugin ")
    assert LOSS.get("example.smoothed_non_saturating").source.startswith("ganzoo-example-plugin ")


def test_every_block_passes_the_conformance_kit():
    """Exactly what `ganzoo check --plugin ganzoo-example-plugin` runs."""
    checks = list(iter_checks(plugin="ganzoo-example-plugin"))
    assert {name for _, name, _, _ in checks} == {"example.linear_attention", "example.smoothed_non_saturating"}
    for _, _, _, run in checks:
        run()


@pytest.mark.parametrize("spectral_norm", [True, False])
def test_linear_attention_properties(spectral_norm):
    check_attention_block("example.linear_attention", "cpu", torch.float32, cfg={"spectral_norm": spectral_norm})


def test_linear_attention_is_linear_in_memory():
    """No N x N matrix in forward: 64x64 maps (N = 4096) would need 64 MiB per image for it."""
    block = ATTENTION.build("example.linear_attention", 16)
    with torch.no_grad():
        block.gamma.fill_(1.0)
    x = torch.randn(1, 16, 64, 64)
    out = block(x)
    assert out.shape == x.shape and torch.isfinite(out).all()


def test_smoothed_loss_properties_and_formula():
    check_loss("example.smoothed_non_saturating")
    loss = LOSS.build({"type": "example.smoothed_non_saturating", "real_label": 0.9})
    real = torch.randn(16, dtype=torch.float64)
    fake = torch.randn(16, dtype=torch.float64)
    sig = torch.sigmoid
    expected_d = -(0.9 * torch.log(sig(real)) + 0.1 * torch.log(1 - sig(real))).mean() - torch.log(1 - sig(fake)).mean()
    assert torch.allclose(loss.d_loss(real, fake).double(), expected_d, rtol=1e-5)
    assert torch.allclose(loss.g_loss(None, fake).double(), -torch.log(sig(fake)).mean(), rtol=1e-5)
