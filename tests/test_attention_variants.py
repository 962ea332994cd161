"""Issue 20's attention blocks (mhsa, non_local, global_context, squeeze_excitation, cbam): structure,
options, maths against independent formulations, double backward, and the fused kernel on GPU.
The registry-derived property checks (tests/test_properties_layers.py) cover every block too."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError
from torch import nn

from ganzoo.norms._weights import reference_weight
from ganzoo.registry import ATTENTION
from ganzoo.testing import check_attention_block, check_permutation_equivariance

pytestmark = pytest.mark.usefixtures("one_cpu_thread")  # see conftest.py

NEW = ("mhsa", "non_local", "global_context", "squeeze_excitation", "cbam", "efficient", "axial")
GATED = ("mhsa", "non_local", "global_context", "efficient", "axial")  # x + gamma * o, gamma = 0 at the start


def _with_gamma(block: nn.Module, value: float = 0.7) -> nn.Module:
    with torch.no_grad():
        block.gamma.fill_(value)
    return block


@pytest.mark.parametrize("name", NEW)
def test_registered_documented_and_bounded(name):
    entry = ATTENTION.get(name)
    assert entry.doc
    for field, info in entry.config.model_fields.items():
        if field != "type":
            assert info.description, f"{name}.{field} has no description"
    with pytest.raises(ValidationError):
        entry.config.model_validate({"type": name, "bogus": 1})


@pytest.mark.parametrize("name", GATED)
def test_gated_blocks_start_as_the_identity(name):
    block = ATTENTION.build(name, 16)
    assert block.gamma.shape == () and block.gamma.item() == 0.0
    x = torch.randn(2, 16, 4, 6)
    assert torch.equal(block(x), x)


@pytest.mark.parametrize("name", ["squeeze_excitation", "cbam"])
def test_gate_blocks_multiply_and_have_no_gamma(name):
    block = ATTENTION.build(name, 16)
    assert not hasattr(block, "gamma")
    x = torch.randn(2, 16, 4, 6)
    out = block(x)
    assert (out.abs() <= x.abs()).all()  # sigmoid gates in (0, 1)


def test_declared_flags():
    flags = {n: ATTENTION.build(n, 16).permutation_equivariant for n in NEW}
    assert flags == {"mhsa": True, "non_local": True, "global_context": True,
                     "squeeze_excitation": True, "cbam": False, "efficient": True, "axial": False}
    assert not ATTENTION.build({"type": "non_local", "pool": True}, 16).permutation_equivariant
    assert ATTENTION.get("mhsa").config().backend == "sdpa"
    assert ATTENTION.get("non_local").config().backend == "sdpa"


def test_cbam_is_really_not_permutation_equivariant():
    with pytest.raises(AssertionError, match="permutation equivariance"):
        check_permutation_equivariance("cbam", channels=(16,), sizes=(6,), max_examples=3, shrink=False)
    check_permutation_equivariance("global_context", max_examples=4)


@pytest.mark.parametrize(
    "name, options",
    [
        ("mhsa", {"heads": 1}),
        ("mhsa", {"heads": 2, "spectral_norm": True}),
        ("mhsa", {"backend": "dense"}),
        ("non_local", {"pool": True}),
        ("non_local", {"spectral_norm": True, "inner_reduction": 4, "backend": "dense"}),
        ("global_context", {"reduction": 4, "spectral_norm": True}),
        ("squeeze_excitation", {"reduction": 2, "spectral_norm": True}),
        ("cbam", {"kernel_size": 3, "spectral_norm": True}),
        ("efficient", {"head_count": 2, "qk_reduction": 1, "spectral_norm": True}),
        ("axial", {"heads": 2, "backend": "dense", "spectral_norm": True}),
    ],
    ids=["mhsa-1head", "mhsa-2heads-sn", "mhsa-dense", "non_local-pool", "non_local-sn-r4-dense",
         "gc-r4-sn", "se-r2-sn", "cbam-k3-sn", "efficient-2heads-sn", "axial-2heads-dense-sn"],
)
def test_option_variants_pass_property_checks(name, options):
    sizes = (4, 6, 8) if options.get("pool") else (3, 4, 5)
    check_attention_block(name, "cpu", torch.float32, cfg=options, sizes=sizes, max_examples=5)


def test_clear_errors():
    with pytest.raises(ValueError, match="channels 12 is not a positive multiple of heads 8"):
        ATTENTION.build({"type": "mhsa", "heads": 8}, 12)
    with pytest.raises(ValueError, match="needs even H and W, got 5x4"):
        ATTENTION.build({"type": "non_local", "pool": True}, 8)(torch.randn(1, 8, 5, 4))
    with pytest.raises(ValueError, match="odd kernel_size"):
        ATTENTION.build({"type": "cbam", "kernel_size": 4}, 8)
    with pytest.raises(ValidationError, match="unknown attention backend 'bogus'"):
        ATTENTION.get("mhsa").config(backend="bogus")
    for name in NEW:
        with pytest.raises(ValueError, match=r"expects \[B, 8, H, W\], got \[1, 16, 4, 4\]"):
            ATTENTION.build(name, 8)(torch.randn(1, 16, 4, 4))


# ----------------------------------------------------------------------------- maths
def test_mhsa_matches_torch_multihead_attention():
    torch.manual_seed(0)
    c, heads = 16, 4
    block = _with_gamma(ATTENTION.build({"type": "mhsa", "heads": heads}, c)).double()
    x = torch.randn(2, c, 3, 5, dtype=torch.float64)
    tokens = x.flatten(2).permute(2, 0, 1)  # [N, B, C]
    w = [reference_weight(m).flatten(1) for m in (block.query, block.key, block.value, block.out)]
    o, weights = F.multi_head_attention_forward(
        tokens, tokens, tokens, c, heads, torch.cat(w[:3]), None, None, None, False, 0.0, w[3], None,
        training=False, need_weights=True, average_attn_weights=True,
    )
    expected = x + 0.7 * o.permute(1, 2, 0).reshape(x.shape)
    torch.testing.assert_close(block(x), expected)
    torch.testing.assert_close(block.reference(x), expected)
    torch.testing.assert_close(block.attention_map(x).double(), weights, rtol=1e-5, atol=1e-6)


def test_non_local_is_the_papers_embedded_gaussian():
    torch.manual_seed(1)
    block = _with_gamma(ATTENTION.build("non_local", 8)).double()
    assert block.inner == 4 and block.phi.bias is None
    x = torch.randn(2, 8, 4, 3, dtype=torch.float64)
    theta, phi, g = (m(x).flatten(2) for m in (block.theta, block.phi, block.g))
    f = torch.exp(theta.transpose(1, 2) @ phi)
    f = f / f.sum(-1, keepdim=True)  # (1 / C(x)) exp(theta^T phi)
    z = block.w_z((g @ f.transpose(1, 2)).reshape(2, 4, 4, 3))
    torch.testing.assert_close(block(x), x + 0.7 * z)
    torch.testing.assert_close(block.attention_map(x).double(), f, rtol=1e-5, atol=1e-7)


def test_global_context_matches_gcnet_layout():
    torch.manual_seed(2)
    block = _with_gamma(ATTENTION.build({"type": "global_context", "reduction": 4}, 32)).double()
    assert block.hidden == 8 and block.mask.bias is None
    x = torch.randn(2, 32, 5, 4, dtype=torch.float64)
    a = torch.softmax(block.mask(x).flatten(1), -1)
    ctx = torch.einsum("bcn,bn->bc", x.flatten(2), a)[:, :, None, None]
    add = block.fc2(F.relu(F.layer_norm(block.fc1(ctx), [8, 1, 1],
                                      block.norm.weight, block.norm.bias)))
    torch.testing.assert_close(block(x), x + 0.7 * add)
    amap = block.attention_map(x)
    assert amap.shape == (2, 20, 20) and amap.stride(1) == 0  # an expanded view: no N x N storage
    torch.testing.assert_close(amap[:, 7], a.float())


def test_squeeze_excitation_and_cbam_maps():
    x = torch.randn(2, 16, 3, 4)
    se = ATTENTION.build("squeeze_excitation", 16)
    assert se.hidden == 8  # 16 // 16 = 1, raised to min_hidden
    torch.testing.assert_close(se.attention_map(x), torch.full((2, 12, 12), 1 / 12))
    torch.testing.assert_close(se(x), x * se.gates(x))
    cbam = ATTENTION.build("cbam", 16)
    amap = cbam.attention_map(x)
    assert amap.shape == (2, 12, 2) and ((amap > 0) & (amap < 1)).all()
    # the kept share is the spatial gate: out = x' * m_s, so where m_s is small the output is too
    xc, m_s = cbam._gates(x)
    torch.testing.assert_close(amap[..., 0], m_s.flatten(1))


@pytest.mark.parametrize("name", ["mhsa", "non_local"])
@pytest.mark.parametrize("backend", ["sdpa", "dense"])
def test_double_backward_for_gradient_penalties(name, backend):
    """R1 differentiates D's gradient: the fused path must give the dense path's second derivatives."""
    torch.manual_seed(3)
    block = _with_gamma(ATTENTION.build({"type": name, "backend": backend}, 8)).double()
    x = torch.randn(2, 8, 4, 4, dtype=torch.float64, requires_grad=True)
    (gx,) = torch.autograd.grad(block(x).square().sum(), x, create_graph=True)
    gx.square().sum().backward()
    ref_x = x.detach().clone().requires_grad_(True)
    (rg,) = torch.autograd.grad(block.reference(ref_x).square().sum(), ref_x, create_graph=True)
    (rgg,) = torch.autograd.grad(rg.square().sum(), ref_x)
    torch.testing.assert_close(x.grad, rgg)


def test_efficient_is_linear_and_its_map_is_stochastic():
    """The forward never forms q^T k^: it equals the explicit map's product, and G is [d_k, d_v]."""
    torch.manual_seed(4)
    block = _with_gamma(ATTENTION.build({"type": "efficient", "head_count": 2}, 16)).double()
    x = torch.randn(2, 16, 5, 6, dtype=torch.float64)
    q = torch.softmax(block.query(x).reshape(4, 4, 30), dim=1)  # each position's channels
    k = torch.softmax(block.key(x).reshape(4, 4, 30), dim=2)  # each channel over positions
    v = block.value(x).reshape(4, 8, 30)
    o = (v @ (q.transpose(1, 2) @ k).transpose(1, 2)).reshape(x.shape)  # with the N x N map
    torch.testing.assert_close(block(x), x + 0.7 * block.reproject(o))
    amap = block.attention_map(x)
    assert amap.shape == (2, 30, 30) and (amap >= 0).all()
    torch.testing.assert_close(amap.sum(-1), torch.ones(2, 30, dtype=amap.dtype))
    with pytest.raises(ValueError, match="multiples of head_count 3"):
        ATTENTION.build({"type": "efficient", "head_count": 3}, 16)


def test_axial_on_one_row_is_mhsa_and_its_map_factorises():
    torch.manual_seed(5)
    axial = _with_gamma(ATTENTION.build("axial", 16)).double()
    mhsa = _with_gamma(ATTENTION.build("mhsa", 16)).double()
    mhsa.load_state_dict({k: v for k, v in axial.state_dict().items() if not k.endswith("_col.weight")})
    row = torch.randn(2, 16, 1, 7, dtype=torch.float64)  # one row: the column step attends to itself
    torch.testing.assert_close(axial(row), mhsa(row))
    col = torch.randn(2, 16, 6, 1, dtype=torch.float64)  # one column: the row step is the identity
    q, k, v = axial.query_col(col).reshape(2, 4, 4, 6), axial.key_col(col).reshape(2, 4, 4, 6), axial.value(col)
    p = torch.softmax(q.transpose(2, 3) @ k * 0.5, dim=-1)
    o = (v.reshape(2, 4, 4, 6) @ p.transpose(2, 3)).reshape(col.shape)
    torch.testing.assert_close(axial(col), col + 0.7 * axial.out(o))
    x = torch.randn(1, 16, 3, 4, dtype=torch.float64)
    amap = axial.attention_map(x)
    assert amap.shape == (1, 12, 12)
    torch.testing.assert_close(amap.sum(-1), torch.ones(1, 12, dtype=amap.dtype))
    ref = axial.reference(x)
    torch.testing.assert_close(axial(x), ref)


# ----------------------------------------------------------------------------- GPU
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", ["mhsa", "non_local"])
def test_flash_kernel_runs_and_no_n_by_n_matrix(name):
    from torch.nn.attention import SDPBackend, sdpa_kernel

    block = _with_gamma(ATTENTION.build(name, 64)).cuda().bfloat16()
    x = torch.randn(4, 64, 64, 64, device="cuda", dtype=torch.bfloat16)
    with torch.no_grad(), sdpa_kernel([SDPBackend.FLASH_ATTENTION]):  # raises if flash cannot run
        block(x)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    xg = x.clone().requires_grad_(True)
    block(xg).float().square().mean().backward()
    torch.cuda.synchronize()
    n = 64 * 64
    one_matrix = 4 * n * n * 2  # a single [B, N, N] bf16 matrix; the dense path keeps two or more
    assert torch.cuda.max_memory_allocated() - base < one_matrix


# ----------------------------------------------------------------------------- in the backbones
@pytest.mark.parametrize("name", NEW)
def test_each_block_fills_the_slot_of_g_and_d_with_r1s_double_backward(name):
    """The blocks work where recipes put them: G and D at 32 px with the block at 16, D's input
    gradient differentiated again as R1 does."""
    from ganzoo.registry import DISCRIMINATOR, GENERATOR

    torch.manual_seed(0)
    tiny = {"type": "resnet", "ch": 8, "attention": name, "attention_resolutions": [16]}
    G = GENERATOR.build({**tiny, "z_dim": 16}, 32, 0, 3)
    D = DISCRIMINATOR.build(tiny, 32, 0, 3)
    assert sum(isinstance(m, ATTENTION.get(name).obj) for m in (*G.modules(), *D.modules())) == 2
    for m in (*G.modules(), *D.modules()):
        if isinstance(m, ATTENTION.get(name).obj) and hasattr(m, "gamma"):
            _with_gamma(m)
    x = G(torch.randn(2, 16)).detach().requires_grad_(True)
    (g,) = torch.autograd.grad(D(x).sum(), x, create_graph=True)
    g.square().sum().backward()
    block = next(m for m in D.modules() if isinstance(m, ATTENTION.get(name).obj))
    grads = [p.grad for p in block.parameters()]  # R1 reaches the block's parameters, finitely
    assert grads and all(gr is not None and torch.isfinite(gr).all() for gr in grads)


def test_attention_variants_study_recipes():
    """recipes/ablations/attention-variants/ (issue 20's "which attention block?" study): exactly the
    issue's seven blocks, each recipes/sagan.yaml with only the attention block (and the name) changed,
    the block after the 16x16 feature maps of G and D."""
    from conftest import REPO
    from ganzoo.recipe import load_recipe
    from ganzoo.training.build import build_discriminator, build_generator

    folder = REPO / "recipes" / "ablations" / "attention-variants"
    wanted = {"sagan", "mhsa", "non_local", "efficient", "global_context", "squeeze_excitation", "none"}
    assert {p.stem for p in folder.glob("*.yaml")} == wanted
    base = load_recipe(REPO / "recipes" / "sagan.yaml").model_dump(mode="json")
    for name in sorted(wanted):
        recipe = load_recipe(folder / f"{name}.yaml")
        data = recipe.model_dump(mode="json")
        assert data["name"] == f"attn-{name}"
        for net in ("generator", "discriminator"):
            assert data[net]["attention"]["type"] == name
            assert data[net]["attention_resolutions"] == [16] and data[net]["slot"] == "attention"
            data[net]["attention"] = base[net]["attention"]
        data["name"], data["description"] = base["name"], base["description"]
        assert data == base, f"{name}.yaml differs from recipes/sagan.yaml beyond the attention block"
        cls = ATTENTION.get(name).obj
        for net in (build_generator(recipe), build_discriminator(recipe)):
            assert sum(isinstance(m, cls) for m in net.modules()) == 1, name


def test_attention_variants_study_shares_the_ablation_studys_sagan_and_none_runs():
    """The "which attention block?" study (issue 20) and the ablation (issue 19) run in one study folder
    (benchmarks/device/gpu_window.sh job `study`), and two of issue 20's rows are runs issue 19 already
    makes: attn-sagan is ablation-feat16 and attn-none is ablation-none up to their names. Re-running them
    would cost 8 of the study's 48 runs (about 1.6 GPU-hours), so the study trains them once; this holds
    only while the recipes train the same networks from the same seed."""
    from conftest import REPO
    from ganzoo.recipe import load_recipe
    from ganzoo.training.build import build_discriminator, build_generator

    folder = REPO / "recipes" / "ablations"
    for variant, ablation in (("sagan", "feat16"), ("none", "none")):
        a = load_recipe(folder / "attention-variants" / f"{variant}.yaml")
        b = load_recipe(folder / f"{ablation}.yaml")
        da, db = a.model_dump(mode="json"), b.model_dump(mode="json")
        for d in (da, db):
            del d["name"], d["description"]
            for net in ("generator", "discriminator"):  # the one spelling that may differ: no attention at all
                if d[net]["attention"]["type"] == "none" or not d[net]["attention_resolutions"]:
                    d[net]["attention"], d[net]["attention_resolutions"] = "no attention", []
        assert da == db, f"attention-variants/{variant}.yaml no longer trains what ablations/{ablation}.yaml does"
        for build in (build_generator, build_discriminator):
            torch.manual_seed(3)
            na = build(a)
            torch.manual_seed(3)
            nb = build(b)
            sa, sb = na.state_dict(), nb.state_dict()
            assert list(sa) == list(sb) and all(torch.equal(sa[k], sb[k]) for k in sa), (variant, build.__name__)
