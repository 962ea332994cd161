"""The ``self_modulated_batch`` norm (Chen et al. 2019) against its float64 reference and the papers' formulas,
its build and call errors, and the norm contract's latent checks catching broken latent-modulated norms.
The registry-derived kit runs it too (test_properties_layers.py); here also with ``hidden: 0`` (BigGAN's CBN)."""
from __future__ import annotations

from typing import Literal

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from ganzoo.config import BlockConfig
from ganzoo.models._layers import Layers
from ganzoo.models._norm import is_modulated, plain
from ganzoo.norms._weights import reference_weight
from ganzoo.norms.batch import BatchNormConfig
from ganzoo.norms.spectral import is_spectral
from ganzoo.registry import NORM, Registry
from ganzoo.testing import check_norm_block

from conftest import assert_matches_float64

SMALL = settings(max_examples=15, deadline=None, database=None, derandomize=True)  # the same examples every run

pytestmark = pytest.mark.usefixtures("one_cpu_thread")  # see conftest.py


def _norm(channels: int, latent_dim: int, hidden: int = 32, weight_norm: str = "none", **cfg):
    return NORM.build({"type": "self_modulated_batch", "hidden": hidden, **cfg}, channels,
                      latent_dim=latent_dim, which_linear=Layers(weight_norm).linear)


@SMALL
@given(batch=st.integers(2, 4), channels=st.sampled_from([1, 3, 8]), latent_dim=st.integers(2, 9),
       hidden=st.sampled_from([0, 2, 5, 32]), weight_norm=st.sampled_from(["none", "spectral"]),
       seed=st.integers(0, 2**31 - 1))
def test_matches_its_reference_with_gradients_to_x_z_and_parameters(batch, channels, latent_dim, hidden, weight_norm, seed):
    # layers have at least 2 inputs: a 1x1 weight divided by its spectral norm is its sign, with no gradient
    torch.manual_seed(seed)
    norm = _norm(channels, latent_dim, hidden, weight_norm)
    x, z = torch.randn(batch, channels, 3, 4) * 3 + 1, torch.randn(batch, latent_dim)
    for mode in (True, False):
        norm.train(mode)
        xf, zf = x.clone().requires_grad_(True), z.clone().requires_grad_(True)
        xr, zr = x.double().requires_grad_(True), z.double().requires_grad_(True)
        ref = norm.reference(xr, None, zr)  # before forward: the spectral norm steps in training mode
        out = norm(xf, None, zf)
        assert_matches_float64(out, ref, [(xf, xr), (zf, zr)])
    for name, p in norm.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_is_the_papers_formula_and_hidden_zero_is_biggans_conditional_bn():
    torch.manual_seed(0)
    x, z = torch.randn(5, 6, 4, 4) * 2 + 1, torch.randn(5, 7)
    bn = F.batch_norm(x, None, None, training=True, eps=1e-5)  # BN without affine, batch statistics

    mlp = _norm(6, 7, hidden=4)
    assert sorted(n for n, _ in mlp.named_parameters()) == ["bias.bias", "bias.weight", "fc.bias", "fc.weight",
                                                              "gain.bias", "gain.weight"]
    h = torch.relu(mlp.fc(z))
    want = bn * (1 + mlp.gain(h))[:, :, None, None] + mlp.bias(h)[:, :, None, None]
    torch.testing.assert_close(mlp(x, None, z), want)

    # hidden 0: bias-free linear heads of z (with SN from the factory), gain = 1 + W_g z, bias = W_b z
    lin = _norm(6, 7, hidden=0, weight_norm="spectral")
    assert lin.fc is None and lin.gain.bias is None and lin.bias.bias is None
    assert is_spectral(lin.gain) and is_spectral(lin.bias)
    wg, wb = reference_weight(lin.gain).float(), reference_weight(lin.bias).float()
    want = bn * (1 + z @ wg.t())[:, :, None, None] + (z @ wb.t())[:, :, None, None]
    torch.testing.assert_close(lin(x, None, z), want, rtol=1e-5, atol=1e-5)


def test_zero_heads_give_plain_batch_norm_and_eval_uses_running_statistics():
    torch.manual_seed(1)
    norm = _norm(4, 3, hidden=8, momentum=0.5)
    with torch.no_grad():
        for layer in (norm.gain, norm.bias):
            layer.weight.zero_()
            layer.bias.zero_()
    plain_bn = nn.BatchNorm2d(4, momentum=0.5, affine=False)
    x = torch.randn(3, 4, 2, 5) * 4 - 2
    torch.testing.assert_close(norm(x, None, torch.randn(3, 3)), plain_bn(x))
    norm.eval(), plain_bn.eval()
    torch.testing.assert_close(norm.bn.running_mean, plain_bn.running_mean)
    torch.testing.assert_close(norm(x, None, torch.randn(3, 3)), plain_bn(x))


def test_labels_are_ignored_and_the_unmodulated_counterpart_is_batch_norm():
    torch.manual_seed(2)
    norm = _norm(4, 3)
    x, z = torch.randn(2, 4, 3, 3), torch.randn(2, 3)
    norm.eval()
    assert torch.equal(norm(x, None, z), norm(x, torch.tensor([0, 1]), z))
    cfg = NORM.get("self_modulated_batch").config(eps=1e-3, momentum=0.2)
    assert is_modulated(cfg) and not is_modulated(cfg.unmodulated())
    assert plain(cfg) == BatchNormConfig(eps=1e-3, momentum=0.2)
    assert plain(NORM.get("conditional_batch").config()) == BatchNormConfig()


def test_build_and_call_errors_are_one_line():
    with pytest.raises(ValueError, match=r"^self_modulated_batch norm is modulated by the latent: build it with "
                                         r"latent_dim >= 1 and which_linear .*latent_dim=0"):
        NORM.build("self_modulated_batch", 8)
    with pytest.raises(ValueError, match=r"which_linear=None"):
        NORM.build("self_modulated_batch", 8, latent_dim=4)
    norm = _norm(8, 4)
    x = torch.randn(2, 8, 2, 2)
    with pytest.raises(ValueError, match=r"^self_modulated_batch norm needs the latent z \(a \[B, 4\] tensor\)$"):
        norm(x, None)
    with pytest.raises(ValueError, match=r"z must have shape \[2, 4\], got \[2, 5\]$"):
        norm(x, None, torch.randn(2, 5))


def test_the_kit_passes_hidden_zero_and_spectral_configs():
    check_norm_block("self_modulated_batch", cfg={"hidden": 0}, max_examples=5)
    check_norm_block("self_modulated_batch", "cpu", torch.bfloat16, autocast=True, cfg={"hidden": 0}, max_examples=3)


# ----------------------------------------------------------------------------- broken latent norms, caught
class _ShiftConfig(BlockConfig):
    type: Literal["latent_shift_test"] = "latent_shift_test"


class LatentShift(nn.Module):
    """``x + W z`` per channel: a correct latent-modulated norm (its reference included), subclassed broken below."""

    conditional = False
    modulated_by_latent = True

    def __init__(self, cfg=None, channels: int = 8, num_classes: int = 0, *, latent_dim: int = 0, which_linear=None):
        super().__init__()
        self.shift = which_linear(latent_dim, channels)

    def latent(self, z):
        return z

    def forward(self, x, y=None, z=None):
        return x + self.shift(self.latent(z)).to(x.dtype)[:, :, None, None]

    def reference(self, x, y=None, z=None):
        w = reference_weight(self.shift)
        return x.double() + (self.latent(z).double() @ w.t() + self.shift.bias.double())[:, :, None, None]


class TrainOnlyLatent(LatentShift):
    """Uses z in training mode only: its eval output ignores the latent."""

    def latent(self, z):
        return z if self.training else torch.zeros_like(z)


class MeanLatent(LatentShift):
    """Every sample gets the batch's mean latent: samples mix through z, in eval mode too (declaring
    mixes_batch excuses training mode only)."""

    mixes_batch = True

    def latent(self, z):
        return z.mean(0, keepdim=True).expand_as(z)


class WrongReference(LatentShift):
    def reference(self, x, y=None, z=None):
        return super().reference(x, y, -z)


def _entry(cls):
    reg = Registry("norm")
    reg.register(_ShiftConfig, cls)
    return reg.get("latent_shift_test")


def test_a_correct_latent_norm_passes():
    check_norm_block(_entry(LatentShift), max_examples=5)


@pytest.mark.parametrize("cls, message", [
    (TrainOnlyLatent, r"is modulated by the latent but its output does not change when z changes"),
    (MeanLatent, r"in eval mode sample 0's output changed .* mixes samples across the batch"),
    (WrongReference, r"train forward vs reference: relative error"),
])
def test_broken_latent_norms_are_caught(cls, message):
    with pytest.raises(AssertionError, match=message):
        check_norm_block(_entry(cls), max_examples=5, shrink=False)
