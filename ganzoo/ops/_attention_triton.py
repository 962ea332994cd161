"""Triton flash attention for SAGAN's shapes: narrow q/k (C/8), wide value, no 1/sqrt(d) scale.

Inputs stay channels-first ([B, C, N], as the 1x1 convs produce them); the kernels read them
through strides, so no transposed copies are made. q/k channels are padded (by masked loads, in
registers only) to DQK = the next power of two >= 16, the smallest K a tensor-core dot takes;
``sdpa`` instead pads them to the value head width (64), doing 4-8x the Q.K^T work.

Forward: one program per (query block, batch); online softmax in base 2 (``exp2``), the
log-sum-exp kept per query for the backward. Backward (FlashAttention-2 style): a small kernel for
delta = rowsum(dO * O); one kernel per key block for dK and dV (looping over the queries) that also
accumulates dQ with fp32 atomic adds; or, when deterministic algorithms are asked for, a separate
kernel per query block for dQ (looping over the keys, recomputing P: bit-reproducible, slower).
Values wider than ``MAX_DV[dtype]`` are split into chunks that each run the kernels (exact: the
attention weights do not depend on the value).

fp32 inputs use ``tf32x3`` dots (fp32-level accuracy on tensor cores); bf16/fp16 dots accumulate
in fp32, P and dS are rounded to the input dtype for the second product (as every flash kernel).
"""
from __future__ import annotations

import math
import os

import torch
import triton
import triton.language as tl

MAX_DV = {torch.float32: 64, torch.float16: 128, torch.bfloat16: 128}  # measured: docs/benchmarks/attention.md
_INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"
_LOG2E = 1.0 / math.log(2.0)


def _configs(kind: str):
    if _INTERPRET:
        return [triton.Config({"BN": 16, "BM": 16}, num_warps=1, num_stages=1)]
    # (BN, BM, warps, stages); the last of each list is small enough for fp32 with DV = 128
    if kind == "fwd":
        shapes = [(128, 64, 4, 3), (128, 128, 8, 3), (128, 128, 8, 2), (64, 64, 4, 3), (64, 32, 4, 2)]
    elif kind == "dkdv":  # BM = key rows per program, BN = query block of the inner loop
        shapes = [(64, 128, 8, 2), (32, 128, 4, 3), (64, 64, 4, 3), (128, 128, 8, 2), (32, 64, 4, 2)]
    else:  # dq: BN = query rows per program, BM = key block of the inner loop
        shapes = [(128, 64, 8, 2), (128, 32, 4, 3), (64, 64, 4, 3), (128, 128, 8, 2), (64, 32, 4, 2)]
    return [triton.Config({"BN": bn, "BM": bm}, num_warps=w, num_stages=s) for bn, bm, w, s in shapes]


_heur = {
    "EVEN_N": lambda a: a["N"] % a["BN"] == 0,
    "EVEN_M": lambda a: a["M"] % a["BM"] == 0,
}


@triton.autotune(configs=_configs("fwd"), key=["N", "M", "CQK", "CV", "DQK", "DV"])
@triton.heuristics(_heur)
@triton.jit
def _fwd_kernel(
    Q, K, V, O, LSE,
    sqb, sqc, sqn, skb, skc, skm, svb, svc, svm, sob, soc, son,
    N, M, CQK, CV, qk_scale,
    DQK: tl.constexpr, DV: tl.constexpr, PREC: tl.constexpr,
    BN: tl.constexpr, BM: tl.constexpr, EVEN_N: tl.constexpr, EVEN_M: tl.constexpr,
):
    pid_n = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    rows = pid_n * BN + tl.arange(0, BN)
    dq_ = tl.arange(0, DQK)
    dv_ = tl.arange(0, DV)
    offs_m = tl.arange(0, BM)
    q = tl.load(Q + b * sqb + rows[:, None] * sqn + dq_[None, :] * sqc,
                mask=(rows[:, None] < N) & (dq_[None, :] < CQK), other=0.0)  # [BN, DQK]
    k_base = K + b * skb + dq_[:, None] * skc
    v_base = V + b * svb + dv_[None, :] * svc
    kmask_c = dq_[:, None] < CQK
    vmask_c = dv_[None, :] < CV
    m_i = tl.full([BN], float("-inf"), tl.float32)
    l_i = tl.zeros([BN], tl.float32)
    acc = tl.zeros([BN, DV], tl.float32)
    for start in range(0, M, BM):
        cols = start + offs_m
        if EVEN_M:
            kt = tl.load(k_base + cols[None, :] * skm, mask=kmask_c, other=0.0)  # [DQK, BM]
            vt = tl.load(v_base + cols[:, None] * svm, mask=vmask_c, other=0.0)  # [BM, DV]
        else:
            kt = tl.load(k_base + cols[None, :] * skm, mask=kmask_c & (cols[None, :] < M), other=0.0)
            vt = tl.load(v_base + cols[:, None] * svm, mask=vmask_c & (cols[:, None] < M), other=0.0)
        s = tl.dot(q, kt, input_precision=PREC)  # [BN, BM], fp32
        if not EVEN_M:
            s = tl.where(cols[None, :] < M, s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1) * qk_scale)
        p = tl.math.exp2(s * qk_scale - m_new[:, None])
        alpha = tl.math.exp2(m_i - m_new)
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None]
        acc = tl.dot(p.to(vt.dtype), vt, acc, input_precision=PREC)
        m_i = m_new
    acc = acc / l_i[:, None]
    tl.store(O + b * sob + rows[:, None] * son + dv_[None, :] * soc, acc.to(O.dtype.element_ty),
             mask=(rows[:, None] < N) & (dv_[None, :] < CV))
    tl.store(LSE + b * N + rows, m_i + tl.math.log2(l_i), mask=rows < N)


@triton.jit
def _delta_kernel(O, DO, DELTA, sob, soc, son, sdb, sdc, sdn, N, CV, DV: tl.constexpr, BN: tl.constexpr):
    pid = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    rows = pid * BN + tl.arange(0, BN)
    ch = tl.arange(0, DV)
    mask = (ch[:, None] < CV) & (rows[None, :] < N)
    o = tl.load(O + b * sob + ch[:, None] * soc + rows[None, :] * son, mask=mask, other=0.0).to(tl.float32)
    do = tl.load(DO + b * sdb + ch[:, None] * sdc + rows[None, :] * sdn, mask=mask, other=0.0).to(tl.float32)
    tl.store(DELTA + b * N + rows, tl.sum(o * do, 0), mask=rows < N)


@triton.autotune(configs=_configs("dkdv"), key=["N", "M", "CQK", "CV", "DQK", "DV", "ATOMIC_DQ"], reset_to_zero=["DQA"])
@triton.heuristics(_heur)
@triton.jit
def _dkdv_kernel(
    Q, K, V, DO, LSE, DELTA, DK, DVO, DQA,
    sqb, sqc, sqn, skb, skc, skm, svb, svc, svm, sdb, sdc, sdn,
    sdkb, sdkc, sdkm, sdvb, sdvc, sdvm, sdqab, sdqac, sdqan,
    N, M, CQK, CV, qk_scale, scale,
    DQK: tl.constexpr, DV: tl.constexpr, PREC: tl.constexpr, ATOMIC_DQ: tl.constexpr,
    BN: tl.constexpr, BM: tl.constexpr, EVEN_N: tl.constexpr, EVEN_M: tl.constexpr,
):
    # ATOMIC_DQ: also accumulate dQ (unscaled, fp32) into DQA with atomic adds, sparing the dQ
    # kernel's second pass over P (its exponentials and dO.V^T); q/k are only Cqk wide, so the
    # atomics are few (Cqk per query per key block). Order of the adds varies: not bit-reproducible.
    pid_m = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    keys = pid_m * BM + tl.arange(0, BM)
    dq_ = tl.arange(0, DQK)
    dv_ = tl.arange(0, DV)
    offs_n = tl.arange(0, BN)
    kmask = (keys[:, None] < M) & (dq_[None, :] < CQK)
    vmask = (keys[:, None] < M) & (dv_[None, :] < CV)
    k = tl.load(K + b * skb + keys[:, None] * skm + dq_[None, :] * skc, mask=kmask, other=0.0)  # [BM, DQK]
    v = tl.load(V + b * svb + keys[:, None] * svm + dv_[None, :] * svc, mask=vmask, other=0.0)  # [BM, DV]
    dk = tl.zeros([BM, DQK], tl.float32)
    dv = tl.zeros([BM, DV], tl.float32)
    q_base = Q + b * sqb + dq_[:, None] * sqc
    do_base = DO + b * sdb + dv_[:, None] * sdc
    qmask_c = dq_[:, None] < CQK
    domask_c = dv_[:, None] < CV
    for start in range(0, N, BN):
        cols = start + offs_n
        if EVEN_N:
            qt = tl.load(q_base + cols[None, :] * sqn, mask=qmask_c, other=0.0)  # [DQK, BN]
            dot = tl.load(do_base + cols[None, :] * sdn, mask=domask_c, other=0.0)  # [DV, BN]
            lse = tl.load(LSE + b * N + cols)
            delta = tl.load(DELTA + b * N + cols)
        else:
            qt = tl.load(q_base + cols[None, :] * sqn, mask=qmask_c & (cols[None, :] < N), other=0.0)
            dot = tl.load(do_base + cols[None, :] * sdn, mask=domask_c & (cols[None, :] < N), other=0.0)
            lse = tl.load(LSE + b * N + cols, mask=cols < N, other=float("inf"))  # -> P = 0 there
            delta = tl.load(DELTA + b * N + cols, mask=cols < N, other=0.0)
        st = tl.dot(k, qt, input_precision=PREC)  # [BM, BN]
        pt = tl.math.exp2(st * qk_scale - lse[None, :])
        dv = tl.dot(pt.to(dot.dtype), tl.trans(dot), dv, input_precision=PREC)
        dpt = tl.dot(v, dot, input_precision=PREC)  # [BM, BN]
        dst = pt * (dpt - delta[None, :])
        dk = tl.dot(dst.to(qt.dtype), tl.trans(qt), dk, input_precision=PREC)
        if ATOMIC_DQ:
            dqp = tl.dot(tl.trans(dst.to(k.dtype)), k, input_precision=PREC)  # [BN, DQK]
            tl.atomic_add(DQA + b * sdqab + cols[:, None] * sdqan + dq_[None, :] * sdqac, dqp,
                          mask=(cols[:, None] < N) & (dq_[None, :] < CQK), sem="relaxed")
    dk = dk * scale
    tl.store(DK + b * sdkb + keys[:, None] * sdkm + dq_[None, :] * sdkc, dk.to(DK.dtype.element_ty), mask=kmask)
    tl.store(DVO + b * sdvb + keys[:, None] * sdvm + dv_[None, :] * sdvc, dv.to(DVO.dtype.element_ty), mask=vmask)


@triton.autotune(configs=_configs("dq"), key=["N", "M", "CQK", "CV", "DQK", "DV"])
@triton.heuristics(_heur)
@triton.jit
def _dq_kernel(
    Q, K, V, DO, LSE, DELTA, DQ,
    sqb, sqc, sqn, skb, skc, skm, svb, svc, svm, sdb, sdc, sdn, sdqb, sdqc, sdqn,
    N, M, CQK, CV, qk_scale, scale,
    DQK: tl.constexpr, DV: tl.constexpr, PREC: tl.constexpr,
    BN: tl.constexpr, BM: tl.constexpr, EVEN_N: tl.constexpr, EVEN_M: tl.constexpr,
):
    pid_n = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    rows = pid_n * BN + tl.arange(0, BN)
    dq_ = tl.arange(0, DQK)
    dv_ = tl.arange(0, DV)
    offs_m = tl.arange(0, BM)
    qmask = (rows[:, None] < N) & (dq_[None, :] < CQK)
    q = tl.load(Q + b * sqb + rows[:, None] * sqn + dq_[None, :] * sqc, mask=qmask, other=0.0)  # [BN, DQK]
    do = tl.load(DO + b * sdb + rows[:, None] * sdn + dv_[None, :] * sdc,
                 mask=(rows[:, None] < N) & (dv_[None, :] < CV), other=0.0)  # [BN, DV]
    lse = tl.load(LSE + b * N + rows, mask=rows < N, other=0.0)
    delta = tl.load(DELTA + b * N + rows, mask=rows < N, other=0.0)
    dq = tl.zeros([BN, DQK], tl.float32)
    k_base = K + b * skb + dq_[:, None] * skc
    v_base = V + b * svb + dv_[:, None] * svc
    kmask_c = dq_[:, None] < CQK
    vmask_c = dv_[:, None] < CV
    for start in range(0, M, BM):
        cols = start + offs_m
        if EVEN_M:
            kt = tl.load(k_base + cols[None, :] * skm, mask=kmask_c, other=0.0)  # [DQK, BM]
            vt = tl.load(v_base + cols[None, :] * svm, mask=vmask_c, other=0.0)  # [DV, BM]
        else:
            kt = tl.load(k_base + cols[None, :] * skm, mask=kmask_c & (cols[None, :] < M), other=0.0)
            vt = tl.load(v_base + cols[None, :] * svm, mask=vmask_c & (cols[None, :] < M), other=0.0)
        s = tl.dot(q, kt, input_precision=PREC)  # [BN, BM]
        p = tl.math.exp2(s * qk_scale - lse[:, None])
        if not EVEN_M:
            p = tl.where(cols[None, :] < M, p, 0.0)
        dp = tl.dot(do, vt, input_precision=PREC)  # [BN, BM]
        ds = p * (dp - delta[:, None])
        dq = tl.dot(ds.to(kt.dtype), tl.trans(kt), dq, input_precision=PREC)
    dq = dq * scale
    tl.store(DQ + b * sdqb + rows[:, None] * sdqn + dq_[None, :] * sdqc, dq.to(DQ.dtype.element_ty), mask=qmask)


def _pow2(x: int) -> int:
    return max(16, triton.next_power_of_2(x))


def _prec(dtype: torch.dtype) -> str:
    return "tf32x3" if dtype == torch.float32 else "tf32"


def _forward(q, k, v, scale):
    B, cqk, N = q.shape
    cv, M = v.shape[1], v.shape[2]
    o = torch.empty((B, cv, N), device=q.device, dtype=q.dtype)
    lse = torch.empty((B, N), device=q.device, dtype=torch.float32)
    grid = lambda meta: (triton.cdiv(N, meta["BN"]), B)  # noqa: E731
    _fwd_kernel[grid](
        q, k, v, o, lse, *q.stride(), *k.stride(), *v.stride(), *o.stride(),
        N, M, cqk, cv, scale * _LOG2E, DQK=_pow2(cqk), DV=_pow2(cv), PREC=_prec(q.dtype),
    )
    return o, lse


def _backward(q, k, v, o, lse, do, scale, atomic_dq):
    B, cqk, N = q.shape
    cv, M = v.shape[1], v.shape[2]
    DQK, DV = _pow2(cqk), _pow2(cv)
    delta = torch.empty((B, N), device=q.device, dtype=torch.float32)
    bn = 16 if _INTERPRET else 64
    _delta_kernel[(triton.cdiv(N, bn), B)](o, do, delta, *o.stride(), *do.stride(), N, cv, DV=DV, BN=bn)
    dk = torch.empty_like(k)
    dv = torch.empty_like(v)
    prec = _prec(q.dtype)
    if atomic_dq:
        dqa = torch.zeros((B, cqk, N), device=q.device, dtype=torch.float32)
    else:
        dqa = dk  # unused by the kernel (ATOMIC_DQ=False); autotune's zeroing of it is harmless
    def launch():
        _dkdv_kernel[lambda meta: (triton.cdiv(M, meta["BM"]), B)](
            q, k, v, do, lse, delta, dk, dv, dqa,
            *q.stride(), *k.stride(), *v.stride(), *do.stride(), *dk.stride(), *dv.stride(), *dqa.stride(),
            N, M, cqk, cv, scale * _LOG2E, scale, DQK=DQK, DV=DV, PREC=prec, ATOMIC_DQ=atomic_dq,
        )

    tuned_before = len(getattr(_dkdv_kernel, "cache", {}))
    launch()
    if atomic_dq and len(getattr(_dkdv_kernel, "cache", {})) != tuned_before:
        # this call autotuned (ran every config into DQA): accumulate once more from zero, whatever
        # the triton version's autotuner resets afterwards
        dqa.zero_()
        launch()
    if atomic_dq:
        return (dqa * scale).to(q.dtype), dk, dv
    dq = torch.empty_like(q)
    _dq_kernel[lambda meta: (triton.cdiv(N, meta["BN"]), B)](
        q, k, v, do, lse, delta, dq,
        *q.stride(), *k.stride(), *v.stride(), *do.stride(), *dq.stride(),
        N, M, cqk, cv, scale * _LOG2E, scale, DQK=DQK, DV=DV, PREC=prec,
    )
    return dq, dk, dv


def _unit_last(x: torch.Tensor) -> torch.Tensor:
    """Positions contiguous (coalesced loads); other strides are passed to the kernels as they are."""
    return x if x.stride(-1) == 1 else x.contiguous()


class _FlashSagan(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, scale, atomic_dq):
        ctx.atomic_dq = atomic_dq
        o, lse = _forward(_unit_last(q), _unit_last(k), _unit_last(v), scale)
        ctx.save_for_backward(q, k, v, o, lse)  # the inputs themselves: double backward needs their graph
        ctx.scale = scale
        return o

    @staticmethod
    def backward(ctx, do):
        q, k, v, o, lse = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph=True (gradient penalties): differentiable grads
            from ganzoo.ops.attention import dense_grads

            return (*dense_grads(q, k, v, do, ctx.scale), None, None)
        dq, dk, dv = _backward(_unit_last(q), _unit_last(k), _unit_last(v), o, lse, _unit_last(do), ctx.scale,
                               ctx.atomic_dq)
        return dq, dk, dv, None, None


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float | None = None,
           max_dv: int | None = None, deterministic: bool | None = None) -> torch.Tensor:
    """softmax(scale * q^T k) v for q [B,Cqk,N], k [B,Cqk,M], v [B,Cv,M] (scale None: 1).

    ``deterministic`` (default: ``torch.are_deterministic_algorithms_enabled()``): compute dQ in its
    own pass (bit-reproducible) instead of by atomic adds in the dK/dV pass (faster).

    Values wider than ``max_dv`` channels run as chunks of ``max_dv`` (a power of two >= 16)."""
    if q.device.type != "cuda" and not _INTERPRET:
        raise RuntimeError("the 'triton' attention backend needs CUDA tensors (or TRITON_INTERPRET=1)")
    if q.dtype not in (torch.float16, torch.bfloat16, torch.float32):
        raise TypeError(f"the 'triton' attention backend takes fp16/bf16/fp32, not {q.dtype}")
    if not (q.dtype == k.dtype == v.dtype):
        raise TypeError("q, k, v must share one dtype")
    if q.shape[1] > 128:
        raise ValueError(f"the 'triton' attention backend takes at most 128 q/k channels, got {q.shape[1]}")
    s = 1.0 if scale is None else float(scale)
    if s < 0:  # the online softmax scales the row max: keep the scale non-negative
        q, s = -q, -s
    cv = v.shape[1]
    max_dv = max_dv or MAX_DV[q.dtype]
    if deterministic is None:
        deterministic = torch.are_deterministic_algorithms_enabled()
    atomic = not deterministic
    if cv <= max_dv:
        return _FlashSagan.apply(q, k, v, s, atomic)
    # Exact: each value chunk gets the same attention weights.
    parts = [_FlashSagan.apply(q, k, v[:, i:i + max_dv], s, atomic) for i in range(0, cv, max_dv)]
    return torch.cat(parts, dim=1)
