"""Property checks of every registered loss, regularizer and backbone (plugins included).

The block lists come from the registries through :mod:`ganzoo.testing.conformance` (what ``ganzoo
check`` runs), so a plugin's blocks are tested with no new test code.
CPU always; CUDA when present (``-m gpu``).
"""
from __future__ import annotations

import pytest

from ganzoo.testing.conformance import iter_checks


def cases(kind: str) -> list:
    """The kit's checks of ``kind`` (``ganzoo.testing.conformance``, what ``ganzoo check`` runs), ids
    ``<name>-<device>``."""
    return [pytest.param(c.run, id=f"{c.name}-{c.precision}", marks=[pytest.mark.gpu] if device == "cuda" else [])
            for device in ("cpu", "cuda") for c in iter_checks(kinds=[kind], device=device)]


@pytest.mark.parametrize("check", cases("loss"))
def test_loss_properties(check):
    check()


@pytest.mark.parametrize("check", cases("regularizer"))
def test_regularizer_properties(check):
    check()


@pytest.mark.parametrize("check", cases("generator"))
def test_generator_properties(check):
    check()


@pytest.mark.parametrize("check", cases("discriminator"))
def test_discriminator_properties(check):
    check()
