"""Property checks of every registered loss, regularizer and backbone (plugins included).

The block lists come from the registries, so a plugin's blocks are tested with no new test code.
CPU always; CUDA when present (``-m gpu``).
"""
from __future__ import annotations

import pytest

from ganzoo.registry import DISCRIMINATOR, GENERATOR, LOSS, REGULARIZER
from ganzoo.testing.losses import check_loss, check_regularizer
from ganzoo.testing.models import check_discriminator, check_generator

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)]


def _names(registry) -> list[str]:
    return [e.name for e in registry.list()]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", _names(LOSS))
def test_loss_properties(name, device):
    check_loss(name, device)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", _names(REGULARIZER))
def test_regularizer_properties(name, device):
    check_regularizer(name, device)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", _names(GENERATOR))
def test_generator_properties(name, device):
    check_generator(name, device)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", _names(DISCRIMINATOR))
def test_discriminator_properties(name, device):
    check_discriminator(name, device)
