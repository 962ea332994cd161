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

from ganzoo.testing.conformance import iter_checks

pytestmark = pytest.mark.usefixtures("one_cpu_thread")  # see conftest.py

_gpu = [pytest.mark.gpu]  # skipped where CUDA is absent (conftest.py)


def cases(kind: str) -> list:
    """The kit's checks of ``kind`` (``ganzoo.testing.conformance``, what ``ganzoo check`` runs), CPU
    and CUDA, with ids ``<name>-<precision>``."""
    return [pytest.param(c.run, id=f"{c.name}-{c.precision}", marks=_gpu if device == "cuda" else ())
            for device in ("cpu", "cuda") for c in iter_checks(kinds=[kind], device=device)]


@pytest.mark.parametrize("check", cases("attention"))
def test_attention_properties(check):
    check()


@pytest.mark.parametrize("check", cases("norm"))
def test_norm_properties(check):
    check()


@pytest.mark.parametrize("check", cases("weight_norm"))
def test_weight_norm_properties(check):
    check()
