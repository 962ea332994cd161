"""``fused_resample``: the ResNet blocks' resampling folded into their convs computes what the plain
blocks compute (same weights, same inputs), for outputs and for gradients w.r.t. inputs and parameters.

The reference is the plain block or network in float64. The fused one must match it to ~1e-10 in
float64 (the identities are exact in real arithmetic, so only rounding differs) and within float32
rounding in float32; under bf16 autocast and channels_last within bf16 rounding. Spectral norm's
power iteration must run exactly once per forward, as in the plain block (same ``u``, ``v`` after).
Spectral norm computes in float32 whatever the dtype, so the gradients of its raw weights
(``parametrizations.weight.original``) are float32-rounded in a float64 model too: they get the
float32 tolerance.
"""
from __future__ import annotations

import copy
import functools

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from conftest import tiny_recipe
from ganzoo.models._layers import DBlock, GBlock, Layers, shifted_sum
from ganzoo.recipe import Recipe
from ganzoo.registry import NORM
from ganzoo.training.build import build_discriminator, build_generator

pytestmark = pytest.mark.usefixtures("one_cpu_thread")

SETTINGS = settings(max_examples=30, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])
TOL64 = 1e-10  # fused float64 vs plain float64
TOL32 = 1e-5   # fused float32 vs plain float64 (float32 rounding, relative to the tensor's largest entry)


def _perturb_zeros(module: nn.Module, seed: int) -> None:
    """Random values for the zero-initialised parameters (biases, attention gamma), so they are tested."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            if not p.any():
                p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.3)


def _pair(make, seed: int) -> tuple[nn.Module, nn.Module]:
    """(plain, fused) modules from ``make(fused_resample)`` with the plain one's weights and buffers."""
    torch.manual_seed(seed)
    plain = make(False)
    _perturb_zeros(plain, seed)
    fused = make(True)
    assert list(fused.state_dict()) == list(plain.state_dict())
    fused.load_state_dict(plain.state_dict())  # strict: same names and shapes
    return plain.train(), fused.train()


def _run(model: nn.Module, inputs: list, cotangent_seed: int):
    """Output, input gradient, parameter gradients and buffers after one forward/backward."""
    model.zero_grad(set_to_none=True)
    dtype = next(model.parameters()).dtype
    x = inputs[0].to(dtype).detach().requires_grad_(True)
    out = model(x, *inputs[1:])
    g = torch.Generator().manual_seed(cotangent_seed)
    cot = torch.randn(out.shape, generator=g, dtype=torch.float64).to(out.dtype)
    (out * cot).sum().backward()
    grads = {n: p.grad for n, p in model.named_parameters()}
    return out.detach(), x.grad, grads, {n: b.detach().clone() for n, b in model.named_buffers()}


def _err(a: torch.Tensor, ref: torch.Tensor) -> float:
    """Largest difference relative to the reference's largest entry (at least 1)."""
    return ((a.double() - ref.double()).abs().max() / ref.double().abs().max().clamp_min(1.0)).item()


def _errors(result, ref) -> dict[str, float]:
    """Error of every compared tensor: output, input gradient, parameter gradients, float buffers
    (spectral norm's u and v after one power iteration, batch-norm running statistics)."""
    out, xg, grads, bufs = result
    r_out, r_xg, r_grads, r_bufs = ref
    assert out.shape == r_out.shape and grads.keys() == r_grads.keys() and bufs.keys() == r_bufs.keys()
    errs = {"output": _err(out, r_out), "input gradient": _err(xg, r_xg)}
    for n, g in r_grads.items():
        assert (grads[n] is None) == (g is None), n
        if g is not None:
            errs[f"gradient of {n}"] = _err(grads[n], g)
    for n, b in r_bufs.items():
        if b.is_floating_point():
            errs[f"buffer {n}"] = _err(bufs[n], b)
        else:
            assert torch.equal(bufs[n], b), n  # batch counters
    return errs


def _check(make, inputs: list, seed: int, what: str) -> None:
    """fused float64 == plain float64 to TOL64 (float32-rounded parts: TOL32); fused float32 within
    float32 rounding of plain float64: TOL32, or more where plain float32 itself is further off (batch
    norm over a few values amplifies rounding in deep G's), but never more than 4x as far."""
    plain, fused = _pair(make, seed)
    ref = _run(copy.deepcopy(plain).double(), inputs, seed)
    f64 = _errors(_run(copy.deepcopy(fused).double(), inputs, seed), ref)
    for n, e in f64.items():
        in_fp32 = n.endswith(".original") or "parametrizations" in n  # spectral norm computes in float32
        assert e < (TOL32 if in_fp32 else TOL64), f"{what} float64: {n} off by {e:.3g}"
    p32 = _errors(_run(copy.deepcopy(plain), inputs, seed), ref)
    f32 = _errors(_run(fused, inputs, seed), ref)
    for n, e in f32.items():
        assert e < TOL32 + 4 * p32[n], f"{what} float32: {n} off by {e:.3g} (plain float32: {p32[n]:.3g})"


def _conv(spectral: bool):
    return Layers("spectral" if spectral else "none").which_conv


# --- the kernel identities themselves ------------------------------------------------------------

def test_shifted_sum_is_the_sum_of_the_four_padded_copies():
    w = torch.randn(2, 3, 3, 3, dtype=torch.float64)
    want = sum(F.pad(w, (b, 1 - b, a, 1 - a)) for a in (0, 1) for b in (0, 1))
    torch.testing.assert_close(shifted_sum(w), want, rtol=0, atol=1e-14)  # the order of the sums differs


@pytest.mark.parametrize("channels_last", [False, True])
def test_bf16_autocast_and_channels_last_blocks_match_within_bf16_rounding(channels_last):
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.randn(2, 6, 8, 8)
    for make in (lambda f: GBlock(6, 5, _conv(True), functools.partial(NORM.build, "batch"), True, f),
                 lambda f: DBlock(6, 5, _conv(True), True, True, f),
                 lambda f: DBlock(6, 5, _conv(True), False, True, f)):
        plain, fused = _pair(make, 0)
        ref = copy.deepcopy(plain).double()(x.double())
        fused = fused.to(memory_format=fmt)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = fused(x.to(memory_format=fmt))
        assert out.dtype == torch.bfloat16 and torch.isfinite(out).all()
        assert _err(out, ref) < 3e-2, _err(out, ref)
        if channels_last:
            assert out.is_contiguous(memory_format=torch.channels_last)


# --- blocks ---------------------------------------------------------------------------------------

_block = dict(seed=st.integers(0, 2**16), batch=st.integers(1, 3), cin=st.integers(1, 5), cout=st.integers(1, 5),
              h=st.integers(2, 6), w=st.integers(2, 6), spectral=st.booleans(), resample=st.booleans())


@SETTINGS
@given(**_block, conditional=st.booleans())
def test_gblock_fused_equals_plain(seed, batch, cin, cout, h, w, spectral, resample, conditional):
    if not resample:
        cout = cout if seed % 2 else cin  # half of these have no learnable shortcut
    nc = 3 if conditional else 0
    which_norm = functools.partial(NORM.build, "conditional_batch" if conditional else "batch", num_classes=nc)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, cin, h, w, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (batch,), generator=g) if conditional else None
    if batch == 1 and h * w * (4 if resample else 1) < 2:
        return  # batch norm needs two values per channel
    _check(lambda f: GBlock(cin, cout, _conv(spectral), which_norm, resample, f), [x, y], seed,
           f"GBlock({cin}, {cout}, up={resample}, sn={spectral}, cond={conditional}) on {tuple(x.shape)}")


@SETTINGS
@given(**_block, preactivation=st.booleans())
def test_dblock_fused_equals_plain(seed, batch, cin, cout, h, w, spectral, resample, preactivation):
    if not resample:
        cout = cout if seed % 2 else cin
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, cin, h, w, generator=g, dtype=torch.float64)  # odd sides too: pooling floors
    _check(lambda f: DBlock(cin, cout, _conv(spectral), preactivation, resample, f), [x], seed,
           f"DBlock({cin}, {cout}, pre={preactivation}, down={resample}, sn={spectral}) on {tuple(x.shape)}")


def test_blocks_without_learnable_shortcut_are_covered():
    conv = _conv(True)
    assert GBlock(4, 4, conv, functools.partial(NORM.build, "batch"), False, True).conv_sc is None
    assert DBlock(4, 4, conv, True, False, True).conv_sc is None


@pytest.mark.parametrize("fused", [False, True])
def test_fused_blocks_run_no_pooling_or_upsampling(fused):
    """Folded, the up-/down-sampling blocks (main path and 1x1 shortcut) run only convolutions where the
    plain ones pool and up-sample: no such op in the forward or the backward."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Ops(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.names: set[str] = set()

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.names.add(func.__name__.split(".")[0])
            return func(*args, **(kwargs or {}))

    G = GBlock(3, 4, _conv(True), functools.partial(NORM.build, "batch"), True, fused)
    D = DBlock(3, 4, _conv(True), True, True, fused)
    first = DBlock(3, 4, _conv(True), False, True, fused)  # D's first block: no pre-activation
    for block, side in ((G, 4), (D, 8), (first, 8)):
        x = torch.randn(2, 3, side, side, requires_grad=True)
        with Ops() as ops:
            block(x).square().sum().backward()
        resampling = {n for n in ops.names if "pool" in n or "upsample" in n}
        assert (resampling == set()) == fused, (type(block).__name__, sorted(ops.names))


def test_fused_resample_refuses_a_weight_computed_by_a_forward_pre_hook():
    hooked = lambda i, o, k=3: nn.utils.spectral_norm(nn.Conv2d(i, o, k, padding=k // 2))  # noqa: E731
    with pytest.raises(ValueError, match="fused_resample"):
        DBlock(3, 4, hooked, True, True, True)
    with pytest.raises(ValueError, match="fused_resample"):
        GBlock(3, 4, hooked, functools.partial(NORM.build, "batch"), True, True)
    DBlock(3, 4, hooked, True, True, False)  # plain blocks call the layer: fine


# --- whole networks from a recipe -----------------------------------------------------------------

def _recipe(fused: bool, **overrides) -> Recipe:
    part = {"fused_resample": fused}
    return Recipe.model_validate(tiny_recipe(generator=part, discriminator=part, train={"steps": 1},
                                              **overrides))


@pytest.mark.parametrize("overrides", [{}, {"resolution": 64, "num_classes": 0}], ids=["32-cond", "64-uncond"])
def test_networks_fused_equal_plain(overrides):
    plain_recipe = _recipe(False, **overrides)
    assert _recipe(True, **overrides).generator.fused_resample
    nc, res = plain_recipe.num_classes, plain_recipe.resolution
    g = torch.Generator().manual_seed(1)
    z = torch.randn(3, plain_recipe.generator.z_dim, generator=g, dtype=torch.float64)
    x = torch.rand(3, 3, res, res, generator=g, dtype=torch.float64) * 2 - 1
    y = torch.randint(0, nc, (3,), generator=g) if nc else None
    _check(lambda f: build_generator(_recipe(f, **overrides)), [z, y], 1, f"G {overrides}")
    _check(lambda f: build_discriminator(_recipe(f, **overrides)), [x, y], 1, f"D {overrides}")


def test_state_dicts_are_the_same_either_way():
    for build in (build_generator, build_discriminator):
        torch.manual_seed(0)
        plain = build(_recipe(False))
        torch.manual_seed(0)
        fused = build(_recipe(True))
        a, b = plain.state_dict(), fused.state_dict()
        assert list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)
        plain.load_state_dict(b)


def test_blocks_take_their_resampling_as_a_strategy():
    """The resampling is a strategy given to the block (plain, folded, or a user's), not a branch in
    its forward: a strategy passed in is what the block calls, for the conv and the shortcut."""
    from ganzoo.models._layers import Resampling, Upsample, resampling

    calls = []

    class Counting(Upsample):
        def conv(self, layer, h):
            calls.append("conv")
            return super().conv(layer, h)

        def shortcut(self, layer, x):
            calls.append("shortcut")
            return super().shortcut(layer, x)

    block = GBlock(3, 4, _conv(False), functools.partial(NORM.build, "batch"), True, resample=Counting())
    assert block(torch.randn(2, 3, 4, 4)).shape == (2, 4, 8, 8) and calls == ["conv", "shortcut"]
    assert block.upsample and not block.fused_resample
    assert type(resampling("up", fused=True)).__name__ == "FoldedUpsample"
    assert type(resampling("down", pool_first=True)).__name__ == "PoolFirstDownsample"
    assert type(resampling(None)) is Resampling
    with pytest.raises(ValueError, match="direction"):
        resampling("sideways")
