"""Unit tests of the weight norms (spectral, none) and feature norms against float64 formulas."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from torch import nn

from ganzoo.norms._weights import reference_weight
from ganzoo.norms.spectral import is_spectral, spectral_parametrization
from ganzoo.registry import NORM, WEIGHT_NORM

SMALL = settings(max_examples=15, deadline=None, database=None)


pytestmark = pytest.mark.usefixtures("one_cpu_thread")  # see conftest.py


def _sn(**options):
    return WEIGHT_NORM.build({"type": "spectral", **options})


def _power_step64(mat: torch.Tensor, u: torch.Tensor, n: int, eps: float = 1e-12):
    mat, u = mat.double(), u.double()
    for _ in range(n):
        v = mat.t() @ u
        v = v / (v.norm() + eps)
        u = mat @ v
        u = u / (u.norm() + eps)
    return u, v


# ----------------------------------------------------------------------------- spectral norm
def test_spectral_wraps_in_place_with_u_v_buffers():
    conv = nn.Conv2d(4, 6, 3)
    out = _sn()(conv)
    assert out is conv and is_spectral(conv)
    keys = set(conv.state_dict())
    assert {"parametrizations.weight.original", "parametrizations.weight.0.u", "parametrizations.weight.0.v"} <= keys
    p = spectral_parametrization(conv)
    assert p.u.shape == (6,) and p.v.shape == (36,)
    torch.testing.assert_close(p.u.norm(), torch.tensor(1.0))
    torch.testing.assert_close(p.v.norm(), torch.tensor(1.0))


@pytest.mark.parametrize("n", [1, 3])
def test_training_forward_steps_u_exactly_n_times(n):
    torch.manual_seed(0)
    lin = _sn(n_power_iterations=n)(nn.Linear(7, 5))
    p = spectral_parametrization(lin)
    raw = lin.parametrizations.weight.original.detach()
    u0 = p.u.clone()
    x = torch.randn(3, 7)
    y = lin(x)
    u_exp, v_exp = _power_step64(raw, u0, n)
    torch.testing.assert_close(p.u.double(), u_exp, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(p.v.double(), v_exp, rtol=1e-5, atol=1e-6)
    sigma = u_exp @ raw.double() @ v_exp
    torch.testing.assert_close(y.double(), F.linear(x.double(), raw.double() / sigma, lin.bias.double()), rtol=1e-5, atol=1e-6)
    # eval: no update, same sigma from the stored pair
    lin.eval()
    u1 = p.u.clone()
    lin(x)
    assert torch.equal(p.u, u1)


def test_power_iteration_is_fp32_under_autocast():
    torch.manual_seed(1)
    conv = _sn()(nn.Conv2d(16, 32, 3, padding=1))
    p = spectral_parametrization(conv)
    raw = conv.parametrizations.weight.original.detach()
    u0 = p.u.clone()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = conv(torch.randn(2, 16, 4, 4))
        w = conv.weight
    assert out.dtype == torch.bfloat16  # the conv itself does run in bf16
    assert p.u.dtype == p.v.dtype == torch.float32 and w.dtype == torch.float32
    # two steps (the forward, then reading .weight in training mode); bf16 matmuls would be off by ~1e-3
    torch.testing.assert_close(p.u.double(), _power_step64(raw.flatten(1), u0, 2)[0], rtol=2e-6, atol=2e-6)


def test_sigma_gradient_matches_float64():
    """d(W/sigma)/dW with sigma = u^T W v (u, v constants), as in the paper and the official code."""
    torch.manual_seed(2)
    conv = _sn()(nn.Conv2d(3, 5, 3))
    p = spectral_parametrization(conv)
    raw = conv.parametrizations.weight.original
    u0 = p.u.clone()
    x, r = torch.randn(2, 3, 6, 6), torch.randn(2, 5, 4, 4)
    (conv(x) * r).sum().backward()
    w64 = raw.detach().double().requires_grad_(True)
    u, v = _power_step64(w64.detach().flatten(1), u0, 1)
    sigma = u @ w64.flatten(1) @ v
    (F.conv2d(x.double(), w64 / sigma, conv.bias.detach().double()) * r.double()).sum().backward()
    torch.testing.assert_close(raw.grad.double(), w64.grad, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize(
    "make",
    [lambda: nn.Conv2d(6, 10, 3), lambda: nn.Linear(12, 7), lambda: nn.Embedding(9, 5), lambda: nn.ConvTranspose2d(6, 4, 3)],
    ids=["conv2d", "linear", "embedding", "conv_transpose2d"],
)
def test_converges_to_unit_spectral_norm(make):
    torch.manual_seed(3)
    layer = _sn(n_power_iterations=5)(make())
    x = {nn.Conv2d: lambda: torch.randn(1, 6, 5, 5), nn.Linear: lambda: torch.randn(2, 12),
         nn.Embedding: lambda: torch.arange(9), nn.ConvTranspose2d: lambda: torch.randn(1, 6, 3, 3)}
    inp = next(f for t, f in x.items() if isinstance(layer, t))()
    with torch.no_grad():
        for _ in range(100):
            layer(inp)
    layer.eval()
    w = layer.weight.detach().double()
    mat = w.movedim(1, 0).flatten(1) if isinstance(layer, nn.ConvTranspose2d) else w.flatten(1)
    assert torch.linalg.svdvals(mat)[0].item() == pytest.approx(1.0, abs=1e-4)
    raw = layer.parametrizations.weight.original.detach().double()
    rmat = raw.movedim(1, 0).flatten(1) if isinstance(layer, nn.ConvTranspose2d) else raw.flatten(1)
    torch.testing.assert_close(w, raw / torch.linalg.svdvals(rmat)[0], rtol=1e-4, atol=1e-7)


def _sn_layers(module: nn.Module):
    for name, m in module.named_modules():
        if is_spectral(m):
            p = spectral_parametrization(m)
            yield name, p.matrix(m.weight.detach().double())


@pytest.mark.parametrize("make", [
    lambda: nn.Conv2d(6, 10, 3), lambda: nn.Linear(12, 7), lambda: nn.Linear(64, 512),
    lambda: nn.Embedding(9, 5), lambda: nn.ConvTranspose2d(6, 4, 3),
], ids=["conv2d", "linear", "linear_wide", "embedding", "conv_transpose2d"])
def test_a_fresh_layer_has_unit_spectral_norm_in_eval_mode(make):
    """u and v are set from the weight at construction: no training forward is needed."""
    torch.manual_seed(5)
    layer = _sn()(make()).eval()
    (_, mat), = _sn_layers(layer)
    assert torch.linalg.svdvals(mat)[0].item() == pytest.approx(1.0, abs=1e-3)


@pytest.mark.parametrize("ch", [4, 16])
def test_fresh_networks_have_unit_spectral_norms_in_eval_mode(ch):
    """Every spectrally normalised layer of freshly built G and D (SAGAN attention included, whose
    convs are re-initialised after they are wrapped) has effective spectral norm 1 in eval mode: the
    power-iteration vectors are those of the final weights (before the fix: up to 2e12)."""
    from ganzoo.registry import DISCRIMINATOR, GENERATOR

    torch.manual_seed(0)
    nets = [GENERATOR.build({"type": "resnet", "ch": ch, "z_dim": 16, "attention": "sagan",
                             "attention_resolutions": [16]}, 32, 10),
            DISCRIMINATOR.build({"type": "resnet", "ch": ch, "attention": "sagan",
                                 "attention_resolutions": [16]}, 32, 10)]
    layers = [(name, mat) for net in nets for name, mat in _sn_layers(net.eval())]
    assert len(layers) > 10 and any(".query" in name for name, _ in layers)
    for name, mat in layers:
        assert torch.linalg.svdvals(mat)[0].item() == pytest.approx(1.0, abs=1e-3), name


def test_reference_weight_has_no_side_effects_and_predicts_forward():
    torch.manual_seed(4)
    lin = _sn(n_power_iterations=2)(nn.Linear(6, 6))
    p = spectral_parametrization(lin)
    state = copy.deepcopy(lin.state_dict())
    ref = reference_weight(lin)
    assert all(torch.equal(state[k], v) for k, v in lin.state_dict().items())
    torch.testing.assert_close(lin.weight.detach().double(), ref, rtol=1e-6, atol=1e-7)  # steps u here
    assert not torch.equal(state["parametrizations.weight.0.u"], p.u)


def test_two_forwards_before_one_backward():
    """A GAN step runs D on real and fake, then one backward: the second forward's in-place update
    of u and v must not invalidate the first forward's graph."""
    conv = _sn()(nn.Conv2d(3, 4, 3))
    x = torch.randn(2, 3, 5, 5)
    loss = conv(x).square().mean() + conv(-x).abs().mean()
    loss.backward()
    assert torch.isfinite(conv.parametrizations.weight.original.grad).all()
    conv.eval()
    loss = conv(x).sum()
    conv.train()
    conv(x)
    loss.backward()  # eval graph kept its own copy of u, v


def test_zero_weight_gives_zeros_not_nan():
    lin = _sn()(nn.Linear(4, 3))
    with torch.no_grad():
        lin.parametrizations.weight.original.zero_()
    assert torch.equal(lin.weight, torch.zeros(3, 4))


def test_spectral_errors_and_bounds():
    with pytest.raises(TypeError, match="needs a module with a 'weight' parameter, got ReLU"):
        _sn()(nn.ReLU())
    conv = _sn()(nn.Conv2d(2, 2, 1))
    with pytest.raises(ValueError, match="already spectrally normalised"):
        _sn()(conv)
    with pytest.raises(ValueError, match="at least 2 dimensions"):
        _sn()(nn.BatchNorm2d(3))
    with pytest.raises(ValidationError):
        _sn(n_power_iterations=0)
    with pytest.raises(ValidationError):
        _sn(eps=0)
    assert WEIGHT_NORM.get("spectral").doc and WEIGHT_NORM.get("none").doc


def test_none_weight_norm_returns_module_unchanged():
    conv = nn.Conv2d(2, 3, 1)
    before = copy.deepcopy(conv.state_dict())
    assert WEIGHT_NORM.build("none")(conv) is conv
    assert not is_spectral(conv) and conv.state_dict().keys() == before.keys()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_spectral_forward_backward_never_synchronise():
    conv = _sn()(nn.Conv2d(64, 64, 3, padding=1)).cuda()
    x = torch.randn(4, 64, 8, 8, device="cuda")
    conv(x)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out = conv(x)
        out.float().square().mean().backward()
    finally:
        torch.cuda.set_sync_debug_mode("default")


# ----------------------------------------------------------------------------- feature norms
def _bn64(x: torch.Tensor, eps: float) -> torch.Tensor:
    x = x.double()
    mean = x.mean(dim=(0, 2, 3), keepdim=True)
    var = x.var(dim=(0, 2, 3), unbiased=False, keepdim=True)
    return (x - mean) / torch.sqrt(var + eps)


def test_batch_norm_matches_float64_in_train_and_eval():
    torch.manual_seed(5)
    bn = NORM.build({"type": "batch", "momentum": 0.2}, 6)
    with torch.no_grad():
        bn.weight.uniform_(0.5, 2)
        bn.bias.normal_()
    x = torch.randn(4, 6, 3, 5) * 2 + 1
    y_train = bn(x, torch.zeros(4, dtype=torch.long))
    expected = _bn64(x, 1e-5) * bn.weight.double()[:, None, None] + bn.bias.double()[:, None, None]
    torch.testing.assert_close(y_train.double(), expected, rtol=1e-5, atol=1e-5)
    bn.eval()
    x64 = x.double()
    mean = 0.2 * x64.mean(dim=(0, 2, 3))
    var = 0.8 + 0.2 * x64.var(dim=(0, 2, 3), unbiased=True)
    expected = (x64 - mean[:, None, None]) / torch.sqrt(var[:, None, None] + 1e-5)
    expected = expected * bn.weight.double()[:, None, None] + bn.bias.double()[:, None, None]
    torch.testing.assert_close(bn(x).double(), expected, rtol=1e-5, atol=1e-5)


def test_group_and_instance_norm_match_float64():
    torch.manual_seed(6)
    x = torch.randn(3, 8, 4, 5) * 3 - 1
    gn = NORM.build({"type": "group", "groups": 2}, 8)
    with torch.no_grad():
        gn.weight.uniform_(0.5, 2)
        gn.bias.normal_()
    xg = x.double().reshape(3, 2, -1)
    expected = ((xg - xg.mean(-1, keepdim=True)) / torch.sqrt(xg.var(-1, unbiased=False, keepdim=True) + 1e-5)).reshape(x.shape)
    expected = expected * gn.weight.double()[:, None, None] + gn.bias.double()[:, None, None]
    torch.testing.assert_close(gn(x).double(), expected, rtol=1e-5, atol=1e-5)

    inorm = NORM.build("instance", 8)
    with torch.no_grad():
        inorm.weight.uniform_(0.5, 2)
        inorm.bias.normal_()
    xi = x.double()
    mean, var = xi.mean((2, 3), keepdim=True), xi.var((2, 3), unbiased=False, keepdim=True)
    expected = (xi - mean) / torch.sqrt(var + 1e-5) * inorm.weight.double()[:, None, None] + inorm.bias.double()[:, None, None]
    for mode in (True, False):  # instance statistics in both modes
        inorm.train(mode)
        torch.testing.assert_close(inorm(x).double(), expected, rtol=1e-5, atol=1e-5)


def test_conditional_batch_norm_matches_float64():
    torch.manual_seed(7)
    cbn = NORM.build("conditional_batch", 6, num_classes=4)
    with torch.no_grad():
        cbn.gain.weight.normal_()
        cbn.bias.weight.normal_()
    x, y = torch.randn(5, 6, 3, 3), torch.tensor([0, 3, 3, 1, 2])
    gain, bias = cbn.gain.weight.double()[y], cbn.bias.weight.double()[y]
    expected = _bn64(x, 1e-5) * gain[:, :, None, None] + bias[:, :, None, None]
    torch.testing.assert_close(cbn(x, y).double(), expected, rtol=1e-5, atol=1e-5)


def test_conditional_batch_norm_init():
    cbn = NORM.build({"type": "conditional_batch", "gain_init": 0.5}, 4, num_classes=3)
    assert torch.equal(cbn.gain.weight, torch.full((3, 4), 0.5))
    assert torch.equal(cbn.bias.weight, torch.zeros(3, 4))
    assert not cbn.bn.affine


@SMALL
@given(
    batch=st.integers(2, 4), channels=st.sampled_from([1, 4, 8]), classes=st.integers(1, 5),
    size=st.integers(1, 4), seed=st.integers(0, 2**31 - 1),
)
def test_conditional_batch_norm_with_shared_gains_equals_batch_norm(batch, channels, classes, size, seed):
    torch.manual_seed(seed)
    cbn = NORM.build("conditional_batch", channels, num_classes=classes)
    bn = NORM.build("batch", channels)
    g, b = torch.rand(channels) + 0.5, torch.randn(channels)
    with torch.no_grad():
        cbn.gain.weight.copy_(g.expand(classes, channels))
        cbn.bias.weight.copy_(b.expand(classes, channels))
        bn.weight.copy_(g)
        bn.bias.copy_(b)
    x = torch.randn(batch, channels, size, size + 1) * 2 + 0.5
    y = torch.randint(classes, (batch,))
    torch.testing.assert_close(cbn(x, y), bn(x), rtol=1e-5, atol=1e-5)  # batch statistics
    torch.testing.assert_close(cbn.bn.running_mean, bn.running_mean)
    torch.testing.assert_close(cbn.bn.running_var, bn.running_var)
    cbn.eval()
    bn.eval()
    torch.testing.assert_close(cbn(x, y), bn(x), rtol=1e-5, atol=1e-5)  # running statistics


def test_norm_errors():
    with pytest.raises(ValueError, match="needs num_classes > 0 .*use 'batch'"):
        NORM.build("conditional_batch", 8)
    cbn = NORM.build("conditional_batch", 8, num_classes=2)
    x = torch.randn(2, 8, 2, 2)
    with pytest.raises(ValueError, match="needs class labels y"):
        cbn(x)
    with pytest.raises(ValueError, match=r"y must have shape \[2\], got \[2, 1\]"):
        cbn(x, torch.zeros(2, 1, dtype=torch.long))
    with pytest.raises(ValueError, match="groups=8 must divide the channel count, got 12 channels"):
        NORM.build("group", 12)
    with pytest.raises(ValidationError):
        NORM.build({"type": "batch", "eps": 0}, 4)
    with pytest.raises(ValidationError):
        NORM.build({"type": "group", "group": 4}, 4)  # unknown field


def test_unconditional_norms_ignore_labels():
    torch.manual_seed(8)
    x = torch.randn(3, 8, 3, 3)
    for name in ("batch", "group", "instance", "none"):
        norm = NORM.build(name, 8, num_classes=5)
        torch.testing.assert_close(norm(x, torch.tensor([0, 4, 2])), norm(x), rtol=0, atol=0)
    assert torch.equal(NORM.build("none", 8)(x), x)


# ----------------------------------------------------------------------------- the checks can fail
class _FrobeniusParam(nn.Module):
    """Divides by the Frobenius norm (>= the spectral norm): a plausible-looking wrong 'spectral norm'."""

    def forward(self, w):
        return w / w.norm()

    def reference(self, w):
        return w / w.norm()


class _FrobeniusNorm:
    unit_spectral_norm = True

    def __init__(self, cfg=None):
        self.cfg = cfg

    def __call__(self, module):
        from torch.nn.utils import parametrize

        parametrize.register_parametrization(module, "weight", _FrobeniusParam())
        return module


class _LeakyLabels(nn.Module):
    """An 'unconditional' norm that secretly uses y."""

    def __init__(self, cfg=None, channels=0, num_classes=0):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(channels))

    def forward(self, x, y=None):
        out = x * self.scale[:, None, None]
        return out if y is None else out + y.to(x.dtype)[:, None, None, None]


def test_weight_norm_check_catches_a_wrong_spectral_norm():
    from ganzoo.registry import Entry
    from ganzoo.testing import check_weight_norm

    entry = Entry("weight_norm", "frobenius", _FrobeniusNorm, WEIGHT_NORM.get("none").config, "test")
    with pytest.raises(AssertionError, match="largest singular value"):
        check_weight_norm(entry, layers=("linear",), max_examples=10, shrink=False)


def test_norm_check_catches_an_unconditional_norm_using_labels():
    from ganzoo.registry import Entry
    from ganzoo.testing import check_norm_block

    entry = Entry("norm", "leaky", _LeakyLabels, NORM.get("none").config, "test")
    with pytest.raises(AssertionError, match="does not ignore y"):
        check_norm_block(entry, max_examples=10, shrink=False)


def test_conditionality_is_declared():
    assert NORM.get("conditional_batch").obj.conditional is True
    for name in ("batch", "group", "instance", "none"):
        assert NORM.get(name).obj.conditional is False
    cfg = NORM.get("conditional_batch").config(eps=1e-4, momentum=0.3).unconditional()
    assert (cfg.type, cfg.eps, cfg.momentum) == ("batch", 1e-4, 0.3)
