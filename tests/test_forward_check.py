"""Networks that give the wrong shapes are refused by `ganzoo validate` and before `ganzoo run` writes
anything (issue 17: a plugin block returning the wrong shape used to crash at step 1, after the run
folder was made)."""
from __future__ import annotations

from typing import Literal

import pytest
import torch
import yaml
from torch import nn

from conftest import tiny_recipe
from ganzoo.config import BlockConfig
from ganzoo.registry import DISCRIMINATOR


class _ManyLogitsConfig(BlockConfig):
    """A discriminator that returns five logits per image."""

    type: Literal["many_logits"] = "many_logits"


class _ManyLogits(nn.Module):
    """Five logits per image: not what the loss takes."""

    def __init__(self, cfg, resolution, num_classes, channels):
        super().__init__()
        self.lin = nn.Linear(channels * resolution * resolution, 5)

    def forward(self, x, y=None):
        return self.lin(x.flatten(1))


@pytest.fixture
def bad_d():
    DISCRIMINATOR.register(_ManyLogitsConfig, _ManyLogits)
    try:
        yield
    finally:
        DISCRIMINATOR.unregister("many_logits")


def test_validate_and_run_refuse_a_discriminator_of_the_wrong_shape(tmp_path, bad_d, capsys):
    from ganzoo.cli import main

    recipe = tmp_path / "bad.yaml"
    data = tiny_recipe(train={"steps": 2})
    data["discriminator"] = {"type": "many_logits"}
    recipe.write_text(yaml.safe_dump(data))
    assert main(["validate", str(recipe)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"{recipe}: discriminator: discriminator 'many_logits' returned logits of shape [2, 5], "
                   "expected one per image ([2] or [2, 1])"]
    assert main(["run", str(recipe), "--out", str(tmp_path / "runs"), "--device", "cpu"]) == 2
    assert not (tmp_path / "runs").exists()  # nothing was created


def test_the_check_changes_no_state_or_random_stream():
    from ganzoo.recipe import validate
    from ganzoo.training.build import check_forward

    torch.manual_seed(3)
    before = torch.random.get_rng_state()
    check_forward(validate(tiny_recipe(train={"steps": 2}), "tiny"))
    assert torch.equal(before, torch.random.get_rng_state())
