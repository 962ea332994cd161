"""Every attention backend against a float64 reference written plainly, outputs and gradients.

CPU tests run everywhere (the Triton kernel through Triton's CPU interpreter, in a subprocess);
tests marked ``gpu`` check every CUDA backend in fp32 and bf16 (run on the device machine).
Tolerances (relative Frobenius error): fp32 1e-4 (fp32 arithmetic lands far under 1e-3; a TF32
slip would land near 3e-4 and fail), bf16/fp16 2e-2 for outputs and gradients.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ganzoo.ops import attention as A

REPO = Path(__file__).resolve().parents[1]


def reference(q, k, v, scale=None):
    """softmax(scale * q^T k) v in float64, element by element (no shared code with the backends)."""
    q, k, v = q.double(), k.double(), v.double()
    logits = torch.einsum("bcn,bcm->bnm", q, k)
    if scale is not None:
        logits = logits * scale
    logits = logits - logits.amax(dim=-1, keepdim=True)
    w = logits.exp()
    w = w / w.sum(dim=-1, keepdim=True)
    return torch.einsum("bnm,bcm->bcn", w, v)


def rel(a: torch.Tensor, b: torch.Tensor, typical: float = 1.0) -> float:
    """||a - b|| / ||b||; where the reference is (near) zero (one key: dq = dk = 0 exactly, computed
    as a difference of O(typical) terms), the denominator is floored at an RMS of 1e-2 * typical."""
    a, b = a.double(), b.double()
    assert torch.isfinite(a).all(), "non-finite values"
    floor = 1e-2 * typical * b.numel() ** 0.5
    return ((a - b).norm() / b.norm().clamp_min(floor)).item()


def check_backend(backend, B, cqk, cv, N, M, dtype, device, tol, scale=None, seed=0, spread=1.0, **kw):
    g = torch.Generator().manual_seed(seed)
    spread = spread * cqk ** -0.25  # logits q.k of unit variance times spread**2
    q64 = torch.randn(B, cqk, N, generator=g, dtype=torch.float64) * spread
    k64 = torch.randn(B, cqk, M, generator=g, dtype=torch.float64) * spread
    v64 = torch.randn(B, cv, M, generator=g, dtype=torch.float64)
    go = torch.randn(B, cv, N, generator=g, dtype=torch.float64)
    # inputs rounded to the tested dtype, so the reference sees exactly what the backend sees
    q, k, v = (t.to(dtype) for t in (q64, k64, v64))
    ref_in = [t.double().requires_grad_() for t in (q, k, v)]
    ref = reference(*ref_in, scale=scale)
    ref.backward(go)
    ins = [t.to(device).requires_grad_() for t in (q, k, v)]
    if callable(backend):
        out = backend(*ins, scale=scale, **kw)
    else:
        out = A.attend(*ins, backend=backend, scale=scale)
    assert out.shape == (B, cv, N) and out.dtype == dtype and out.device.type == torch.device(device).type
    out.backward(go.to(device=device, dtype=dtype))
    errs = {"out": rel(out.cpu(), ref)}
    for name, t, r in zip("qkv", ins, ref_in):
        # dq (dk) sums over M keys (N queries) terms P * (dO.v - dO.o) k (q), differences of terms of
        # size ~ sqrt(Cv): exact zeros (M = 1) come out as rounding noise of that size
        typical = {"q": (cv * M) ** 0.5, "k": (cv * N) ** 0.5, "v": 1.0}[name]
        errs["d" + name] = rel(t.grad.cpu(), r.grad, typical=typical)
    bad = {n: e for n, e in errs.items() if not e < tol}
    assert not bad, f"{backend} B{B} Cqk{cqk} Cv{cv} N{N} M{M} {dtype}: errors over {tol}: {bad}"
    return errs


CPU_BACKENDS = ["dense", "sdpa", "auto"]

shapes = st.tuples(
    st.integers(1, 3),  # B
    st.integers(1, 20),  # Cqk (odd counts included)
    st.integers(1, 70),  # Cv
    st.integers(1, 70),  # N
    st.integers(1, 70),  # M (M < N: pooled key/value)
)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@settings(max_examples=25, deadline=None)
@given(shape=shapes, scale=st.one_of(st.none(), st.floats(-2.0, 2.0).filter(lambda s: abs(s) > 1e-3)), seed=st.integers(0, 2**31 - 1))
def test_cpu_backend_matches_float64_reference(backend, shape, scale, seed):
    B, cqk, cv, N, M = shape
    check_backend(backend, B, cqk, cv, N, M, torch.float32, "cpu", 1e-4, scale=scale, seed=seed)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_cpu_float64_is_float64_exact(backend):
    check_backend(backend, 2, 5, 12, 37, 9, torch.float64, "cpu", 1e-12)


@pytest.mark.parametrize("head_dim,pad_qk", [(8, True), (16, False), (64, True), (24, True), (256, False)])
def test_sdpa_head_splits_and_padding(head_dim, pad_qk):
    """Value split into heads (with a ragged last head) and q/k padded or not: same function."""
    check_backend(A.attend_sdpa, 2, 7, 50, 45, 12, torch.float32, "cpu", 1e-4, head_dim=head_dim, pad_qk=pad_qk)


def test_large_logits_do_not_overflow():
    """Unscaled SAGAN logits can be large: every backend must subtract the row max."""
    for backend in CPU_BACKENDS:
        check_backend(backend, 1, 16, 8, 30, 20, torch.float32, "cpu", 1e-4, spread=5.0)


def test_auto_on_cpu_is_dense_when_small_and_linear_memory_when_large():
    small = torch.zeros(1, 8, 64), torch.zeros(1, 8, 64), torch.zeros(1, 16, 64)
    large = torch.zeros(1, 8, 4096), torch.zeros(1, 8, 4096), torch.zeros(1, 16, 4096)
    assert A.choose_backend(*small) == "dense"
    assert A.choose_backend(*large) == "sdpa"


def test_backends_tuple_and_errors():
    assert A.BACKENDS[0] == "auto" and {"dense", "sdpa", "triton"} <= set(A.BACKENDS)
    q, k, v = torch.randn(1, 4, 10), torch.randn(1, 4, 6), torch.randn(1, 3, 6)
    with pytest.raises(ValueError, match="unknown attention backend"):
        A.attend(q, k, v, backend="nope")
    with pytest.raises(ValueError, match="position counts"):
        A.attend(q, k, v[:, :, :5])
    with pytest.raises(ValueError, match="channel counts"):
        A.attend(q, k[:, :3], v)
    if not torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1":
        with pytest.raises(RuntimeError, match="CUDA"):
            A.attend(q, k, v, backend="triton")


def test_attention_weights_rows_sum_to_one_and_match_reference():
    q, k, v = torch.randn(2, 5, 17, dtype=torch.float64), torch.randn(2, 5, 9, dtype=torch.float64), torch.eye(9, dtype=torch.float64).expand(2, 9, 9)
    w = A.attention_weights(q, k)
    assert torch.allclose(w.sum(-1), torch.ones(2, 17, dtype=torch.float64))
    # with v = identity, the output's columns are the attention rows
    assert torch.allclose(w, reference(q, k, v).transpose(1, 2))


def test_flop_count():
    assert A.attention_flops(2, 10, 5, 3, 7, backward=False) == 2 * 2 * 10 * 5 * 10
    assert A.attention_flops(2, 10, 5, 3, 7) == 3 * 2 * 2 * 10 * 5 * 10


def check_double_backward(backend, device="cpu", dtype=torch.float64, tol=1e-10):
    """Gradient penalties differentiate the input gradient (create_graph=True): the second
    derivative through attention must match dense float64 autograd."""
    g = torch.Generator().manual_seed(3)
    x0 = torch.randn(2, 12, 40, generator=g, dtype=torch.float64)
    w = torch.randn(12, 12, generator=g, dtype=torch.float64) * 0.4

    def second(b):
        x = x0.to(device=device, dtype=dtype).requires_grad_()
        h = torch.einsum("oc,bcn->bon", w.to(device=device, dtype=dtype), x)
        q, k, v = h[:, :3], h[:, 3:6, ::2], h[:, 6:, ::2]  # pooled-like: M = N/2, Cv = 6
        out = A.attend(q, k, v, backend=b, scale=0.8)
        (gx,) = torch.autograd.grad((out * out).sum(), x, create_graph=True)
        (ggx,) = torch.autograd.grad((gx * gx).sum(), x)
        return gx.detach().cpu().double(), ggx.cpu().double()

    ref_g, ref_gg = second("dense") if device == "cpu" and dtype == torch.float64 else (None, None)
    if ref_g is None:
        x = x0.clone().requires_grad_()
        h = torch.einsum("oc,bcn->bon", w, x)
        out = reference(h[:, :3], h[:, 3:6, ::2], h[:, 6:, ::2], scale=0.8)
        (ref_g,) = torch.autograd.grad((out * out).sum(), x, create_graph=True)
        (ref_gg,) = torch.autograd.grad((ref_g * ref_g).sum(), x)
    got_g, got_gg = second(backend)
    assert rel(got_g, ref_g) < tol and rel(got_gg, ref_gg) < tol, (rel(got_g, ref_g), rel(got_gg, ref_gg))


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_double_backward_for_gradient_penalties(backend):
    check_double_backward(backend)


def test_sdpa_wrapper_passes_gradients_only_where_asked():
    q, k, v = torch.randn(1, 4, 30), torch.randn(1, 4, 20), torch.randn(1, 6, 20, requires_grad=True)
    A.attend(q, k, v, backend="sdpa").sum().backward()
    assert q.grad is None and k.grad is None and v.grad is not None
    ref = torch.autograd.grad(A.attend_dense(q, k, v).sum(), v)[0]
    assert rel(v.grad, ref) < 1e-5


_INTERP_SCRIPT = r"""
import torch, sys
sys.path.insert(0, sys.argv[1] + "/tests")
from test_attention_backends import check_backend, check_double_backward
cases = [(2, 8, 64, 40, 24, None), (1, 3, 5, 33, 17, 0.7), (2, 16, 200, 64, 16, None),
         (1, 20, 17, 16, 48, -0.5), (1, 1, 1, 1, 1, None)]
for i, (B, cqk, cv, N, M, scale) in enumerate(cases):
    print(check_backend("triton", B, cqk, cv, N, M, torch.float32, "cpu", 1e-4, scale=scale, seed=i))
for i, (B, cqk, cv, N, M, scale) in enumerate(cases[:3]):
    print(check_backend("triton", B, cqk, cv, N, M, torch.float16, "cpu", 2e-2, scale=scale, seed=i))
check_double_backward("triton", dtype=torch.float32, tol=1e-4)
from ganzoo.ops import _attention_triton as T
for det in (True, False):  # dQ by its own pass, and by atomic adds in the dK/dV pass
    for i, (B, cqk, cv, N, M, scale) in enumerate(cases[:4]):
        f = lambda q, k, v, scale=None: T.attend(q, k, v, scale, deterministic=det)
        print(det, check_backend(f, B, cqk, cv, N, M, torch.float32, "cpu", 1e-4, scale=scale, seed=10 + i))
print("OK")
"""


def test_triton_kernel_in_interpreter():
    """The Triton kernels (forward, dK/dV, dQ, value chunking, masking of ragged blocks) run on
    the CPU through Triton's interpreter: CI checks their maths without a GPU."""
    pytest.importorskip("triton")
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": str(REPO)}
    r = subprocess.run([sys.executable, "-c", _INTERP_SCRIPT, str(REPO)], env=env, capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0 and r.stdout.strip().endswith("OK"), r.stdout[-3000:] + r.stderr[-3000:]


# ---------------------------------------------------------------------------------------------
# GPU: every CUDA backend, fp32 and bf16, outputs and gradients (run on the device machine).

GPU_BACKENDS = ["dense", "sdpa", "triton", "triton_deterministic", "auto"]
GPU_SHAPES = [
    # B, Cqk, Cv, N, M: SAGAN full and pooled shapes, ragged and odd sizes
    (2, 8, 64, 1024, 1024),
    (2, 8, 32, 1024, 256),
    (2, 16, 128, 1000, 250),
    (3, 5, 19, 77, 33),
    (2, 32, 256, 256, 64),
    (1, 64, 512, 256, 256),
    (2, 4, 8, 4096, 4096),
]


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("backend", GPU_BACKENDS)
@pytest.mark.parametrize("shape", GPU_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_gpu_backend_matches_float64_reference(backend, shape, dtype):
    B, cqk, cv, N, M = shape
    tol = 1e-4 if dtype == torch.float32 else 2e-2
    if backend == "triton_deterministic":
        from ganzoo.ops import _attention_triton as T

        def backend(q, k, v, scale=None):
            return T.attend(q, k, v, scale, deterministic=True)
    for seed in range(2):
        check_backend(backend, B, cqk, cv, N, M, dtype, "cuda", tol, seed=seed)


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["sdpa", "triton"])
def test_gpu_scale_and_large_logits(backend):
    check_backend(backend, 2, 8, 64, 300, 200, torch.bfloat16, "cuda", 2e-2, scale=0.3, spread=3.0)
    check_backend(backend, 2, 8, 64, 300, 200, torch.float32, "cuda", 1e-4, scale=-1.3, spread=3.0)


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["dense", "sdpa", "triton", "auto"])
def test_gpu_double_backward(backend):
    check_double_backward(backend, device="cuda", dtype=torch.float32, tol=1e-4)


@pytest.mark.gpu
def test_gpu_auto_uses_linear_memory_for_large_maps():
    q = torch.zeros(1, 8, 16384, device="cuda", dtype=torch.bfloat16)
    v = torch.zeros(1, 64, 16384, device="cuda", dtype=torch.bfloat16)
    assert A.choose_backend(q, q, v) != "dense"
