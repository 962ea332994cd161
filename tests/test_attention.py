"""Unit tests of the SAGAN attention blocks: structure, options, and the maths against transcriptions."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError
from torch import nn

from ganzoo.norms._weights import reference_bias, reference_weight
from ganzoo.norms.spectral import is_spectral
from ganzoo.ops.attention import BACKENDS
from ganzoo.registry import ATTENTION
from ganzoo.testing import check_attention_block, check_permutation_equivariance

# backends that run on CPU ('triton' is CUDA-only, see ganzoo/ops/attention.py)
CPU_BACKENDS = [b for b in BACKENDS if b != "triton"]


pytestmark = pytest.mark.usefixtures("one_cpu_thread")  # see conftest.py


def _convs(block: nn.Module) -> dict[str, nn.Conv2d]:
    return {n: m for n, m in block.named_modules() if isinstance(m, nn.Conv2d)}


def _with_gamma(block: nn.Module, value: float = 0.7) -> nn.Module:
    with torch.no_grad():
        block.gamma.fill_(value)
    return block


# ----------------------------------------------------------------------------- structure
@pytest.mark.parametrize("channels", [8, 16, 24, 64])
def test_official_sagan_structure(channels):
    block = ATTENTION.build("sagan", channels)
    convs = _convs(block)
    assert sorted(convs) == ["key", "out", "query", "value"]
    expected = {"query": (channels, channels // 8), "key": (channels, channels // 8),
                "value": (channels, channels // 2), "out": (channels // 2, channels)}
    for name, conv in convs.items():
        assert (conv.in_channels, conv.out_channels) == expected[name], name
        assert conv.kernel_size == (1, 1) and conv.bias is None, name
        assert is_spectral(conv), f"{name} is not spectrally normalised"
    assert block.gamma.shape == () and block.gamma.item() == 0.0
    c8, c2 = channels // 8, channels // 2
    n_params = sum(p.numel() for p in block.parameters())
    assert n_params == 2 * channels * c8 + channels * c2 + c2 * channels + 1
    assert block.scale is None  # no 1/sqrt(d)
    assert not block.permutation_equivariant  # max-pooling


def test_official_sagan_xavier_init():
    block = ATTENTION.build("sagan", 32)
    for name, conv in _convs(block).items():
        w = conv.parametrizations.weight.original
        bound = math.sqrt(6.0 / (conv.in_channels + conv.out_channels))
        assert w.abs().max() <= bound, name
        assert w.abs().max() > 0.5 * bound, name  # not some narrower init


def test_sagan_options_change_structure():
    block = ATTENTION.build({"type": "sagan", "spectral_norm": False, "qk_reduction": 4, "v_reduction": 1}, 16)
    convs = _convs(block)
    assert not any(is_spectral(c) for c in convs.values())
    assert convs["query"].out_channels == 4 and convs["value"].out_channels == 16
    assert ATTENTION.build({"type": "sagan", "scale": True}, 16).scale == pytest.approx(1 / math.sqrt(2))


@pytest.mark.parametrize("channels", [8, 16, 40])
def test_sagan_full_structure(channels):
    block = ATTENTION.build("sagan_full", channels)
    convs = _convs(block)
    assert sorted(convs) == ["key", "query", "value"]
    c8 = channels // 8
    assert (convs["query"].out_channels, convs["key"].out_channels, convs["value"].out_channels) == (c8, c8, channels)
    assert all(c.bias is not None and not is_spectral(c) for c in convs.values())
    assert block.gamma.shape == (1,) and not block.gamma.any()
    n_params = sum(p.numel() for p in block.parameters())
    assert n_params == 2 * (channels * c8 + c8) + channels * channels + channels + 1
    sn = ATTENTION.build({"type": "sagan_full", "spectral_norm": True}, channels)
    assert all(is_spectral(c) for c in _convs(sn).values())


@pytest.mark.parametrize("name", ["sagan", "sagan_full"])
def test_gamma_zero_is_identity(name):
    block = ATTENTION.build(name, 16)
    x = torch.randn(2, 16, 4, 6)
    assert torch.equal(block(x), x)


# ----------------------------------------------------------------------------- config and errors
def test_config_fields_documented_and_bounded():
    for name in ("sagan", "sagan_full"):
        cfg = ATTENTION.get(name).config
        for field, info in cfg.model_fields.items():
            if field != "type":
                assert info.description, f"{name}.{field} has no description"
        with pytest.raises(ValidationError):
            cfg(qk_reduction=0)
        with pytest.raises(ValidationError, match="unknown attention backend 'bogus'; known: auto"):
            cfg(backend="bogus")
        with pytest.raises(ValidationError):
            cfg.model_validate({"type": name, "reduction": 8})  # unknown field
    assert ATTENTION.get("sagan").doc.startswith("Self-attention exactly as the official SAGAN")
    assert ATTENTION.get("sagan_full").doc


def test_clear_errors():
    with pytest.raises(ValueError, match=r"query/key channels 4 // 8 is 0; use channels >= 8"):
        ATTENTION.build("sagan", 4)
    block = ATTENTION.build("sagan", 8)
    with pytest.raises(ValueError, match="needs even H and W, got 5x4"):
        block(torch.randn(1, 8, 5, 4))
    with pytest.raises(ValueError, match=r"expects \[B, 8, H, W\], got \[1, 16, 4, 4\]"):
        block(torch.randn(1, 16, 4, 4))
    # without pooling, odd sizes are fine
    nopool = ATTENTION.build({"type": "sagan", "pool": False}, 8)
    assert nopool(torch.randn(1, 8, 5, 3)).shape == (1, 8, 5, 3)


# ----------------------------------------------------------------------------- maths
def _official_tf_transcription(block, x: torch.Tensor) -> torch.Tensor:
    """sn_non_local_block_sim as the official TF code writes it, channels-last, in float64."""
    b, c, h, w = x.shape
    xs = x.to(torch.float64).permute(0, 2, 3, 1)  # NHWC
    wq, wk, wv, wo = (reference_weight(m).flatten(1) for m in (block.query, block.key, block.value, block.out))
    theta = (xs @ wq.t()).reshape(b, h * w, -1)
    phi = (xs @ wk.t()).permute(0, 3, 1, 2)
    phi = F.max_pool2d(phi, 2, 2).permute(0, 2, 3, 1).reshape(b, h * w // 4, -1)
    attn = torch.softmax(theta @ phi.transpose(1, 2), dim=-1)
    g = (xs @ wv.t()).permute(0, 3, 1, 2)
    g = F.max_pool2d(g, 2, 2).permute(0, 2, 3, 1).reshape(b, h * w // 4, -1)
    attn_g = (attn @ g).reshape(b, h, w, -1) @ wo.t()
    out = xs + block.gamma.detach().double() * attn_g
    return out.permute(0, 3, 1, 2)


def _snippet_transcription(block, x: torch.Tensor) -> torch.Tensor:
    """The popular PyTorch snippet's forward (view / permute / bmm), in float64."""
    b, c, h, w = x.shape
    x64 = x.to(torch.float64)

    def conv(m):
        return F.conv2d(x64, reference_weight(m), reference_bias(m))

    proj_query = conv(block.query).view(b, -1, w * h).permute(0, 2, 1)
    proj_key = conv(block.key).view(b, -1, w * h)
    attention = torch.softmax(torch.bmm(proj_query, proj_key), dim=-1)
    proj_value = conv(block.value).view(b, -1, w * h)
    out = torch.bmm(proj_value, attention.permute(0, 2, 1)).view(b, c, h, w)
    return block.gamma.detach().double() * out + x64


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_sagan_matches_official_transcription(backend):
    torch.manual_seed(0)
    block = _with_gamma(ATTENTION.build({"type": "sagan", "backend": backend}, 16)).eval()
    x = torch.randn(2, 16, 6, 4)
    expected = _official_tf_transcription(block, x)
    torch.testing.assert_close(block.reference(x), expected, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(block(x).double(), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_sagan_full_matches_snippet_transcription(backend):
    torch.manual_seed(0)
    block = _with_gamma(ATTENTION.build({"type": "sagan_full", "backend": backend}, 16)).eval()
    x = torch.randn(2, 16, 5, 3)
    expected = _snippet_transcription(block, x)
    torch.testing.assert_close(block.reference(x), expected, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(block(x).double(), expected, rtol=1e-4, atol=1e-5)


def test_training_forward_steps_spectral_norm_and_reference_predicts_it():
    torch.manual_seed(1)
    block = _with_gamma(ATTENTION.build("sagan", 16))
    x = torch.randn(2, 16, 4, 4)
    u0 = block.query.parametrizations.weight[0].u.clone()
    ref = block.reference(x)  # no side effects
    assert torch.equal(block.query.parametrizations.weight[0].u, u0)
    out = block(x)
    assert not torch.equal(block.query.parametrizations.weight[0].u, u0)
    torch.testing.assert_close(out.double(), ref, rtol=1e-4, atol=1e-5)
    block.eval()
    u1 = block.query.parametrizations.weight[0].u.clone()
    block(x)
    assert torch.equal(block.query.parametrizations.weight[0].u, u1)


def test_scale_option_is_one_over_sqrt_d():
    torch.manual_seed(2)
    plain = ATTENTION.build({"type": "sagan", "spectral_norm": False}, 32).eval()
    scaled = ATTENTION.build({"type": "sagan", "spectral_norm": False, "scale": True}, 32).eval()
    scaled.load_state_dict(plain.state_dict())
    x = torch.randn(1, 32, 4, 4)
    logits = torch.log(plain.reference_attention_map(x))  # equal to Q^T K up to a per-row constant
    expected = torch.softmax(logits / math.sqrt(4), dim=-1)
    torch.testing.assert_close(scaled.reference_attention_map(x), expected, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(scaled.attention_map(x).double(), expected, rtol=1e-4, atol=1e-6)


def test_attention_map_shapes():
    x = torch.randn(2, 16, 6, 4)
    assert ATTENTION.build("sagan", 16).attention_map(x).shape == (2, 24, 6)
    assert ATTENTION.build({"type": "sagan", "pool": False}, 16).attention_map(x).shape == (2, 24, 24)
    assert ATTENTION.build("sagan_full", 16).attention_map(x).shape == (2, 24, 24)


def test_sagan_full_key_bias_gets_no_gradient():
    """softmax cancels the per-row constant q_i . b the key bias adds: it is inert, as declared."""
    torch.manual_seed(3)
    block = _with_gamma(ATTENTION.build("sagan_full", 16).double())
    x = torch.randn(2, 16, 4, 4, dtype=torch.float64)
    (block(x) * torch.randn_like(x)).sum().backward()
    assert block.key.bias.grad.abs().max() < 1e-10 * block.query.bias.grad.abs().max()
    assert "key.bias" in block.gradient_free_parameters


# ----------------------------------------------------------------------------- property checks
@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("sagan", {"pool": False}),
        ("sagan", {"scale": True, "qk_reduction": 4, "v_reduction": 1}),
        ("sagan", {"spectral_norm": False}),
        ("sagan_full", {"spectral_norm": True, "scale": True}),
    ],
    ids=["sagan-nopool", "sagan-scale-reductions", "sagan-nosn", "sagan_full-sn-scale"],
)
def test_option_variants_pass_property_checks(name, options):
    check_attention_block(name, "cpu", torch.float32, cfg=options, max_examples=8)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("name", ["sagan", "sagan_full"])
def test_every_cpu_backend_passes_property_checks(name, backend):
    check_attention_block(name, "cpu", torch.float32, cfg={"backend": backend}, max_examples=5)


def test_permutation_equivariance_holds_without_pooling_and_fails_with_it():
    check_permutation_equivariance("sagan_full", max_examples=8)
    check_permutation_equivariance("sagan", cfg={"pool": False}, max_examples=8)
    with pytest.raises(AssertionError, match="permutation equivariance"):
        check_permutation_equivariance("sagan", channels=(16,), sizes=(4,), max_examples=3, shrink=False)


def test_check_catches_a_wrong_reference():
    """The reference check is live: a block whose forward drifts from its reference is caught."""
    from ganzoo.attention.sagan import SaganAttention
    from ganzoo.registry import Entry

    class Drifting(SaganAttention):
        def forward(self, x):
            return x + (super().forward(x) - x) * 1.001  # still the identity while gamma = 0

    entry = Entry("attention", "drifting", Drifting, ATTENTION.get("sagan").config, "test")
    with pytest.raises(AssertionError, match="vs reference"):
        check_attention_block(entry, "cpu", torch.float32, max_examples=2, shrink=False)


# ----------------------------------------------------------------------------- GPU
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", ["sagan", "sagan_full"])
@pytest.mark.parametrize("backend", [b for b in ("auto", "dense") if b in BACKENDS])
def test_forward_backward_never_synchronise(name, backend):
    block = _with_gamma(ATTENTION.build({"type": name, "backend": backend}, 64).cuda())
    x = torch.randn(2, 64, 16, 16, device="cuda", requires_grad=True)
    block(x)  # warm-up (lazy initialisation may synchronise)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        block(x).square().mean().backward()
    finally:
        torch.cuda.set_sync_debug_mode("default")

