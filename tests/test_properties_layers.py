"""Property checks of every registered attention, norm and weight-norm block (plugins' included).

Parametrised from the registries (ids are block names), so a new block, or an installed plugin's,
is checked without touching this file; blocks are built from their kind's contract only.
The checks and their precisions come from :mod:`ganzoo.testing.conformance`, the list ``ganzoo check``
runs too: fp32 on CPU; fp32, bf16 (parameters and inputs cast) and bf16 autocast (how training runs)
on CUDA, marked ``gpu``; bf16 autocast on CPU too, since it exercises the fp32-under-autocast paths
(spectral norm's power iteration) cheaply.
"""
from __future__ import annotations

import pytest

from conftest import kit_cases

pytestmark = pytest.mark.usefixtures("one_cpu_thread")  # see conftest.py


@pytest.mark.parametrize("check", kit_cases("attention", "norm", "weight_norm"))
def test_layer_properties(check):
    check()
