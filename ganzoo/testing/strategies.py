"""Hypothesis settings and small helpers shared by the property checks in :mod:`ganzoo.testing`."""
from __future__ import annotations

import contextlib

from typing import Callable

import torch
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

#: Relative (Frobenius-norm) tolerance of a block's output against its float64 reference, by the
#: dtype the block computes in (the module's dtype, or the autocast dtype).
TOLERANCE = {torch.float64: 1e-10, torch.float32: 1e-4, torch.bfloat16: 2e-2, torch.float16: 5e-3}
#: The same for gradients: the backward rounds again, and in bf16 the softmax backward amplifies
#: logit rounding (measured: median 1e-3, tail 5e-2 on the SAGAN blocks).
GRAD_TOLERANCE = {torch.float64: 1e-8, torch.float32: 1e-3, torch.bfloat16: 1e-1, torch.float16: 2e-2}


def tolerance(dtype: torch.dtype, grad: bool = False) -> float:
    table = GRAD_TOLERANCE if grad else TOLERANCE
    if dtype not in table:
        raise ValueError(f"no tolerance for dtype {dtype}; known: {', '.join(map(str, table))}")
    return table[dtype]


def rel_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """||actual - expected|| / ||expected|| (Frobenius, in float64)."""
    a = actual.detach().to(torch.float64)
    e = expected.detach().to(device=a.device, dtype=torch.float64)
    return float(torch.linalg.vector_norm(a - e) / torch.linalg.vector_norm(e).clamp_min(1e-30))


def assert_rel_close(actual: torch.Tensor, expected: torch.Tensor, tol: float, what: str) -> None:
    if actual.shape != expected.shape:
        raise AssertionError(f"{what}: shape {list(actual.shape)} != expected {list(expected.shape)}")
    err = rel_error(actual, expected)
    if not err <= tol:  # also catches NaN
        raise AssertionError(f"{what}: relative error {err:.3g} > tolerance {tol:.3g}")


@contextlib.contextmanager
def strict_fp32():
    """TF32 off for CUDA matmuls and convs while checking, restored after.

    PyTorch lets cuDNN use TF32 for fp32 convolutions by default (and ganzoo's training turns TF32
    on for speed, ``train.tf32``): on CUDA that is a ~1e-3 relative error, so an "fp32" check against
    a float64 reference must switch it off to measure fp32 arithmetic. (On the H100 the fp32 checks
    failed with errors of 2.6e-4 to 4.1e-4 until this was done.)

    cuDNN's deterministic algorithms too (no autotuning): the checks compare two eval-mode calls
    bit for bit, and some of cuDNN's transposed-convolution kernels accumulate with atomics in an
    order that changes from call to call (on the H200, 2026-12-05, ``ganzoo check --device cuda``
    found the dcgan and sngan_cnn generators "not deterministic" until this was done).
    """
    cudnn = torch.backends.cudnn
    before = (torch.backends.cuda.matmul.allow_tf32, cudnn.allow_tf32, cudnn.deterministic, cudnn.benchmark)
    torch.backends.cuda.matmul.allow_tf32 = False
    cudnn.allow_tf32, cudnn.deterministic, cudnn.benchmark = False, True, False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, cudnn.allow_tf32, cudnn.deterministic, cudnn.benchmark = before


def run_property(body: Callable[[st.DataObject], None], max_examples: int = 10, shrink: bool = True) -> None:
    """Run ``body(data)`` on ``max_examples`` hypothesis examples (no deadline, no example database;
    derandomized, as the model and loss checks are: the same examples on every run, so CI is not a lottery).

    ``shrink=False`` reports the first failing example as found (faster, less minimal).
    """
    phases = (Phase.explicit, Phase.generate) + ((Phase.shrink, Phase.explain) if shrink else ())
    prop = settings(
        max_examples=max_examples,
        phases=phases,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )(given(data=st.data())(body))
    with strict_fp32():
        prop()


def draw_seed(data: st.DataObject) -> int:
    """Draw a torch seed (shown by hypothesis on failure, so the tensors can be reproduced) and set it."""
    seed = data.draw(st.integers(0, 2**31 - 1), label="torch_seed")
    torch.manual_seed(seed)
    return seed
