"""Property checks of every registered loss, regularizer and backbone (plugins included).

The block lists come from the registries through :mod:`ganzoo.testing.conformance` (what ``ganzoo
check`` runs), so a plugin's blocks are tested with no new test code.
CPU always; CUDA when present (``-m gpu``).
"""
from __future__ import annotations

import pytest

from conftest import kit_cases


@pytest.mark.parametrize("check", kit_cases("loss", "regularizer", "generator", "discriminator"))
def test_block_properties(check):
    check()
