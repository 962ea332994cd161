"""The plain CNN backbones (``sngan_cnn``: Miyato et al. 2018, Table 3; ``dcgan``: Radford et al. 2016):
the papers' layer shapes, the ablation recipes' attention placement with them, conditioning, and their
one-line recipe errors. The registry-derived property checks run them too (test_properties_models.py)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

from ganzoo.errors import RecipeError
from ganzoo.models.sngan_cnn_generator import ConvNormAct
from ganzoo.recipe import load_recipe
from ganzoo.registry import ATTENTION, DISCRIMINATOR, GENERATOR
from ganzoo.testing.models import one_thread

REPO = Path(__file__).resolve().parents[1]
SAGAN = REPO / "recipes" / "sagan.yaml"
#: the SAGAN Table-1 ablations, which only place attention (biggan-g.yaml changes G's backbone: test_biggan.py)
ABLATIONS = sorted(p for p in (REPO / "recipes" / "ablations").glob("*.yaml")
                   if set(yaml.safe_load(p.read_text())["generator"]) <= {"attention_resolutions", "slot"})
BACKBONES = ("sngan_cnn", "dcgan")
#: feature sides at 32 px: G (smallest first), D (largest first)
SIDES = {"sngan_cnn": ([4, 8, 16, 32], [32, 16, 8, 4]), "dcgan": ([4, 8, 16], [16, 8, 4])}


@pytest.fixture(autouse=True)
def _one_thread():
    with one_thread("cpu"):
        yield


def _convs(module: nn.Module, kind=(nn.Conv2d, nn.ConvTranspose2d)) -> list[tuple]:
    return [("deconv" if isinstance(m, nn.ConvTranspose2d) else "conv", m.in_channels, m.out_channels, m.kernel_size[0], m.stride[0])
            for m in module.modules() if isinstance(m, kind)]


def test_sngan_cnn_is_table_3_of_miyato_et_al():
    G = GENERATOR.build("sngan_cnn", 32, 0, 3)
    assert G.stages[0][0].conv.linear.out_features == 4 * 4 * 512
    assert _convs(G) == [("deconv", 512, 256, 4, 2), ("deconv", 256, 128, 4, 2),
                         ("deconv", 128, 64, 4, 2), ("conv", 64, 3, 3, 1)]
    D = DISCRIMINATOR.build("sngan_cnn", 32, 0, 3)
    assert _convs(D) == [("conv", 3, 64, 3, 1), ("conv", 64, 64, 4, 2), ("conv", 64, 128, 3, 1),
                         ("conv", 128, 128, 4, 2), ("conv", 128, 256, 3, 1), ("conv", 256, 256, 4, 2),
                         ("conv", 256, 512, 3, 1)]
    assert D.linear.in_features == 4 * 4 * 512 and D.cfg.slope == 0.1
    assert GENERATOR.build("sngan_cnn", 32, 0, 3).cfg.weight_norm.type == "spectral"


def test_dcgan_is_radford_et_al():
    G = GENERATOR.build("dcgan", 64, 0, 3)
    assert G.cfg.weight_norm.type == "none"
    assert [c[1:] for c in _convs(G)] == [(512, 256, 4, 2), (256, 128, 4, 2), (128, 64, 4, 2), (64, 3, 4, 2)]
    assert all(c[0] == "deconv" for c in _convs(G))
    D = DISCRIMINATOR.build({"type": "dcgan", "norm": "batch", "weight_norm": "none"}, 64, 0, 3)
    assert [c[1:] for c in _convs(D)] == [(3, 64, 4, 2), (64, 128, 4, 2), (128, 256, 4, 2), (256, 512, 4, 2)]
    norms = [type(stage[0].norm).__name__ for stage in D.stages]
    assert norms == ["NoNorm", "BatchNorm", "BatchNorm", "BatchNorm"]  # no norm on the first layer
    assert D.cfg.slope == 0.2
    assert [type(s[0].norm).__name__ for s in DISCRIMINATOR.build("dcgan", 32, 0, 3).stages] == ["NoNorm"] * 3


@pytest.mark.parametrize("name", BACKBONES)
@pytest.mark.parametrize("res", [32, 64])
def test_shapes_ranges_and_conditioning(name, res):
    if res == 64 and name == "sngan_cnn":
        pytest.skip("sngan_cnn is Table 3's 32 px network only")
    torch.manual_seed(0)
    G = GENERATOR.build({"type": name, "ch": 4, "z_dim": 8}, res, 5, 3)
    D = DISCRIMINATOR.build({"type": name, "ch": 4}, res, 5, 3)
    y = torch.tensor([0, 1, 4])
    x = G(torch.randn(3, 8), y)
    assert x.shape == (3, 3, res, res) and x.abs().max() <= 1
    assert G.conditional and D.conditional and D(x, y).shape == (3,)
    assert not torch.equal(D(x, y), D(x, (y + 1) % 5))  # projection
    with pytest.raises(ValueError, match=r"needs labels y of shape \[3\], got none"):
        G(torch.randn(3, 8))
    plain = GENERATOR.build({"type": name, "ch": 4, "z_dim": 8}, res, 0, 1)
    assert not plain.conditional and type(plain.stages[0][0].norm).__name__ == "BatchNorm"
    assert plain(torch.randn(2, 8), torch.tensor([0, 1])).shape == (2, 1, res, res)  # labels ignored


def _placed(model: nn.Module) -> tuple[dict[int, str], dict[int, int]]:
    """(slot module id -> "attention" or "residual", slot module id -> side it saw, filled by a forward)."""
    out, h = {}, {}
    for stage in model.stages:
        for m in stage[1:]:
            out[id(m)] = "attention" if not isinstance(m, ConvNormAct) else "residual"
            m.register_forward_hook(lambda mod, args, res, key=id(m): h.__setitem__(key, res.shape[-1]))
    return out, h


@pytest.mark.parametrize("name", BACKBONES)
@pytest.mark.parametrize("recipe", ABLATIONS, ids=lambda p: p.stem)
def test_ablation_recipes_place_attention_in_the_cnn_backbones(name, recipe):
    sets = [f"generator.type={name}", f"discriminator.type={name}", "generator.ch=8", "discriminator.ch=8"]
    wanted = yaml.safe_load(recipe.read_text())["generator"]["attention_resolutions"]
    g_sides, d_sides = SIDES[name]
    if any(r not in g_sides for r in wanted):  # dcgan at 32 px has no 32 x 32 feature map
        with pytest.raises(RecipeError) as info:
            load_recipe(recipe, sets)
        side = ", ".join(map(str, wanted))
        assert info.value.lines() == [
            f"{recipe}: generator.attention_resolutions: {side} is not a feature-map side of the {name} generator "
            f"at resolution 32 (choose from {', '.join(map(str, g_sides))})",
            f"{recipe}: discriminator.attention_resolutions: {side} is not a feature-map side of the {name} "
            f"discriminator at resolution 32 (choose from {', '.join(map(str, d_sides))})"]
        return
    r = load_recipe(recipe, sets)
    assert r.generator.feature_resolutions(32) == g_sides and r.discriminator.feature_resolutions(32) == d_sides
    torch.manual_seed(0)
    G = GENERATOR.build(r.generator, r.resolution, r.num_classes, r.channels)
    D = DISCRIMINATOR.build(r.discriminator, r.resolution, r.num_classes, r.channels)
    y = torch.arange(2)
    for model, call in ((G, lambda: G(torch.randn(2, r.generator.z_dim), y)), (D, lambda: D(torch.rand(2, 3, 32, 32), y))):
        kinds, sides = _placed(model)
        call()
        assert sorted(sides.values()) == sorted(wanted)  # one slot per listed side, at that side
        assert set(kinds.values()) <= {model.cfg.slot}
        if model.cfg.slot == "attention":
            attn = ATTENTION.get(model.cfg.attention.type).obj
            assert sum(isinstance(m, attn) for m in model.modules()) == len(wanted)


def test_ablation_overrides_validate_with_cnn_backbones_written_out_in_full(tmp_path):
    """A recipe whose generator and discriminator are written out fully as CNN backbones takes every
    shipped ablation file's overrides (``attention_resolutions``, ``slot``) unchanged."""
    base = yaml.safe_load(SAGAN.read_text())
    base["generator"] = {"type": "sngan_cnn", "ch": 8, "z_dim": 16, "norm": "conditional_batch",
                         "weight_norm": "spectral", "attention": "sagan", "attention_resolutions": [16],
                         "slot": "attention"}
    base["discriminator"] = {"type": "sngan_cnn", "ch": 8, "weight_norm": "spectral", "projection": True,
                             "attention": "sagan", "attention_resolutions": [16], "slot": "attention"}
    (tmp_path / "sagan.yaml").write_text(yaml.safe_dump(base))
    (tmp_path / "ablations").mkdir()
    for src in ABLATIONS:
        dst = tmp_path / "ablations" / src.name
        dst.write_text(src.read_text())
        over = yaml.safe_load(src.read_text())
        r = load_recipe(dst, ["data.root=unused"])
        assert (r.generator.type, r.discriminator.type) == ("sngan_cnn", "sngan_cnn")
        for net in ("generator", "discriminator"):
            assert getattr(r, net).attention_resolutions == over[net]["attention_resolutions"]
            assert getattr(r, net).slot == over[net].get("slot", "attention")
        G = GENERATOR.build(r.generator, r.resolution, r.num_classes, r.channels)
        assert G(torch.randn(2, 16), torch.arange(2)).shape == (2, 3, 32, 32)


def test_recipe_errors_are_one_line_and_name_the_field():
    src = str(SAGAN)

    def problems(*sets):
        with pytest.raises(RecipeError) as info:
            load_recipe(SAGAN, ["generator.type=sngan_cnn", "discriminator.type=dcgan", *sets])
        return info.value.lines()

    assert problems("generator.attention_resolutions=[2]") == [
        f"{src}: generator.attention_resolutions: 2 is not a feature-map side of the sngan_cnn generator at "
        "resolution 32 (choose from 4, 8, 16, 32)"]
    assert problems("resolution=64", "discriminator.attention_resolutions=[]") == [
        f"{src}: generator.type: the sngan_cnn generator has architectures for resolutions 32, not 64"]
    # a conditional norm in the dcgan D acts as its counterpart (D's norms get no labels)
    assert load_recipe(SAGAN, ["discriminator.type=dcgan", "discriminator.norm=conditional_batch"]).discriminator.norm.type == "conditional_batch"
    with pytest.raises(ValueError, match="^attention_resolutions: 64 is not a feature-map side of the dcgan"):
        GENERATOR.build({"type": "dcgan", "attention_resolutions": [64]}, 32, 0, 3)
    with pytest.raises(ValueError, match="^type: the dcgan discriminator has architectures for resolutions 32, 64, not 128"):
        DISCRIMINATOR.build("dcgan", 128, 0, 3)
    with pytest.raises(ValueError, match=r"x must have shape \[B, 3, 32, 32\]"):
        DISCRIMINATOR.build({"type": "sngan_cnn", "ch": 2}, 32, 0, 3)(torch.zeros(1, 3, 16, 16))
