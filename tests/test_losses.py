"""Losses against their formulas written plainly in float64; regularizers against analytic values."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from pydantic import ValidationError
from ganzoo.contracts import flag
from ganzoo.registry import LOSS, REGULARIZER


def _logits(n: int = 64, seed: int = 0, scale: float = 3.0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, generator=g) * scale, torch.randn(n, generator=g) * scale


def _sig(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


# Plain per-element formulas, evaluated one float at a time in Python (float64).
PLAIN = {
    "hinge": (lambda r: max(0.0, 1 - r), lambda f: max(0.0, 1 + f), lambda f: -f),
    "non_saturating": (lambda r: -math.log(_sig(r)), lambda f: -math.log(1 - _sig(f)), lambda f: -math.log(_sig(f))),
    "minimax": (lambda r: -math.log(_sig(r)), lambda f: -math.log(1 - _sig(f)), lambda f: math.log(1 - _sig(f))),
    "wasserstein": (lambda r: -r, lambda f: f, lambda f: -f),
    "least_squares": (lambda r: 0.5 * (r - 1) ** 2, lambda f: 0.5 * f**2, lambda f: 0.5 * (f - 1) ** 2),
}


def _mean(fn, xs: torch.Tensor) -> float:
    vals = [fn(float(v)) for v in xs.double()]
    return sum(vals) / len(vals)


@pytest.mark.parametrize("name", sorted(PLAIN))
def test_loss_matches_plain_float64_formula(name):
    real, fake = _logits()
    loss = LOSS.build(name)
    d_real, d_fake, g = PLAIN[name]
    d = loss.d_loss(real, fake)
    assert d.dtype == torch.float32 and d.dim() == 0
    assert d.item() == pytest.approx(_mean(d_real, real) + _mean(d_fake, fake), rel=1e-5, abs=1e-5)
    assert flag("loss", loss, "g_needs_real") is False  # G's update never runs D on reals for it
    assert loss.g_loss(None, fake).item() == pytest.approx(_mean(g, fake), rel=1e-5, abs=1e-5)


def _softplus(x: float) -> float:
    return math.log1p(math.exp(-abs(x))) + max(x, 0.0)


# Relativistic average losses (Jolicoeur-Martineau 2019), written from the paper's reference code:
# per-element terms of r~ = r - mean(f) and f~ = f - mean(r); D and G halve the sum of the two means.
RELATIVISTIC = {
    "relativistic_hinge": ((lambda r: max(0.0, 1 - r), lambda f: max(0.0, 1 + f)),
                           (lambda r: max(0.0, 1 + r), lambda f: max(0.0, 1 - f))),
    "relativistic_non_saturating": ((lambda r: _softplus(-r), lambda f: _softplus(f)),  # -log sig(r~), -log(1-sig(f~))
                                    (lambda r: _softplus(r), lambda f: _softplus(-f))),
}


@pytest.mark.parametrize("name", sorted(RELATIVISTIC))
def test_relativistic_loss_matches_plain_float64_formula(name):
    real, fake = _logits(n=48, seed=2)
    real = real[:40]  # the two halves may differ in size: means are per side
    loss = LOSS.build(name)
    assert loss.g_needs_real is True
    mean_r, mean_f = real.double().mean().item(), fake.double().mean().item()
    rel_r, rel_f = real.double() - mean_f, fake.double() - mean_r
    (d_r, d_f), (g_r, g_f) = RELATIVISTIC[name]
    d = loss.d_loss(real, fake)
    g = loss.g_loss(real, fake)
    assert d.dtype == g.dtype == torch.float32 and d.dim() == g.dim() == 0
    assert d.item() == pytest.approx(0.5 * (_mean(d_r, rel_r) + _mean(d_f, rel_f)), rel=1e-5, abs=1e-5)
    assert g.item() == pytest.approx(0.5 * (_mean(g_r, rel_r) + _mean(g_f, rel_f)), rel=1e-5, abs=1e-5)


@pytest.mark.parametrize("name", sorted(RELATIVISTIC))
def test_relativistic_g_loss_gradient_reaches_fakes_only_through_the_given_reals(name):
    # the trainer passes real logits without autograd: G's gradient is the fake logits' alone, and it
    # is the same as when the reals are differentiable leaves (their own gradient is simply unused)
    real, fake = _logits(n=16, seed=3)
    loss = LOSS.build(name)
    f1 = fake.clone().requires_grad_(True)
    (g1,) = torch.autograd.grad(loss.g_loss(real, f1), f1)
    f2, r2 = fake.clone().requires_grad_(True), real.clone().requires_grad_(True)
    g2, _ = torch.autograd.grad(loss.g_loss(r2, f2), (f2, r2))
    assert torch.equal(g1, g2) and float(g1.abs().sum()) > 0
    with pytest.raises(TypeError, match=f"{name}.g_loss needs the real logits .* got None"):
        loss.g_loss(None, fake)


def test_relativistic_losses_compare_with_the_other_sides_mean():
    # shifting every logit by the same amount changes nothing: only real - mean(fake) and fake - mean(real) count
    real, fake = _logits(n=12, seed=4)
    for name in RELATIVISTIC:
        loss = LOSS.build(name)
        for fn in (loss.d_loss, loss.g_loss):
            assert fn(real + 5.0, fake + 5.0).item() == pytest.approx(fn(real, fake).item(), rel=1e-5, abs=1e-6)


def test_relativistic_hinge_margin_is_configurable():
    loss = LOSS.build({"type": "relativistic_hinge", "margin": 2.0})
    # r~ = 3 - 0 = 3, f~ = 0 - 3 = -3: both margins of 2 met
    assert loss.d_loss(torch.tensor([3.0]), torch.tensor([0.0])).item() == 0.0
    # G: relu(2 + 3) + relu(2 + 3), halved
    assert loss.g_loss(torch.tensor([3.0]), torch.tensor([0.0])).item() == pytest.approx(5.0)


def test_every_builtin_loss_has_a_formula_test():
    builtins = {e.name for e in LOSS.list() if e.source == "builtin"}
    assert builtins == set(PLAIN) | set(RELATIVISTIC)


@pytest.mark.parametrize("name", ["non_saturating", "minimax"])
def test_softplus_forms_are_stable_for_huge_logits(name):
    loss = LOSS.build(name)
    big = torch.tensor([200.0, -200.0, 1e4, -1e4], requires_grad=True)
    d = loss.d_loss(big, big)
    g = loss.g_loss(None, big)
    # exact values: softplus(-x) + softplus(x) = |x| + 2 log(1 + e^-|x|) ~ |x|
    assert d.item() == pytest.approx(big.detach().abs().mean().item(), rel=1e-6)
    assert torch.isfinite(g)
    (grad,) = torch.autograd.grad(d + g, big)
    assert torch.isfinite(grad).all()


def test_hinge_d_loss_is_zero_when_margins_are_met():
    loss = LOSS.build("hinge")
    real = torch.tensor([1.0, 1.5, 7.0], requires_grad=True)
    fake = torch.tensor([-1.0, -2.0, -30.0], requires_grad=True)
    d = loss.d_loss(real, fake)
    assert d.item() == 0.0
    d.backward()
    assert (real.grad == 0).all() and (fake.grad == 0).all()
    # one margin violated by 0.25: only that logit is penalised, by 0.25 / n
    assert loss.d_loss(torch.tensor([0.75, 2.0]), torch.tensor([-3.0])).item() == pytest.approx(0.125)


def test_hinge_margin_is_configurable():
    loss = LOSS.build({"type": "hinge", "margin": 2.0})
    assert loss.d_loss(torch.tensor([1.0]), torch.tensor([-2.0])).item() == pytest.approx(1.0)


def test_least_squares_targets_are_configurable():
    loss = LOSS.build({"type": "least_squares", "fake_target": -1.0, "real_target": 1.0, "gen_target": 0.0})
    assert loss.d_loss(torch.tensor([1.0]), torch.tensor([-1.0])).item() == 0.0
    assert loss.g_loss(None, torch.tensor([2.0])).item() == pytest.approx(2.0)


def test_losses_compute_in_fp32_under_bf16_autocast():
    real, fake = _logits(8)
    for entry in LOSS.list():
        loss = LOSS.build(entry.name)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            d = loss.d_loss(real.bfloat16(), fake.bfloat16())
            g = loss.g_loss(real.bfloat16(), fake.bfloat16())
        assert d.dtype == g.dtype == torch.float32, entry.name
        expect = loss.d_loss(real.bfloat16().float(), fake.bfloat16().float())
        assert d.item() == pytest.approx(expect.item(), rel=1e-6), entry.name


def test_empty_logits_are_a_clear_error():
    with pytest.raises(ValueError, match="logits are empty"):
        LOSS.build("hinge").g_loss(None, torch.zeros(0))


# ----------------------------------------------------------------------------- regularizers
class LinearCritic(nn.Module):
    """D(x) = w . x (+ b): its input gradient is w everywhere, so ||grad|| = ||w||."""

    def __init__(self, shape: tuple[int, ...], seed: int = 0, scale: float = 1.0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.w = nn.Parameter(torch.randn(shape, generator=g) * scale)
        self.b = nn.Parameter(torch.tensor(0.3))
        self.seen: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        self.seen.append(x.detach().clone())
        return (x * self.w).flatten(1).sum(1) + self.b


SHAPE = (3, 4, 4)


def _batch(n: int = 5, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, *SHAPE, generator=g), torch.randn(n, *SHAPE, generator=g)


@pytest.mark.parametrize("scale", [0.01, 0.3, 2.0])
def test_gradient_penalty_on_a_linear_critic_is_analytic(scale):
    D = LinearCritic(SHAPE, scale=scale)
    real, fake = _batch()
    norm = D.w.detach().double().norm().item()
    gp = REGULARIZER.build("gradient_penalty").penalty(D, real, fake, None)
    assert gp.dim() == 0 and gp.dtype == torch.float32
    assert gp.item() == pytest.approx(10.0 * (norm - 1.0) ** 2, rel=1e-4)
    gp.backward()  # d/dw 10 (||w|| - 1)^2 = 20 (||w|| - 1) w / ||w||
    expect = 20.0 * (norm - 1.0) * D.w.detach().double() / norm
    torch.testing.assert_close(D.w.grad.double(), expect, rtol=1e-4, atol=1e-6)


def test_gradient_penalty_weight_and_target():
    D = LinearCritic(SHAPE, scale=0.5)
    real, fake = _batch()
    norm = D.w.detach().double().norm().item()
    gp = REGULARIZER.build({"type": "gradient_penalty", "weight": 3.0, "target": 2.0}).penalty(D, real, fake, None)
    assert gp.item() == pytest.approx(3.0 * (norm - 2.0) ** 2, rel=1e-4)


def test_gradient_penalty_evaluates_d_on_random_points_of_each_real_fake_segment():
    D = LinearCritic(SHAPE)
    real, fake = _batch(n=64)
    torch.manual_seed(0)
    REGULARIZER.build("gradient_penalty").penalty(D, real, fake, None)
    (x_hat,) = D.seen
    # x_hat_i = real_i + t_i (fake_i - real_i), one t_i per sample, t_i in [0, 1]
    diff = (fake - real).flatten(1)
    t = ((x_hat - real).flatten(1) * diff).sum(1) / diff.square().sum(1)
    torch.testing.assert_close(x_hat, real + t.view(-1, 1, 1, 1) * (fake - real), rtol=1e-5, atol=1e-5)
    assert (t >= 0).all() and (t <= 1).all()
    assert t.std() > 0.1  # random, not a fixed mid-point


def test_gradient_penalty_on_a_quadratic_critic_matches_plain_formula():
    # D(x) = 0.5 ||x||^2 has grad x: the penalty is 10 * mean((||x_hat|| - 1)^2) at the interpolates
    class Quadratic(nn.Module):
        def __init__(self):
            super().__init__()
            self.seen = []

        def forward(self, x, y=None):
            self.seen.append(x.detach().double())
            return 0.5 * x.flatten(1).square().sum(1)

    D = Quadratic()
    real, fake = _batch(n=6)
    real, fake = real * 0.2, fake * 0.2
    gp = REGULARIZER.build("gradient_penalty").penalty(D, real, fake, None)
    norms = D.seen[0].flatten(1).norm(dim=1)
    assert gp.item() == pytest.approx((10.0 * (norms - 1) ** 2).mean().item(), rel=1e-5)


@pytest.mark.parametrize("gamma", [10.0, 0.5])
def test_r1_on_a_linear_critic_is_analytic(gamma):
    D = LinearCritic(SHAPE, scale=0.7)
    real, fake = _batch()
    reg = REGULARIZER.build({"type": "r1", "gamma": gamma})
    assert reg.needs_real_grad is True
    r1 = reg.penalty(D, real, fake, None)
    sq = D.w.detach().double().square().sum().item()
    assert r1.item() == pytest.approx(gamma / 2 * sq, rel=1e-5)
    torch.testing.assert_close(D.seen[0], real)  # evaluated on the real images only
    r1.backward()  # d/dw gamma/2 ||w||^2 = gamma w
    torch.testing.assert_close(D.w.grad, gamma * D.w.detach(), rtol=1e-5, atol=1e-6)


def test_r1_on_a_quadratic_critic_uses_each_samples_own_gradient():
    # D(x) = 0.5 ||x||^2: grad_i = x_i, so R1 = gamma/2 * mean_i ||x_i||^2
    real, fake = _batch(n=4)
    r1 = REGULARIZER.build("r1").penalty(lambda x, y: 0.5 * x.flatten(1).square().sum(1), real, fake, None)
    expect = 5.0 * real.double().flatten(1).square().sum(1).mean().item()
    assert r1.item() == pytest.approx(expect, rel=1e-5)


def test_regularizers_pass_labels_to_d_and_leave_inputs_alone():
    seen = []

    def D(x, y):
        seen.append(y)
        return x.flatten(1).sum(1)

    real, fake = _batch(n=3)
    real0, fake0 = real.clone(), fake.clone()
    y = torch.tensor([0, 2, 1])
    for name in ("gradient_penalty", "r1"):
        REGULARIZER.build(name).penalty(D, real, fake, y)
    assert all(s is y for s in seen) and len(seen) == 2
    assert torch.equal(real, real0) and torch.equal(fake, fake0) and not real.requires_grad


def test_no_regularizer_is_zero():
    reg = REGULARIZER.build("none")
    assert reg.needs_real_grad is False
    real, fake = _batch()
    p = reg.penalty(LinearCritic(SHAPE), real, fake, None)
    assert p.item() == 0.0 and p.dim() == 0


# ----------------------------------------------------------------------------- LeCam
def _never_called(x, y=None):
    raise AssertionError("D must not run: the penalty was handed D's logits")


def _lecam_plain(r, f, ema_r, ema_f, weight, one_sided=True):
    """weight * (mean relu(r - ema_f)^2 + mean relu(ema_r - f)^2), element by element in float64."""
    act = (lambda v: max(v, 0.0)) if one_sided else (lambda v: v)
    above = sum(act(float(v) - ema_f) ** 2 for v in r.double()) / len(r)
    below = sum(act(ema_r - float(v)) ** 2 for v in f.double()) / len(f)
    return weight * (above + below)


@pytest.mark.parametrize("one_sided", [True, False])
def test_lecam_matches_its_formula_with_zero_debiased_moving_averages(one_sided):
    reg = REGULARIZER.build({"type": "lecam", "weight": 0.3, "decay": 0.9, "one_sided": one_sided})
    assert (reg.uses_logits, reg.stateful, reg.graph_safe, reg.runs_d, reg.needs_real_grad) == (True, True, True, False, False)
    batches = [_logits(n=6, seed=s) for s in (5, 6, 7)]
    biased_r = biased_f = 0.0
    for t, (r, f) in enumerate(batches, start=1):
        # each call first folds this batch's means in: a moving average started at 0, divided by 1 - d^t
        biased_r = 0.9 * biased_r + 0.1 * r.double().mean().item()
        biased_f = 0.9 * biased_f + 0.1 * f.double().mean().item()
        ema_r, ema_f = biased_r / (1 - 0.9**t), biased_f / (1 - 0.9**t)
        p = reg.penalty(_never_called, None, None, None, real_logits=r, fake_logits=f)
        assert p.dtype == torch.float32 and p.dim() == 0
        assert p.item() == pytest.approx(_lecam_plain(r, f, ema_r, ema_f, 0.3, one_sided), rel=1e-5, abs=1e-6)
        if t == 1:  # the first average is the batch's own mean
            assert reg.ema_real.item() / (1 - 0.9) == pytest.approx(r.double().mean().item(), rel=1e-5)


def test_lecam_anchors_pull_reals_down_and_fakes_up_and_reach_d():
    reg = REGULARIZER.build("lecam")
    D = LinearCritic(SHAPE, scale=0.3)
    real, fake = _batch(n=8)
    p = reg.penalty(D, real, fake, None)  # computes D's logits itself without them
    assert len(D.seen) == 2 and p.item() > 0
    r = D(real).detach().requires_grad_(True)
    f = D(fake).detach().requires_grad_(True)
    fresh = REGULARIZER.build("lecam")
    gr, gf = torch.autograd.grad(fresh.penalty(None, real, fake, None, real_logits=r, fake_logits=f), (r, f))
    assert (gr >= 0).all() and (gf <= 0).all()  # lowering real outputs / raising fake outputs lowers it
    p.backward()
    assert D.w.grad is not None and float(D.w.grad.abs().sum()) > 0


def test_lecam_state_round_trips_and_holds_the_averages():
    reg = REGULARIZER.build("lecam")
    for seed in (1, 2):
        r, f = _logits(n=4, seed=seed)
        reg.penalty(None, None, None, None, real_logits=r, fake_logits=f)
    state = reg.state_dict()
    assert set(state) == {"ema_real", "ema_fake", "decay_power"}
    assert all(v.dtype == torch.float32 and v.dim() == 0 for v in state.values())
    assert state["decay_power"].item() == pytest.approx(0.99**2)
    other = REGULARIZER.build("lecam")
    other.load_state_dict(state)
    r, f = _logits(n=4, seed=3)
    assert torch.equal(reg.penalty(None, None, None, None, real_logits=r, fake_logits=f),
                       other.penalty(None, None, None, None, real_logits=r, fake_logits=f))


# ----------------------------------------------------------------------------- bCR
def test_bcr_with_an_always_flip_on_a_linear_critic_is_analytic():
    # D(x) = w.x + b, T = mirror: D(x) - D(T(x)) = (w - mirror(w)).x per image
    reg = REGULARIZER.build({"type": "bcr", "weight_real": 3.0, "weight_fake": 0.5, "transforms": [{"type": "flip", "p": 1.0}]})
    assert (reg.uses_logits, reg.runs_d, reg.graph_safe, reg.needs_real_grad) == (True, True, True, False)
    D = LinearCritic(SHAPE, scale=0.4)
    real, fake = _batch(n=5)
    diff_w = (D.w - D.w.flip(-1)).detach().double()
    per_real = (real.double() * diff_w).flatten(1).sum(1)
    per_fake = (fake.double() * diff_w).flatten(1).sum(1)
    expect = 3.0 * per_real.square().mean().item() + 0.5 * per_fake.square().mean().item()
    p = reg.penalty(D, real, fake, None)
    assert p.item() == pytest.approx(expect, rel=1e-4)
    assert [len(x) for x in D.seen] == [20]  # D(x), D(G(z)), D(T(x)), D(T(G(z))): one forward
    D.seen.clear()
    r, f = D(real), D(fake)
    D.seen.clear()
    given = reg.penalty(D, real, fake, None, real_logits=r, fake_logits=f)
    assert given.item() == pytest.approx(expect, rel=1e-4)
    assert [len(x) for x in D.seen] == [10]  # handed D's logits: only T(x), T(G(z))
    given.backward()  # through both outputs: D(x) and D(T(x)) (no stop-gradient)
    torch.testing.assert_close(D.w.grad.double(), _bcr_grad(real, fake, diff_w, 3.0, 0.5), rtol=1e-4, atol=1e-6)


def _bcr_grad(real, fake, diff_w, wr, wf):
    """d/dw of wr mean((w - flip w).x)^2 + wf (same for fakes): 2 w_ mean(c_i (x_i - flip x_i))."""
    out = torch.zeros_like(diff_w)
    for weight, xs in ((wr, real.double()), (wf, fake.double())):
        c = (xs * diff_w).flatten(1).sum(1)
        out += weight * 2 * (c.view(-1, 1, 1, 1) * (xs - xs.flip(-1))).mean(0)
    return out


def test_bcr_is_zero_for_an_identity_transform_and_passes_labels_four_times():
    seen = []

    def D(x, y):
        seen.append(y)
        return x.flatten(1).sum(1)

    reg = REGULARIZER.build({"type": "bcr", "transforms": [{"type": "translation", "ratio": 0.0}]})
    real, fake = _batch(n=3)
    y = torch.tensor([0, 2, 1])
    assert reg.penalty(D, real, fake, y).item() == 0.0
    assert torch.equal(seen[0], torch.cat([y, y, y, y]))
    default = REGULARIZER.build("bcr")
    assert [t.type for t in default.cfg.transforms] == ["flip", "translation"]
    assert default.cfg.weight_real == default.cfg.weight_fake == 10.0


def test_gradient_penalty_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="same shape"):
        REGULARIZER.build("gradient_penalty").penalty(LinearCritic(SHAPE), *_batch(n=2)[:1], torch.zeros(3, *SHAPE), None)


@pytest.mark.parametrize("spec,msg", [
    ({"type": "lecam", "decay": 1.0}, "decay"),
    ({"type": "lecam", "weight": -0.1}, "weight"),
    ({"type": "bcr", "transforms": []}, "transforms"),
    ({"type": "bcr", "transforms": ["flp"]}, "did you mean 'flip'"),
    ({"type": "relativistic_hinge", "margin": 0}, "margin"),
    ({"type": "r1", "gamma": -1}, "gamma"),
    ({"type": "gradient_penalty", "weight": -2}, "weight"),
    ({"type": "hinge", "margin": 0}, "margin"),
])
def test_config_bounds(spec, msg):
    kind = REGULARIZER if spec["type"] in REGULARIZER else LOSS
    with pytest.raises(ValidationError, match=msg):
        kind.build(spec)
