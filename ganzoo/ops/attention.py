"""Exact attention ``softmax(Q^T K) V`` with no 1/sqrt(d) scale, as SAGAN computes it.

Shapes (channels-first, as the blocks produce them from 1x1 convs):
    q: [B, Cqk, N]   k: [B, Cqk, M]   v: [B, Cv, M]   ->   out: [B, Cv, N]
where N = query positions, M = key/value positions (M < N when key/value are pooled).

``attend(q, k, v, backend="auto", scale=None)`` picks the fastest exact backend for the shape,
device and dtype; ``backend`` forces one. ``scale=None`` means no scaling (SAGAN's choice).

Backends (every one computes the same function; all support backward, and double backward
for gradient penalties: with ``create_graph=True`` the fused ones return ``dense_grads``):

``dense``
    Builds the full [B, N, M] matrix with two bmm's. Fastest for small N*M, memory O(N*M).
``sdpa``
    ``torch.nn.functional.scaled_dot_product_attention`` with memory O(N). The fused kernels
    (flash, cuDNN, and the CPU flash kernel) need q/k and v of one head width, while SAGAN's q/k
    are only C/8 wide: q and k are zero-padded to the value head width, which leaves every dot
    product unchanged, and the value is split into heads (each head re-uses the same q/k). The
    scale is passed explicitly (1.0 for ``scale=None``), never sdpa's 1/sqrt(d) default.
``triton``
    A Triton flash-attention kernel (``ganzoo/ops/_attention_triton.py``) specialised to a narrow
    q/k (padded only to 16, the smallest tensor-core K) and a wide value: it skips the padded
    Q.K^T work ``sdpa`` does. CUDA only (or Triton's CPU interpreter, ``TRITON_INTERPRET=1``).
    dQ is accumulated with atomic adds unless ``torch.use_deterministic_algorithms(True)``.

``auto`` follows ``choose_backend``; its table comes from ``benchmarks/attention.py``
measurements (``docs/benchmarks/attention.md``).

This module imports only torch (and triton lazily), so benchmarks and device runs can use it
without the rest of ganzoo's dependencies.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

BACKENDS = ("auto", "dense", "sdpa", "triton")


def _check(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
    if q.dim() != 3 or k.dim() != 3 or v.dim() != 3:
        raise ValueError(f"attend expects 3-d q, k, v ([B, C, N]); got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    if q.shape[0] != k.shape[0] or q.shape[0] != v.shape[0]:
        raise ValueError(f"batch sizes differ: q {q.shape[0]}, k {k.shape[0]}, v {v.shape[0]}")
    if q.shape[1] != k.shape[1]:
        raise ValueError(f"q and k channel counts differ: {q.shape[1]} vs {k.shape[1]}")
    if k.shape[2] != v.shape[2]:
        raise ValueError(f"k and v position counts differ: {k.shape[2]} vs {v.shape[2]}")


def attend_dense(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float | None = None) -> torch.Tensor:
    """Reference-shaped dense path: builds the full [B, N, M] attention matrix."""
    logits = torch.bmm(q.transpose(1, 2), k)  # [B, N, M]
    if scale is not None:
        logits = logits * scale
    attn = torch.softmax(logits, dim=-1)
    return torch.bmm(v, attn.transpose(1, 2))  # [B, Cv, N]


def attention_weights(q: torch.Tensor, k: torch.Tensor, scale: float | None = None) -> torch.Tensor:
    """The [B, N, M] attention matrix (rows sum to 1), for inspection and tests."""
    logits = torch.bmm(q.transpose(1, 2), k)
    if scale is not None:
        logits = logits * scale
    return torch.softmax(logits, dim=-1)


def _round_up(x: int, m: int) -> int:
    return (x + m - 1) // m * m


def sdpa_head_dim(cv: int, device: torch.device | str, dtype: torch.dtype) -> int:
    """Value head width for the ``sdpa`` backend (measured: see docs/benchmarks/attention.md)."""
    dev = torch.device(device).type
    # CUDA: heads of 64 were fastest in fp32 (mem-efficient kernel) from 64x64 up and in bf16 at
    # 128x128 (32 vs 49 ms) and on pooled shapes; 128 won only at bf16 64x64 full (4.0 vs 5.1 ms),
    # where auto uses triton; heads of 256 were never best.
    limit = 64 if dev == "cuda" else 256
    return min(_round_up(cv, 8), limit)


def attend_sdpa(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    scale: float | None = None,
    head_dim: int | None = None,
    pad_qk: bool = True,
    kernels: list | None = None,
) -> torch.Tensor:
    """Attention through ``scaled_dot_product_attention`` with O(N) memory.

    ``head_dim``: value head width (the value is split into ceil(Cv / head_dim) heads sharing q/k);
    ``pad_qk``: zero-pad q/k to the head width (flash/cuDNN need equal widths; the mem-efficient
    kernel does not); ``kernels``: a list of ``torch.nn.attention.SDPBackend`` to restrict to.
    """
    _check(q, k, v)
    B, cqk, N = q.shape
    cv, M = v.shape[1], v.shape[2]
    hd = head_dim or sdpa_head_dim(cv, q.device, q.dtype)
    heads = -(-cv // hd)
    if pad_qk:
        d = _round_up(max(hd, cqk), 8)
        dqk = d
    else:
        d = _round_up(hd, 8)
        dqk = _round_up(cqk, 8)
    qh = q.transpose(1, 2)  # [B, N, Cqk]
    kh = k.transpose(1, 2)
    if dqk != cqk:
        qh = F.pad(qh, (0, dqk - cqk))
        kh = F.pad(kh, (0, dqk - cqk))
    else:  # the fused kernels need unit stride in the last dimension
        qh, kh = qh.contiguous(), kh.contiguous()
    qh = qh.unsqueeze(1).expand(B, heads, N, dqk)
    kh = kh.unsqueeze(1).expand(B, heads, M, dqk)
    if heads * hd != cv:
        v = F.pad(v, (0, 0, 0, heads * hd - cv))
    vh = v.reshape(B, heads, hd, M).transpose(2, 3)  # [B, h, M, hd]
    if d != hd:
        vh = F.pad(vh, (0, d - hd))
    vh = vh.contiguous()
    s = 1.0 if scale is None else float(scale)
    if kernels is None:
        out = F.scaled_dot_product_attention(qh, kh, vh, scale=s)
    else:
        from torch.nn.attention import sdpa_kernel

        with sdpa_kernel(kernels):
            out = F.scaled_dot_product_attention(qh, kh, vh, scale=s)
    out = out[..., :hd].transpose(2, 3).reshape(B, heads * hd, N)  # [B, Cv', N]
    return out[:, :cv]


def dense_grads(q, k, v, do, scale=None):
    """(dq, dk, dv) of ``attend`` written with differentiable torch ops (O(N*M) memory).

    The fused backends' backward kernels are not differentiable; when a gradient penalty (R1,
    WGAN-GP) asks for the gradient's graph (``create_graph=True``) they return these instead, so
    second derivatives through attention are exact on every backend."""
    s = 1.0 if scale is None else scale
    p = torch.softmax(torch.bmm(q.transpose(1, 2), k) * s, dim=-1)  # [B, N, M]
    dv = torch.bmm(do, p)  # [B, Cv, M]
    dp = torch.bmm(do.transpose(1, 2), v)  # [B, N, M]
    ds = p * (dp - (dp * p).sum(-1, keepdim=True)) * s
    dq = torch.bmm(k, ds.transpose(1, 2))  # [B, Cqk, N]
    dk = torch.bmm(q, ds)  # [B, Cqk, M]
    return dq, dk, dv


class _SdpaFunction(torch.autograd.Function):
    """sdpa with its own backward, plus exact double backward (see ``dense_grads``)."""

    @staticmethod
    def forward(ctx, q, k, v, scale, opts):
        with torch.enable_grad():
            inner = [t.detach().requires_grad_(t.requires_grad) for t in (q, k, v)]
            out = attend_sdpa(*inner, scale, **opts)
        ctx.save_for_backward(q, k, v)
        ctx.inner, ctx.out, ctx.scale = inner, out, scale
        return out.detach()

    @staticmethod
    def backward(ctx, do):
        q, k, v = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph=True: differentiable gradients
            return (*dense_grads(q, k, v, do, ctx.scale), None, None)
        wanted = [t for t in ctx.inner if t.requires_grad]
        got = iter(torch.autograd.grad(ctx.out, wanted, do, retain_graph=True)) if wanted else iter(())
        return (*(next(got) if t.requires_grad else None for t in ctx.inner), None, None)


def attend_triton(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float | None = None) -> torch.Tensor:
    """The Triton kernel (CUDA, or Triton's CPU interpreter); see ``_attention_triton``."""
    _check(q, k, v)
    from ganzoo.ops import _attention_triton

    return _attention_triton.attend(q, k, v, scale)


def triton_available(device: torch.device | str | None = None) -> bool:
    """Whether the ``triton`` backend can run on ``device`` (CUDA with a working triton)."""
    if device is not None and torch.device(device).type != "cuda":
        return False
    if not torch.cuda.is_available():
        return False
    try:
        import triton  # noqa: F401
    except Exception:  # pragma: no cover - depends on the install
        return False
    return True


# --- dispatch table (docs/benchmarks/attention.md: H100, torch 2.11, triton 3.6, batch 64) ---------
# Thresholds are on N*M (query x key positions). dense wins while the [B, N, M] matrix is small;
# beyond that the O(N)-memory kernels win, and dense's memory (quadratic in N) soon runs out.
_CPU_DENSE_MAX_NM = 1 << 20
# fp32 on CUDA: dense up to 1024x1024, then the Triton kernel (tf32x3 dots: fp32 accuracy) beats
# sdpa's fp32 (mem-efficient) kernel by 1.7-2.5x.
# bf16/fp16 on CUDA: dense up to 1024x256; sdpa (padded, flash/cuDNN) at 1024x1024; Triton beyond.
_CUDA_TABLE = {
    # dtype: (dense up to N*M, sdpa up to N*M, then triton)
    torch.float32: (1 << 20, 1 << 20),
    torch.bfloat16: (1 << 18, 1 << 20),
    torch.float16: (1 << 18, 1 << 20),
}
_TRITON_MAX_CQK = 128


def choose_backend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> str:
    """The backend ``auto`` uses for these inputs: a function of device, dtype and sizes only."""
    N, M = q.shape[2], k.shape[2]
    nm = N * M
    if q.device.type != "cuda":
        return "dense" if nm <= _CPU_DENSE_MAX_NM else "sdpa"
    if q.dtype not in _CUDA_TABLE:  # float64 and others: dense while it is small
        return "dense" if nm <= _CPU_DENSE_MAX_NM else "sdpa"
    dense_max, sdpa_max = _CUDA_TABLE[q.dtype]
    if nm <= dense_max:
        return "dense"
    if nm <= sdpa_max or q.shape[1] > _TRITON_MAX_CQK or not triton_available(q.device):
        return "sdpa"
    return "triton"


def attend(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, backend: str = "auto", scale: float | None = None
) -> torch.Tensor:
    """softmax(scale * q^T k) v: q [B,Cqk,N], k [B,Cqk,M], v [B,Cv,M] -> [B,Cv,N] (scale None: 1)."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown attention backend '{backend}'; known: {', '.join(BACKENDS)}")
    _check(q, k, v)
    if backend == "auto":
        backend = choose_backend(q, k, v)
    if backend == "dense":
        return attend_dense(q, k, v, scale)
    return _attend_eager(q, k, v, backend, scale)


@torch.compiler.disable
def _attend_eager(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, backend: str, scale: float | None) -> torch.Tensor:
    """The sdpa and Triton backends, always run eagerly: inside a ``torch.compile``d network
    (``train.compile``) they are a graph break, since their autograd Functions (an inner graph for
    sdpa's exact double backward, Triton launches with autotuning) do not trace (seen on the CPU
    with torch 2.15: the compiled sdpa Function failed in its output aliasing)."""
    if backend == "sdpa":
        if torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad):
            return _SdpaFunction.apply(q, k, v, scale, {})
        return attend_sdpa(q, k, v, scale)
    return attend_triton(q, k, v, scale)


def attention_flops(B: int, N: int, M: int, cqk: int, cv: int, backward: bool = True) -> int:
    """Useful floating-point operations: 2*B*N*M*(Cqk+Cv) forward (Q.K^T and A.V, unpadded),
    three times that for forward+backward (backward does twice the forward's matrix work)."""
    f = 2 * B * N * M * (cqk + cv)
    return 3 * f if backward else f


__all__ = [
    "BACKENDS",
    "attend",
    "attend_dense",
    "attend_sdpa",
    "attend_triton",
    "attention_weights",
    "dense_grads",
    "attention_flops",
    "choose_backend",
    "sdpa_head_dim",
    "triton_available",
]
