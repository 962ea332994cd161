"""ResNet backbones: shapes and ranges at 32/64/128, the attention/residual slot, conditioning,
parameter counts, initialisation, memory formats, and the recipe checks of their configs."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from ganzoo.config import BlockConfig
from ganzoo.errors import RecipeError
from ganzoo.models._layers import DBlock, GBlock, count_parameters
from ganzoo.models._norm import unconditional
from ganzoo.recipe import load_recipe
from ganzoo.registry import ATTENTION, DISCRIMINATOR, GENERATOR, NORM
from ganzoo.testing.models import one_thread

REPO = Path(__file__).resolve().parents[1]
SAGAN = REPO / "recipes" / "sagan.yaml"
TINY = {"type": "resnet", "ch": 8}


@pytest.fixture(autouse=True)
def _one_thread():
    with one_thread("cpu"):  # tiny CPU models: one thread is faster on shared cores
        yield


def G_(res=32, nc=0, channels=3, **cfg):
    torch.manual_seed(0)
    return GENERATOR.build({**TINY, "z_dim": 16, **cfg}, res, nc, channels)


def D_(res=32, nc=0, channels=3, **cfg):
    torch.manual_seed(0)
    return DISCRIMINATOR.build({**TINY, **cfg}, res, nc, channels)


@pytest.mark.parametrize("res", [32, 64, 128])
@pytest.mark.parametrize("nc", [0, 5])
def test_generator_maps_z_y_to_images_and_d_to_one_logit_each(res, nc):
    G, D = G_(res, nc, attention_resolutions=[]), D_(res, nc, attention_resolutions=[])
    z = torch.randn(2, 16)
    y = torch.tensor([1, 4]) if nc else None
    x = G(z, y)
    assert x.shape == (2, 3, res, res)
    assert x.min() >= -1 and x.max() <= 1 and x.std() > 0.05
    out = D(x, y)
    assert out.shape == (2,) and torch.isfinite(out).all()
    assert G.feature_resolutions() == [8 * 2**i for i in range({32: 3, 64: 4, 128: 5}[res])]


def _slots(model: nn.Module, inp, *args):
    """[(feature side, block class name, in channels, out channels)] of every attention or extra block."""
    seen = []
    attn_types = tuple(e.obj for e in ATTENTION.list() if isinstance(e.obj, type))
    hooks = []
    for stage in model.blocks:
        for block in list(stage)[1:]:  # slot fillers follow the table's block in its stage
            hooks.append(block.register_forward_hook(
                lambda m, a, o: seen.append((o.shape[-1], type(m).__name__, a[0].shape[1], o.shape[1]))))
            assert isinstance(block, attn_types + (GBlock, DBlock))
    model(inp, *args)
    for h in hooks:
        h.remove()
    return seen


def test_attention_appears_exactly_at_the_configured_resolutions():
    G = G_(attention="sagan", attention_resolutions=[8, 32])
    D = D_(attention="sagan", attention_resolutions=[32, 8])
    g = _slots(G, torch.randn(2, 16))
    d = _slots(D, torch.rand(2, 3, 32, 32) * 2 - 1)
    assert [(s, n) for s, n, *_ in g] == [(8, "SaganAttention"), (32, "SaganAttention")]
    assert [(s, n) for s, n, *_ in d] == [(32, "SaganAttention"), (8, "SaganAttention")]  # once, though D has two 8x8 blocks
    # channels at the slot are those of the block before it (G width 4 ch; D 1 ch at 32, 4 ch at 8)
    assert [c for *_, c in g] == [32, 32] and [c for *_, c in d] == [8, 32]
    assert sum(isinstance(m, ATTENTION.get("sagan").obj) for m in D.modules()) == 2


@pytest.mark.parametrize("side", [8, 16, 32])
def test_residual_control_puts_an_extra_block_where_attention_would_be(side):
    att_G, res_G = G_(attention_resolutions=[side]), G_(attention_resolutions=[side], slot="residual")
    att_D, res_D = D_(attention_resolutions=[side]), D_(attention_resolutions=[side], slot="residual")
    none_G, none_D = G_(attention_resolutions=[]), D_(attention_resolutions=[])
    assert [(s, n) for s, n, *_ in _slots(res_G, torch.randn(2, 16))] == [(side, "GBlock")]
    assert [(s, n) for s, n, *_ in _slots(res_D, torch.rand(2, 3, 32, 32))] == [(side, "DBlock")]
    attn = ATTENTION.get("sagan").obj
    for m in (res_G, res_D):
        assert not any(isinstance(x, attn) for x in m.modules())
    assert sum(isinstance(m, GBlock) for m in res_G.modules()) == sum(isinstance(m, GBlock) for m in none_G.modules()) + 1
    assert sum(isinstance(m, DBlock) for m in res_D.modules()) == sum(isinstance(m, DBlock) for m in none_D.modules()) + 1
    assert sum(isinstance(m, attn) for m in att_G.modules()) == sum(isinstance(m, attn) for m in att_D.modules()) == 1
    extra_G = [s[1] for s in res_G.blocks if len(s) > 1][0]
    assert (extra_G.in_channels, extra_G.out_channels, extra_G.upsample) == (32, 32, False)
    extra_D = [s[1] for s in res_D.blocks if len(s) > 1][0]
    assert extra_D.in_channels == extra_D.out_channels and not extra_D.downsample and extra_D.preactivation


def test_unconditional_generator_uses_the_unconditional_norm_counterpart():
    G = G_(nc=0, norm={"type": "conditional_batch", "eps": 1e-3, "momentum": 0.2})
    cbn, bn = NORM.get("conditional_batch").obj, NORM.get("batch").obj
    assert not any(isinstance(m, cbn) for m in G.modules())
    bns = [m for m in G.modules() if isinstance(m, bn)]
    assert len(bns) == 2 * 3 + 1 and all(m.eps == 1e-3 and m.momentum == 0.2 for m in bns)  # fields carried over
    x = G(torch.randn(3, 16))
    assert x.shape == (3, 3, 32, 32)
    assert torch.equal(G.eval()(torch.ones(1, 16), None), G(torch.ones(1, 16), torch.tensor([2])))  # y ignored
    Gc = G_(nc=4)
    assert sum(isinstance(m, cbn) for m in Gc.modules()) == 2 * 3  # the output layer's BN is unconditional
    assert isinstance(Gc.output_norm, bn)
    with pytest.raises(ValueError, match="class-conditional"):
        Gc(torch.randn(2, 16))


def test_unconditional_d_has_no_projection_and_conditional_d_uses_labels():
    assert D_(nc=0).embed is None and D_(nc=7, projection=False).embed is None
    D = D_(nc=7).eval()
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    a, b = D(x, torch.tensor([0, 0])), D(x, torch.tensor([3, 3]))
    assert not torch.allclose(a, b)
    # projection: logit = linear(h) + <embed(y), h>
    h = {}
    D.linear.register_forward_hook(lambda m, i, o: h.update(h=i[0]))
    out = D(x, torch.tensor([1, 5]))
    expect = D.linear(h["h"]).squeeze(1) + (D.embed(torch.tensor([1, 5])) * h["h"]).sum(1)
    torch.testing.assert_close(out, expect)
    with pytest.raises(ValueError, match="pass labels"):
        D(x)


def test_norm_counterparts():
    assert unconditional(NORM.resolve("batch")[1]).type == "batch"
    assert unconditional(NORM.resolve("group")[1]).type == "group"
    assert unconditional(NORM.resolve({"type": "conditional_batch", "eps": 0.01})[1]) == \
        NORM.resolve({"type": "batch", "eps": 0.01})[1]


# ----------------------------------------------------------------------------- parameter counts
def test_parameter_count_of_a_plain_generator_matches_hand_count():
    c, z, nc = 8, 16, 5
    G = G_(nc=nc, attention_resolutions=[], weight_norm="none")
    w = 4 * c  # every G-32 block is 4 ch wide
    linear = z * w * 16 + w * 16
    block = 2 * (2 * nc * w) + 2 * (w * w * 9 + w) + (w * w + w)  # 2 cond BN, 2 convs 3x3, 1x1 shortcut
    out = 2 * w + w * 3 * 9 + 3  # BN + conv to RGB
    assert count_parameters(G) == linear + 3 * block + out
    assert count_parameters(G_(nc=nc, attention_resolutions=[])) == count_parameters(G)  # SN adds buffers only


def test_parameter_count_of_a_plain_discriminator_matches_hand_count():
    c, nc = 8, 5
    D = D_(nc=nc, attention_resolutions=[], weight_norm="none")

    def block(i, o, sc):
        return i * o * 9 + o + o * o * 9 + o + (i * o + o if sc else 0)

    blocks = block(3, c, True) + block(c, 2 * c, True) + block(2 * c, 4 * c, True) + block(4 * c, 4 * c, False)
    assert count_parameters(D) == blocks + (4 * c + 1) + nc * 4 * c


def test_residual_control_adds_one_residual_block_of_parameters():
    base = count_parameters(G_(attention_resolutions=[], weight_norm="none"))
    res = count_parameters(G_(attention_resolutions=[16], slot="residual", weight_norm="none"))
    w = 32
    assert res - base == 2 * (2 * w) + 2 * (w * w * 9 + w)  # 2 BNs and 2 convs, identity shortcut


def test_docs_list_the_parameter_counts_the_code_gives():
    out = subprocess.run([sys.executable, "-m", "ganzoo.models._table"], cwd=REPO, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    docs = (REPO / "docs" / "models.md").read_text()
    for line in out.stdout.splitlines():
        assert line in docs, f"docs/models.md is stale (regenerate with python -m ganzoo.models._table): {line}"


# ----------------------------------------------------------------------------- init, formats, precision
def test_weights_are_orthogonal_at_initialisation():
    G = G_(weight_norm="none", attention_resolutions=[])
    conv = G.blocks[0][0].conv1  # 32 -> 32, 3x3: rows of the [32, 288] matrix are orthonormal
    m = conv.weight.flatten(1)
    torch.testing.assert_close(m @ m.t(), torch.eye(32), atol=1e-5, rtol=0)
    assert (conv.bias == 0).all()
    lin = G.linear.weight  # [512, 16]: columns orthonormal
    torch.testing.assert_close(lin.t() @ lin, torch.eye(16), atol=1e-5, rtol=0)


def test_channels_last_and_bf16_autocast():
    G, D = G_(nc=3).eval(), D_(nc=3).eval()
    z, y = torch.randn(2, 16), torch.tensor([0, 2])
    with torch.no_grad():
        x = G(z, y)
        logits = D(x, y)
        G.to(memory_format=torch.channels_last)
        D.to(memory_format=torch.channels_last)
        x_cl = G(z, y)
        assert x_cl.is_contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(x_cl, x, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(D(x_cl.contiguous(memory_format=torch.channels_last), y), logits,
                                   atol=1e-4, rtol=1e-4)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            xb = G(z, y)
            lb = D(xb, y)
    assert xb.dtype == torch.bfloat16 and (xb.float() - x).abs().max() < 0.1
    assert lb.shape == (2,) and torch.isfinite(lb.float()).all()


def test_bad_inputs_are_clear_errors():
    G, D = G_(), D_()
    with pytest.raises(ValueError, match=r"z must have shape \[B, 16\]"):
        G(torch.randn(2, 8))
    with pytest.raises(ValueError, match=r"x must have shape \[B, 3, 32, 32\]"):
        D(torch.randn(2, 3, 64, 64))
    with pytest.raises(ValueError, match="resolutions 32, 64 and 128, not 48"):
        GENERATOR.build(TINY, 48, 0)
    with pytest.raises(ValueError, match="4 is not a feature-map side of the resnet generator"):
        GENERATOR.build({**TINY, "attention_resolutions": [4]}, 32, 0)


# ----------------------------------------------------------------------------- recipe checks
def _problems(*overrides: str) -> list[str]:
    with pytest.raises(RecipeError) as info:
        load_recipe(SAGAN, list(overrides))
    return info.value.lines()


def test_recipe_checks_name_the_field():
    src = str(SAGAN)
    assert _problems("generator.attention_resolutions=[4]") == [
        f"{src}: generator.attention_resolutions: 4 is not a feature-map side of the resnet generator at "
        "resolution 32 (choose from 8, 16, 32)"]
    assert _problems("discriminator.attention_resolutions=[64]")[0].startswith(
        f"{src}: discriminator.attention_resolutions: 64 is not a feature-map side")
    assert _problems("resolution=48")[:2] == [
        f"{src}: generator.type: the resnet backbones have architectures for resolutions 32, 64 and 128, not 48",
        f"{src}: discriminator.type: the resnet backbones have architectures for resolutions 32, 64 and 128, not 48"]
    assert _problems("generator.attention_resolutions=[16, 16]") == [
        f"{src}: generator.attention_resolutions: 16 listed more than once"]
    assert _problems("generator.ch=0")[0].startswith(f"{src}: generator.ch: ")
    assert _problems("generator.slot=resid")[0].startswith(f"{src}: generator.slot: ")
    # a 64 side exists in G and D at 128 but not in D at 64
    ok = load_recipe(SAGAN, ["resolution=128", "generator.attention_resolutions=[64]",
                             "discriminator.attention_resolutions=[64]", "data.type=image_folder",
                             "data.root=x"])
    assert ok.generator.feature_resolutions(128) == [8, 16, 32, 64, 128]
    assert ok.discriminator.feature_resolutions(128) == [64, 32, 16, 8, 4]


def test_unconditional_recipe_with_the_default_conditional_norm_is_valid():
    r = load_recipe(SAGAN, ["num_classes=0"])
    assert r.generator.norm.type == "conditional_batch"
    G = GENERATOR.build(r.generator.model_copy(update={"ch": 4}), r.resolution, r.num_classes, r.channels)
    assert G(torch.randn(2, r.generator.z_dim)).shape == (2, 3, 32, 32)


def test_conditional_norm_without_counterpart_fails_an_unconditional_recipe():
    from typing import Literal

    class Cfg(BlockConfig):
        type: Literal["conditional_zz_test"] = "conditional_zz_test"

    class CondNorm(nn.Module):
        def __init__(self, cfg, channels, num_classes=0):
            super().__init__()
            self.embed = nn.Embedding(max(num_classes, 1), channels)

        def forward(self, x, y=None):
            return x * self.embed(y)[:, :, None, None]

    NORM.register(Cfg, CondNorm)
    try:
        errors = _problems("num_classes=0", "generator.norm=conditional_zz_test")
        assert errors == [f"{SAGAN}: generator.norm: 'conditional_zz_test' needs class labels but num_classes "
                          "is 0, and it has no unconditional counterpart; choose an unconditional norm such as batch"]
        assert load_recipe(SAGAN, ["generator.norm=conditional_zz_test"]).generator.norm.type == "conditional_zz_test"
    finally:
        NORM.unregister("conditional_zz_test")


def test_shipped_sagan_recipes():
    r = load_recipe(SAGAN)
    # CIFAR-10 optimisation (docs/quality/collapse.md): batch 50, 4 D steps, 2e-4 both, flips, DiffAugment
    assert (r.resolution, r.num_classes, r.loss.type, r.train.batch_size, r.train.d_steps) == (32, 10, "hinge", 50, 4)
    assert r.generator.attention_resolutions == r.discriminator.attention_resolutions == [16]
    assert (r.train.g_optim.lr, r.train.d_optim.lr, r.train.g_optim.betas) == (2e-4, 2e-4, (0.0, 0.999))
    assert r.train.hflip and [a.type for a in r.augment] == ["color", "translation", "cutout"]
    assert r.generator.weight_norm.type == r.discriminator.weight_norm.type == "spectral"
    big = load_recipe(REPO / "recipes" / "imagenet128" / "sagan.yaml")
    assert (big.resolution, big.num_classes, big.generator.ch, big.train.batch_size, big.train.accumulate) == \
        (128, 1000, 64, 256, 2)
    assert big.generator.attention_resolutions == big.discriminator.attention_resolutions == [64]
    # the paper's ImageNet setting stays: TTUR, one D step, no augmentation
    assert (big.train.g_optim.lr, big.train.d_optim.lr, big.train.d_steps) == (1e-4, 4e-4, 1)
    assert not big.train.hflip and big.augment == []
    for k in (8, 16, 32):
        feat = load_recipe(REPO / "recipes" / "ablations" / f"feat{k}.yaml")
        res = load_recipe(REPO / "recipes" / "ablations" / f"residual{k}.yaml")
        for net in ("generator", "discriminator"):
            assert getattr(feat, net).attention_resolutions == getattr(res, net).attention_resolutions == [k]
            assert (getattr(feat, net).slot, getattr(res, net).slot) == ("attention", "residual")
    none = load_recipe(REPO / "recipes" / "ablations" / "none.yaml")
    assert none.generator.attention_resolutions == none.discriminator.attention_resolutions == []
    assert none.train == r.train and none.loss == r.loss
