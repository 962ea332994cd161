"""BigGAN's generator conditioning (Brock et al. 2019) and self-modulation (Chen et al. 2019) in the ResNet
generator: the ``biggan`` backbone's shared class embedding and hierarchical latent, where each piece of z
and the labels go, the one-line recipe errors, the ablation recipes' attention placement with it, and tiny
CPU training runs of ``recipes/variants/biggan-g.yaml`` and of an unconditional self-modulated recipe.
The registry-derived property checks run ``biggan`` too (test_properties_models.py)."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Literal

import pytest
import torch
import yaml
from torch import nn

from conftest import tiny_recipe
from ganzoo.config import BlockConfig
from ganzoo.errors import RecipeError
from ganzoo.models import _arch
from ganzoo.models._layers import GBlock
from ganzoo.models.sngan_cnn_generator import ConvNormAct
from ganzoo.norms.self_modulated_batch import SelfModulatedBatchNorm
from ganzoo.norms.spectral import is_spectral
from ganzoo.recipe import load_recipe, validate
from ganzoo.registry import DISCRIMINATOR, GENERATOR, NORM
from ganzoo.training import train
from ganzoo.training.logs import read_metrics

REPO = Path(__file__).resolve().parents[1]
BIGGAN = REPO / "recipes" / "variants" / "biggan-g.yaml"
#: the SAGAN Table-1 ablations, which only place attention (none, feat8/16/32, residual8/16/32)
PLACEMENTS = sorted(p for p in (REPO / "recipes" / "ablations").glob("*.yaml")
                    if set(yaml.safe_load(p.read_text())["generator"]) <= {"attention_resolutions", "slot"})

pytestmark = pytest.mark.usefixtures("one_cpu_thread")  # see conftest.py


def _tiny_biggan(**over):
    return GENERATOR.build({"type": "biggan", "ch": 4, "z_dim": 16, "shared_embedding": 8,
                            "attention_resolutions": [16], **over}, 32, 5, 3)


def _record_norm_latents(G: nn.Module) -> dict[int, torch.Tensor]:
    """Stage index -> the z every latent-modulated norm of that stage got in G's last forward (one per stage:
    the hook asserts that the norms of a stage agree)."""
    seen: dict[int, torch.Tensor] = {}

    def hook(i):
        def fn(module, args, out):
            if i in seen:
                assert torch.equal(seen[i], args[2]), f"stage {i}: its norms got different latents"
            seen[i] = args[2].detach()
        return fn

    G.register_forward_pre_hook(lambda module, args: seen.clear())  # one forward's latents
    for i, stage in enumerate(G.blocks):
        for m in stage.modules():
            if isinstance(m, SelfModulatedBatchNorm):
                m.register_forward_hook(hook(i))
    return seen


def test_biggan_is_the_resnet_table_with_one_shared_embedding_and_hierarchical_z():
    G = GENERATOR.build({"type": "biggan", "ch": 4}, 128, 10, 3)
    assert G.cfg.z_dim == 120 and G.chunks == 6 and G.chunk_dim == 20  # the paper's six chunks of 20
    assert G.linear.in_features == 20 and G.conditional
    rows = _arch.generator_rows(128, 4, 3, [32])
    assert [(s[0].in_channels, s[0].out_channels) for s in G.blocks] == [(r.in_channels, r.out_channels) for r in rows]
    assert [m for m in G.modules() if isinstance(m, nn.Embedding)] == [G.shared]  # one embedding, not one per norm
    assert G.shared.weight.shape == (10, 128) and not is_spectral(G.shared)  # BigGAN's shared embedding: no SN
    norms = [m for s in G.blocks for m in s.modules() if isinstance(m, SelfModulatedBatchNorm)]
    assert len(norms) == 2 * 5
    for norm in norms:  # BigGAN's conditional BN: bias-free, spectrally normalised linear maps of [shared(y), chunk]
        assert norm.latent_dim == 128 + 20 and norm.fc is None
        assert norm.gain.bias is None and is_spectral(norm.gain) and is_spectral(norm.bias)
    assert type(G.output_norm).__name__ == "BatchNorm"  # no latent reaches the output layer (BigGAN: plain BN)
    sagan = GENERATOR.build({"type": "resnet", "ch": 4}, 128, 10, 3)
    assert sum(isinstance(m, nn.Embedding) for m in sagan.modules()) == 2 * 2 * 5  # gain and bias tables per norm


def test_each_block_gets_the_shared_embedding_and_its_own_chunk_and_every_chunk_counts():
    torch.manual_seed(0)
    G = _tiny_biggan().eval()
    seen = _record_norm_latents(G)
    z, y = torch.randn(3, 16), torch.tensor([1, 4, 0])
    with torch.no_grad():
        out = G(z, y)
        assert sorted(seen) == [0, 1, 2]
        for i in range(3):  # chunk 0 feeds the linear layer, chunk i + 1 block i
            assert torch.equal(seen[i], torch.cat([G.shared(y), z[:, 4 * (i + 1):4 * (i + 2)]], 1))
        for k in range(4):
            z2 = z.clone()
            z2[:, 4 * k:4 * (k + 1)] += 1
            assert (G(z2, y) - out).abs().max() > 1e-4, f"chunk {k} does not reach the output"


def test_labels_reach_biggans_g_only_through_the_shared_embedding():
    torch.manual_seed(1)
    G = _tiny_biggan().eval()
    z = torch.randn(2, 16)
    with torch.no_grad():
        assert not torch.equal(G(z, torch.tensor([0, 0])), G(z, torch.tensor([1, 1])))
        G.shared.weight[1] = G.shared.weight[0]
        assert torch.equal(G(z, torch.tensor([0, 0])), G(z, torch.tensor([1, 1])))
    plain = _tiny_biggan(shared_embedding=0)
    assert plain.shared is None and not plain.conditional  # no embedding: G ignores labels
    unconditional = GENERATOR.build({"type": "biggan", "ch": 4, "z_dim": 16, "attention_resolutions": []}, 32, 0, 3)
    assert unconditional.shared is None and unconditional.blocks[0][0].bn1.latent_dim == 4  # chunks alone


def test_self_modulation_gives_every_norm_all_of_z():
    """Without the BigGAN options a latent-modulated norm gets the whole latent (Chen et al.), in the ResNet G
    (not its output layer) and in the plain CNN generators."""
    torch.manual_seed(2)
    G = GENERATOR.build({"type": "resnet", "ch": 4, "z_dim": 8, "norm": "self_modulated_batch"}, 32, 0, 3).eval()
    seen = _record_norm_latents(G)
    z = torch.randn(2, 8)
    with torch.no_grad():
        G(z)
    assert sorted(seen) == [0, 1, 2] and all(torch.equal(t, z) for t in seen.values())
    assert G.linear.in_features == 8 and type(G.output_norm).__name__ == "BatchNorm" and not G.conditional
    for name in ("sngan_cnn", "dcgan"):
        C = GENERATOR.build({"type": name, "ch": 4, "z_dim": 8, "norm": "self_modulated_batch"}, 32, 3, 3).eval()
        got = []
        for m in C.modules():
            if isinstance(m, ConvNormAct):
                assert isinstance(m.norm, SelfModulatedBatchNorm)
                m.norm.register_forward_hook(lambda mod, args, out: got.append(args[2]))
        with torch.no_grad():
            a = C(z, torch.tensor([0, 1]))
            assert len(got) == len(C.stages) and all(torch.equal(t, z) for t in got)
            assert not torch.equal(C(z + 1, torch.tensor([0, 1])), a)
    # D's norms get no latent: a modulated norm in the dcgan D is its unmodulated counterpart
    D = DISCRIMINATOR.build({"type": "dcgan", "norm": "self_modulated_batch", "ch": 4}, 32, 0, 3)
    assert [type(s[0].norm).__name__ for s in D.stages] == ["NoNorm", "BatchNorm", "BatchNorm"]


def test_recipe_errors_are_one_line_and_name_the_field():
    src = str(BIGGAN)

    def problems(*sets):
        with pytest.raises(RecipeError) as info:
            load_recipe(BIGGAN, list(sets))
        return info.value.lines()

    assert problems("resolution=64") == [
        f"{src}: generator.z_dim: 128 does not split into 5 equal chunks (hierarchical_z: the first linear layer "
        "and 4 blocks at resolution 64); use a multiple of 5, e.g. 125"]
    assert problems("generator.norm=conditional_batch") == [
        f"{src}: generator.norm: 'conditional_batch' is not modulated by the latent, so shared_embedding and "
        "hierarchical_z would reach no layer; choose a norm that is, e.g. self_modulated_batch ({type: "
        "self_modulated_batch, hidden: 0} is BigGAN's conditional BN)"]
    assert problems("generator.type=resnet", "generator.norm=batch", "generator.shared_embedding=0") == [
        f"{src}: generator.norm: 'batch' is not modulated by the latent, so hierarchical_z would reach no layer; "
        "choose a norm that is, e.g. self_modulated_batch ({type: self_modulated_batch, hidden: 0} is BigGAN's "
        "conditional BN)"]
    assert load_recipe(BIGGAN, ["resolution=128", "generator.z_dim=120", "generator.attention_resolutions=[64]",
                                "discriminator.attention_resolutions=[64]"]).generator.z_dim == 120
    with pytest.raises(ValueError, match=r"^z_dim: 100 does not split into 6 equal chunks .* e\.g\. 96$"):
        GENERATOR.build({"type": "biggan", "z_dim": 100}, 128, 10, 3)
    with pytest.raises(ValueError, match=r"^attention_resolutions: 4 is not a feature-map side of the biggan "
                                         r"generator at resolution 32 \(choose from 8, 16, 32\)$"):
        GENERATOR.build({"type": "biggan", "attention_resolutions": [4]}, 32, 10, 3)
    with pytest.raises(ValueError, match=r"^the biggan generator has architectures for resolutions 32, 64 and 128, not 256$"):
        GENERATOR.build("biggan", 256, 10, 3)


class _NoPlainConfig(BlockConfig):
    type: Literal["no_unmodulated_test"] = "no_unmodulated_test"


def test_a_latent_norm_without_an_unmodulated_counterpart_is_refused_for_gs_output_layer():
    NORM.register(_NoPlainConfig, type("NoPlain", (SelfModulatedBatchNorm,), {}))
    try:
        with pytest.raises(RecipeError) as info:
            load_recipe(BIGGAN, ["generator.norm=no_unmodulated_test"])
        assert info.value.lines() == [
            f"{BIGGAN}: generator.norm: 'no_unmodulated_test' is modulated by the latent but its config has no "
            "unmodulated() counterpart for G's output layer"]
    finally:
        NORM.unregister("no_unmodulated_test")


@pytest.mark.parametrize("ablation", PLACEMENTS, ids=lambda p: p.stem)
def test_the_ablation_recipes_placements_run_with_biggan(ablation):
    """Each SAGAN Table-1 ablation's G and D placement (attention_resolutions, slot) on the biggan-g recipe:
    one slot per listed side, at that side; an extra residual block's norms get its stage's chunk."""
    over = yaml.safe_load(ablation.read_text())
    sets = ["generator.ch=4", "discriminator.ch=8"] + [
        f"{net}.{key}={over[net][key]}" for net in ("generator", "discriminator") for key in ("attention_resolutions", "slot")
        if key in over[net]]
    r = load_recipe(BIGGAN, sets)
    torch.manual_seed(0)
    G = GENERATOR.build(r.generator, r.resolution, r.num_classes, r.channels).eval()
    wanted = over["generator"]["attention_resolutions"]
    slot_sides, seen = [], _record_norm_latents(G)
    for stage in G.blocks:
        for m in stage[1:]:
            m.register_forward_hook(lambda mod, args, out: slot_sides.append((type(mod), out.shape[-1])))
    z, y = torch.randn(2, r.generator.z_dim), torch.tensor([3, 7])
    with torch.no_grad():
        assert G(z, y).shape == (2, 3, 32, 32)
    assert sorted(side for _, side in slot_sides) == sorted(wanted)
    assert all((t is GBlock) == (r.generator.slot == "residual") for t, _ in slot_sides)
    for i in range(3):  # the hook also asserts that a residual slot's norms got their stage's latent
        assert torch.equal(seen[i], torch.cat([G.shared(y), z[:, 32 * (i + 1):32 * (i + 2)]], 1))
    D = DISCRIMINATOR.build(r.discriminator, r.resolution, r.num_classes, r.channels)
    assert D(torch.rand(2, 3, 32, 32), y).shape == (2,)


# ----------------------------------------------------------------------------- tiny CPU training runs
def _assert_trained(result, run_dir: Path) -> None:
    assert result.status == "finished" and result.step == 3
    rows = [r for r in read_metrics(run_dir) if "loss/d" in r]
    assert rows and all(math.isfinite(r["loss/d"]) and math.isfinite(r["loss/g"]) for r in rows)


def test_the_biggan_g_recipe_trains_on_cpu(tmp_path):
    sets = ["data={type: synthetic, num_images: 24, num_test_images: 8}", "generator.ch=4", "discriminator.ch=4",
            "train.steps=3", "train.batch_size=4", "train.d_steps=1", "train.log_every=1", "train.sample_every=0",
            "train.checkpoint_every=3", "eval.metrics=[]"]
    recipe = load_recipe(BIGGAN, sets)
    assert (recipe.generator.type, recipe.generator.norm.type) == ("biggan", "self_modulated_batch")
    init = GENERATOR.build(recipe.generator, recipe.resolution, recipe.num_classes, recipe.channels)
    result = train(recipe, tmp_path / "run", "cpu", progress=False)
    _assert_trained(result, tmp_path / "run")
    state = torch.load(result.checkpoint, map_location="cpu", weights_only=True)["generator"]
    assert "shared.weight" in state and "blocks.0.0.bn1.gain.parametrizations.weight.original" in state
    moved = [k for k, v in init.state_dict().items() if k.endswith("original") and not torch.equal(v, state[k])]
    assert any(k.startswith("blocks.0.0.bn1.gain") for k in moved)  # the norms' projections were trained


def test_an_unconditional_self_modulated_recipe_trains_on_cpu(tmp_path):
    recipe = validate(tiny_recipe(num_classes=0, generator={"norm": {"type": "self_modulated_batch", "hidden": 8}},
                                  train={"steps": 3, "batch_size": 4, "log_every": 1, "sample_every": 0}), "tiny")
    result = train(recipe, tmp_path / "run", "cpu", progress=False)
    _assert_trained(result, tmp_path / "run")
    state = torch.load(result.checkpoint, map_location="cpu", weights_only=True)["generator"]
    assert "blocks.2.0.bn2.fc.parametrizations.weight.original" in state  # the MLP, spectrally normalised
