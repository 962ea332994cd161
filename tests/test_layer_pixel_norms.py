"""The ``layer`` and ``pixel`` feature norms against their float64 references and the papers' formulas."""
from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from ganzoo.registry import NORM

from conftest import assert_matches_float64

SMALL = settings(max_examples=15, deadline=None, database=None, derandomize=True)  # the same examples every run

pytestmark = pytest.mark.usefixtures("one_cpu_thread")  # see conftest.py

_shapes = dict(batch=st.integers(1, 4), channels=st.sampled_from([1, 3, 8]), h=st.integers(2, 5),
               w=st.integers(1, 5), seed=st.integers(0, 2**31 - 1))


@SMALL
@given(**_shapes, affine=st.booleans())
def test_layer_norm_matches_its_reference_and_gradients(batch, channels, h, w, seed, affine):
    torch.manual_seed(seed)
    norm = NORM.build({"type": "layer", "affine": affine}, channels)
    if affine:
        with torch.no_grad():
            norm.weight.uniform_(0.5, 2)
            norm.bias.normal_()
    x = torch.randn(batch, channels, h, w) * 3 + 1
    for mode in (True, False):  # per-sample statistics in both modes
        norm.train(mode)
        xf, xr = x.clone().requires_grad_(True), x.double().requires_grad_(True)
        out, ref = norm(xf), norm.reference(xr)
        assert_matches_float64(out, ref, [(xf, xr)])


def test_layer_norm_is_torch_layer_norm_over_chw_with_per_channel_affine():
    torch.manual_seed(1)
    x = torch.randn(3, 6, 4, 5) * 2 - 1
    norm = NORM.build("layer", 6)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 2)
        norm.bias.normal_()
    plain = nn.functional.layer_norm(x, (6, 4, 5), eps=1e-5)
    expected = plain * norm.weight[:, None, None] + norm.bias[:, None, None]
    torch.testing.assert_close(norm(x), expected, rtol=1e-5, atol=1e-5)
    assert [n for n, _ in norm.named_parameters()] == ["weight", "bias"]
    assert list(NORM.build({"type": "layer", "affine": False}, 6).parameters()) == []


@SMALL
@given(**_shapes)
def test_pixel_norm_matches_its_reference_and_the_progan_formula(batch, channels, h, w, seed):
    torch.manual_seed(seed)
    norm = NORM.build("pixel", channels)
    x = torch.randn(batch, channels, h, w) * 3 + 1
    ref = norm.reference(x)
    assert ref.dtype == torch.float64
    torch.testing.assert_close(norm(x).double(), ref, rtol=1e-6, atol=1e-6)
    x64 = x.double()
    progan = x64 / torch.sqrt(x64.pow(2).mean(dim=1, keepdim=True) + 1e-8)  # Karras et al. 2018, eq. in 4.2
    torch.testing.assert_close(ref, progan, rtol=1e-12, atol=1e-12)
    ms = x64.pow(2).mean(dim=1)  # each pixel's mean square becomes ms / (ms + eps): 1 unless ms ~ eps
    torch.testing.assert_close(norm(x).double().pow(2).mean(dim=1), ms / (ms + 1e-8), rtol=1e-5, atol=1e-6)


def test_pixel_norm_has_no_parameters_keeps_dtype_and_gives_zeros_for_zeros():
    norm = NORM.build({"type": "pixel", "eps": 1e-6}, 4)
    assert list(norm.parameters()) == [] and list(norm.buffers()) == []
    x = torch.randn(2, 4, 3, 3, dtype=torch.bfloat16)
    out = norm(x)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.double(), norm.reference(x), rtol=1e-2, atol=1e-2)
    assert torch.equal(norm(torch.zeros(1, 4, 2, 2)), torch.zeros(1, 4, 2, 2))


def test_layer_and_pixel_norms_are_unconditional_and_refuse_no_channels():
    x, y = torch.randn(3, 8, 3, 3), torch.tensor([0, 4, 2])
    for name in ("layer", "pixel"):
        assert NORM.get(name).obj.conditional is False
        norm = NORM.build(name, 8, num_classes=5)
        assert torch.equal(norm(x, y), norm(x))
        with pytest.raises(ValueError, match=f"{name} norm needs channels >= 1, got 0"):
            NORM.build(name, 0)
