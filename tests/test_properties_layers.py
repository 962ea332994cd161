"""Property checks of every registered attention, norm and weight-norm block (plugins' included).

Parametrised from the registries (ids are block names), so a new block, or an installed plugin's,
is checked without touching this file; blocks are built from their kind's contract only.
Precisions: fp32 on CPU; fp32, bf16 (parameters and inputs cast) and bf16 autocast (how training
runs) on CUDA, marked ``gpu``; bf16 autocast on CPU too, since it exercises the fp32-under-autocast
paths (spectral norm's power iteration) cheaply.
"""
from __future__ import annotations

import pytest
import torch

from ganzoo.registry import ATTENTION, NORM, WEIGHT_NORM
from ganzoo.testing import check_attention_block, check_norm_block, check_weight_norm



pytestmark = pytest.mark.usefixtures("one_cpu_thread")  # see conftest.py


_no_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
_gpu = [pytest.mark.gpu, _no_cuda]

# (device, dtype, autocast)
PRECISIONS = [
    pytest.param("cpu", torch.float32, False, id="cpu-fp32"),
    pytest.param("cpu", torch.bfloat16, True, id="cpu-autocast-bf16"),
    pytest.param("cuda", torch.float32, False, id="cuda-fp32", marks=_gpu),
    pytest.param("cuda", torch.bfloat16, False, id="cuda-bf16", marks=_gpu),
    pytest.param("cuda", torch.bfloat16, True, id="cuda-autocast-bf16", marks=_gpu),
]


def _ids(entries):
    return [e.name for e in entries]


@pytest.mark.parametrize(("device", "dtype", "autocast"), PRECISIONS)
@pytest.mark.parametrize("entry", ATTENTION.list(), ids=_ids(ATTENTION.list()))
def test_attention_properties(entry, device, dtype, autocast):
    check_attention_block(entry, device, dtype, autocast=autocast)


@pytest.mark.parametrize(("device", "dtype", "autocast"), PRECISIONS)
@pytest.mark.parametrize("entry", NORM.list(), ids=_ids(NORM.list()))
def test_norm_properties(entry, device, dtype, autocast):
    check_norm_block(entry, device, dtype, autocast=autocast)


@pytest.mark.parametrize(("device", "dtype", "autocast"), PRECISIONS)
@pytest.mark.parametrize("entry", WEIGHT_NORM.list(), ids=_ids(WEIGHT_NORM.list()))
def test_weight_norm_properties(entry, device, dtype, autocast):
    check_weight_norm(entry, device, dtype, autocast=autocast)
