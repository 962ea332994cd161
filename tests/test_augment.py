"""The ``augment`` kind (DiffAugment): registry-derived property checks of every block (plugins'
too), the maths of each built-in against hand-made cases, and augmentation inside a training step."""
from __future__ import annotations

import pytest
import torch

from conftest import kit_cases
from ganzoo.augment._common import AugmentChain
from ganzoo.registry import AUGMENT

pytestmark = pytest.mark.usefixtures("one_cpu_thread")  # see conftest.py


def test_diffaugment_blocks_are_registered():
    assert {"color", "translation", "cutout"} <= set(AUGMENT.names())


@pytest.mark.parametrize("check", kit_cases("augment"))  # what `ganzoo check` runs
def test_augment_properties(check):
    check()


def test_translation_moves_pixels_and_fills_zero():
    block = AUGMENT.build({"type": "translation", "ratio": 0.25})
    x = torch.arange(16, dtype=torch.float32).view(1, 1, 4, 4) + 1
    out = block.apply(x, {"dy": torch.tensor([1]), "dx": torch.tensor([-1])})
    expected = torch.tensor([[0, 0, 0, 0], [2, 3, 4, 0], [6, 7, 8, 0], [10, 11, 12, 0]], dtype=torch.float32)
    assert torch.equal(out[0, 0], expected)


def test_cutout_zeroes_one_square_cut_by_the_border():
    block = AUGMENT.build({"type": "cutout", "ratio": 0.5})  # side 2 at 4x4
    x = torch.ones(1, 2, 4, 4)
    out = block.apply(x, {"top": torch.tensor([-1]), "left": torch.tensor([2])})
    assert out.sum() == 2 * (16 - 2)  # only row 0, columns 2-3 are inside the image
    assert torch.equal(out[0, :, 0, 2:], torch.zeros(2, 2))


def test_color_identity_values_change_nothing():
    block = AUGMENT.build("color")
    x = torch.rand(3, 3, 8, 8) * 2 - 1
    half = torch.full((3,), 0.5)
    assert torch.allclose(block.apply(x, {"b": half, "s": half, "c": half}), x, atol=1e-6)


def test_chain_applies_blocks_in_order_and_is_identity_when_empty():
    x = torch.rand(2, 3, 8, 8)
    assert AugmentChain([])(x) is x
    torch.manual_seed(0)
    a = AugmentChain(["color", "cutout"])(x)
    torch.manual_seed(0)
    b = AUGMENT.build("cutout")(AUGMENT.build("color")(x))
    assert torch.equal(a, b)


def test_unknown_augment_in_a_recipe_lists_the_known_ones(tmp_path):
    from ganzoo.errors import RecipeError
    from ganzoo.recipe import load_recipe

    with pytest.raises(RecipeError, match=r"augment\.0.*unknown augment 'colour'; did you mean 'color'\?"):
        load_recipe("recipes/quickstart.yaml", ["augment=[colour]"])


@pytest.mark.parametrize("d_concat", [False, True])
def test_d_sees_augmented_images_in_both_updates(d_concat):
    """Every image D sees goes through the chain: D's real and fake batches and G's fakes, and G's
    gradient flows through it."""
    from ganzoo.recipe import load_recipe
    from ganzoo.training.data import DataSampler
    from ganzoo.training.build import build_dataset
    from ganzoo.training.step import build_train_step

    recipe = load_recipe("recipes/quickstart.yaml", [
        "train.batch_size=4", "eval.metrics=[]", "data.num_images=16", "generator.ch=4", "discriminator.ch=4",
        f"train.d_concat={d_concat}", "augment=[color, translation, cutout]", "train.hflip=true"])
    ds = build_dataset(recipe)
    step = build_train_step(recipe, DataSampler(ds.images, ds.labels, 0, torch.device("cpu"), hflip=True),
                            torch.device("cpu"))
    seen = []
    step.aug.register_forward_hook(lambda m, args, out: seen.append(len(args[0])))
    stats = step(0)
    assert torch.isfinite(stats).all()
    assert seen == ([8, 4] if d_concat else [4, 4, 4])  # D: real+fake (together or apart); G: fakes
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in step.G.parameters() if p.requires_grad)
