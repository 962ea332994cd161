"""Attention benchmark: the widely copied PyTorch SAGAN block vs ganzoo's, and every backend.

One command on the GPU (see docs/benchmarks/attention.md for the results and the exact command):

    PYTHONPATH=$PWD python3 benchmarks/attention.py --out results_dir

Feature maps 16/32/64/128 with C = 512/256/128/64, batch 64, fp32 and bf16, forward+backward.

Three tables (the first two by default; ``--variants`` adds the third, ``--variants-only`` runs it alone):
* blocks: the copied block (q/k 1x1 convs to C/8 with bias, value C->C, the full [B, N, N] matrix
  built with bmm, out = gamma*o + x) against ganzoo's ``sagan_full`` (same maths, backend
  ``auto``) and ganzoo's ``sagan`` (pooled key/value, value C/2; no copied counterpart).
* ops: ``attend`` alone for every backend (and sdpa variants) on the full shape (N = M = H*W,
  Cqk = C/8, Cv = C) and the pooled shape (M = N/4, Cv = C/2): the data ``auto``'s table is read from.
* variants (issue 20): every block of the ``attention`` registry, plugins' included, built as the models
  build it (``ATTENTION.build(name, C)``, default config) at 32x32 C=256, 64x64 C=128 and 128x128 C=64
  (``--variant-shapes SIZE:C ...``), fp32 and bf16 *autocast* (fp32 parameters and input, the forward
  under ``torch.autocast``); each row has the parameter count, or the one-line error of a block that
  fails to build or run at that shape.

    PYTHONPATH=$PWD python3 benchmarks/attention.py --variants-only --out results_dir

On the CPU (``--device cpu``, a smoke test: ``--variant-shapes 8:16 --batch 2 --rep-ms 20``) time is
``time.perf_counter`` and memory is null.

Counting: time = median of fwd+bwd (``triton.testing.do_bench``, L2 flushed between runs);
memory = peak ``torch.cuda.max_memory_allocated`` over one fwd+bwd, inputs and parameters
included; useful TFLOP/s = 3 * 2*B*N*M*(Cqk+Cv) / time: only the unpadded Q.K^T and A.V products,
forward once and backward twice (the convs are not counted); relative error = ||out - ref|| /
||ref|| against float64 on 2 of the 64 samples (blocks: gamma = 1 and the error of gamma*o, i.e.
out - x; ops: q, k, v ~ N(0, 1/sqrt(Cqk)) so logits have unit variance). TF32 is off for convs and
matmuls, so fp32 rows are fp32 arithmetic.

The ganzoo blocks are imported when pydantic is there (the GPU image needs the staged wheels);
without it the blocks table has the copied block and the ops table only (the variants table needs it).
"""
from __future__ import annotations

import argparse
import copy
import datetime as _dt
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path

import warnings

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from ganzoo.ops import attention as A  # noqa: E402

SIZES = {16: 512, 32: 256, 64: 128, 128: 64}
VARIANT_SHAPES = ((32, 256), (64, 128), (128, 64))  # (map size, C) of the variants table
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
BLOCK_BACKENDS = ("auto", "dense", "sdpa", "triton")
FWD_TOO = ("triton", "sdpa pad h64", "dense")  # also timed forward-only (no_grad)


class CopiedSelfAttention(nn.Module):
    """The PyTorch SAGAN self-attention block as it is widely copied (reproduced here to measure it)."""

    def __init__(self, in_dim: int):
        super().__init__()
        self.query_conv = nn.Conv2d(in_dim, in_dim // 8, kernel_size=1)
        self.key_conv = nn.Conv2d(in_dim, in_dim // 8, kernel_size=1)
        self.value_conv = nn.Conv2d(in_dim, in_dim, kernel_size=1)
        self.gamma = nn.Parameter(torch.zeros(1))
        self.softmax = nn.Softmax(dim=-1)

    def forward(self, x):
        b, c, w, h = x.size()
        proj_query = self.query_conv(x).view(b, -1, w * h).permute(0, 2, 1)
        proj_key = self.key_conv(x).view(b, -1, w * h)
        energy = torch.bmm(proj_query, proj_key)
        attention = self.softmax(energy)
        proj_value = self.value_conv(x).view(b, -1, w * h)
        out = torch.bmm(proj_value, attention.permute(0, 2, 1))
        out = out.view(b, c, w, h)
        return self.gamma * out + x


# ------------------------------------------------------------------------------------------ timing
def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def bench(fn, device, warmup_ms=60, rep_ms=300):
    """Median milliseconds of ``fn``."""
    if device.type == "cuda":
        from triton.testing import do_bench

        return float(do_bench(fn, warmup=warmup_ms, rep=rep_ms, return_mode="median"))
    fn()
    times = []
    t_end = time.perf_counter() + rep_ms / 1000
    while time.perf_counter() < t_end or len(times) < 3:
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def peak_gib(fn, device):
    """Peak GiB over one call of ``fn`` (what is allocated before it counts too); None off the GPU."""
    if device.type != "cuda":
        return None
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    fn()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() / 2**30


def _oom(e: BaseException) -> bool:
    return isinstance(e, torch.cuda.OutOfMemoryError) or "out of memory" in str(e).lower()


def rel(a, b):
    a, b = a.double(), b.double()
    if not torch.isfinite(a).all():
        return float("nan")
    return ((a - b).norm() / b.norm()).item()


def ref_attend(q, k, v, chunk=2048):
    """float64 softmax(q^T k) v, query-chunked so that 128x128 fits."""
    q, k, v = q.double(), k.double(), v.double()
    outs = []
    for i in range(0, q.shape[2], chunk):
        logits = torch.einsum("bcn,bcm->bnm", q[:, :, i:i + chunk], k)
        w = torch.softmax(logits, dim=-1)
        outs.append(torch.einsum("bnm,bcm->bcn", w, v))
    return torch.cat(outs, dim=2)


def run_case(make_step, device, check=None, rep_ms=300):
    """Time and measure one fwd+bwd step; returns dict (or the error, e.g. OOM)."""
    res = {}
    try:
        step = make_step()
        step()  # compile / autotune / warm
        _sync(device)
        res["peak_gib"] = peak_gib(step, device)
        res["ms"] = bench(step, device, rep_ms=rep_ms)
        if check is not None:
            res["rel_err"] = check()
    except Exception as e:  # noqa: BLE001 - reported in the table
        if _oom(e):
            res = {"error": "OOM"}
        else:
            res = {"error": f"{type(e).__name__}: {(str(e).splitlines() or [''])[0][:120]}"}
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return res


# ------------------------------------------------------------------------------------------ blocks
def ganzoo_blocks(block_backends=BLOCK_BACKENDS):
    try:
        from ganzoo.attention.sagan import SaganAttention, SaganAttentionConfig
        from ganzoo.attention.sagan_full import SaganFullAttention, SaganFullAttentionConfig
    except Exception as e:  # noqa: BLE001
        print(f"[ganzoo blocks not importable: {type(e).__name__}: {e}]", flush=True)
        return {}
    out = {}
    for b in block_backends:
        out[f"ganzoo sagan_full [{b}]"] = lambda c, b=b: SaganFullAttention(SaganFullAttentionConfig(backend=b), c)
    for b in block_backends:
        out[f"ganzoo sagan pooled [{b}]"] = lambda c, b=b: SaganAttention(SaganAttentionConfig(backend=b), c)
    return out


def block_rows(size, C, dtype, B, device, block_backends=BLOCK_BACKENDS, rep_ms=300):
    rows = []
    makers = {"copied block (bmm)": CopiedSelfAttention, **ganzoo_blocks(block_backends)}
    N = size * size
    for name, make in makers.items():
        torch.manual_seed(0)
        blk = make(C).to(device=device, dtype=dtype)
        with torch.no_grad():
            blk.gamma.fill_(1.0)
        x = torch.randn(B, C, size, size, device=device, dtype=dtype, requires_grad=True)
        go = torch.randn_like(x)

        def make_step(blk=blk, x=x, go=go):
            def step():
                x.grad = None
                for p in blk.parameters():
                    p.grad = None
                blk(x).backward(go)
            return step

        def check(blk=blk, x=x):
            xs = x[:2].detach()
            blk.eval()  # spectral norms: no power-iteration step between forward and reference
            with torch.no_grad():
                out = blk(xs)
                if hasattr(blk, "reference"):
                    ref = blk.reference(xs)
                else:
                    ref = copy.deepcopy(blk).double()(xs.double())
            blk.train()
            return rel(out.double() - xs.double(), ref - xs.double())

        if name.endswith("[triton]") and device.type != "cuda":
            continue
        pooled = "pooled" in name
        M = N // 4 if pooled else N
        cv = C // 2 if pooled else C
        r = run_case(make_step, device, check, rep_ms)
        r.update(name=name, size=size, C=C, dtype=str(dtype).split(".")[-1], N=N, M=M, cqk=C // 8, cv=cv,
                 flops=A.attention_flops(B, N, M, C // 8, cv))
        if "ms" in r:
            r["tflops"] = r["flops"] / (r["ms"] * 1e-3) / 1e12
        rows.append(r)
        del blk, x, go
        _emit(r)
    return rows


# ------------------------------------------------------------------------------------------ variants
def variant_rows(size, C, dtype, B, device, rep_ms=300):
    """One row per registered attention block (plugins included) at [B, C, size, size]: fwd+bwd with
    ``dtype`` bf16 as autocast over fp32 parameters and input; a block that fails to build or run
    gives a row with its one-line error."""
    from ganzoo.registry import ATTENTION

    rows = []
    amp = dtype != torch.float32
    for entry in ATTENTION:
        built = {}

        def make_step(name=entry.name, built=built):
            torch.manual_seed(0)
            blk = ATTENTION.build(name, C).to(device)  # as the generator and discriminator build it
            built["params"] = sum(p.numel() for p in blk.parameters())
            x = torch.randn(B, C, size, size, device=device, requires_grad=True)
            go = torch.randn_like(x)

            def step():
                x.grad = None
                for p in blk.parameters():
                    p.grad = None
                with torch.autocast(device.type, dtype=dtype, enabled=amp):
                    out = blk(x)
                out.backward(go.to(out.dtype))
            return step

        r = run_case(make_step, device, rep_ms=rep_ms)
        r.update(table="variants", name=entry.name, source=entry.source, size=size, C=C,
                 dtype=str(dtype).split(".")[-1], autocast=amp, batch=B, params=built.get("params"))
        rows.append(r)
        _emit(r)
    return rows


# ------------------------------------------------------------------------------------------ ops
def op_variants(device, dtype):
    from torch.nn.attention import SDPBackend

    v = {"dense": lambda q, k, v_: A.attend(q, k, v_, backend="dense"),
         "sdpa": lambda q, k, v_: A.attend(q, k, v_, backend="sdpa")}
    if device.type == "cuda":
        del v["sdpa"]  # the explicit variants below cover its choices
    if device.type == "cuda":
        # (run 1 also had heads of 256 and flash/cuDNN forced: never the fastest; torch's own pick
        # for the padded call was as fast as the best forced kernel)
        for hd in (64, 128):
            v[f"sdpa pad h{hd}"] = lambda q, k, v_, hd=hd: A.attend_sdpa(q, k, v_, head_dim=hd)
        for hd in (64, 128):
            v[f"sdpa eff nopad h{hd}"] = lambda q, k, v_, hd=hd: A.attend_sdpa(
                q, k, v_, head_dim=hd, pad_qk=False, kernels=[SDPBackend.EFFICIENT_ATTENTION])
        v["triton"] = lambda q, k, v_: A.attend(q, k, v_, backend="triton")
        from ganzoo.ops import _attention_triton as T

        v["triton det"] = lambda q, k, v_: T.attend(q, k, v_, deterministic=True)
        v["triton dv64"] = lambda q, k, v_: T.attend(q, k, v_, max_dv=64)
        v["auto"] = lambda q, k, v_: A.attend(q, k, v_, backend="auto")
    else:
        v["auto"] = lambda q, k, v_: A.attend(q, k, v_, backend="auto")
    return v


def op_rows(size, C, dtype, B, device, only=None, rep_ms=300):
    rows = []
    N = size * size
    for shape_name, M, cv in (("full", N, C), ("pooled", N // 4, C // 2)):
        cqk = C // 8
        g = torch.Generator(device="cpu").manual_seed(size)
        s = cqk ** -0.25
        q = (torch.randn(B, cqk, N, generator=g) * s).to(device=device, dtype=dtype).requires_grad_()
        k = (torch.randn(B, cqk, M, generator=g) * s).to(device=device, dtype=dtype).requires_grad_()
        v = torch.randn(B, cv, M, generator=g).to(device=device, dtype=dtype).requires_grad_()
        go = torch.randn(B, cv, N, generator=g).to(device=device, dtype=dtype)
        ref = ref_attend(q[:2].detach(), k[:2].detach(), v[:2].detach())
        for name, fn in op_variants(device, dtype).items():
            if only and name not in only:
                continue

            def make_step(fn=fn):
                def step():
                    q.grad = k.grad = v.grad = None
                    fn(q, k, v).backward(go)
                return step

            def check(fn=fn):
                with torch.no_grad():
                    return rel(fn(q[:2], k[:2], v[:2]), ref)

            r = run_case(make_step, device, check, rep_ms)
            if FWD_TOO and name in FWD_TOO and "ms" in r:
                with torch.no_grad():
                    r["fwd_ms"] = bench(lambda fn=fn: fn(q, k, v), device, rep_ms=rep_ms)
            r.update(name=name, shape=shape_name, size=size, C=C, dtype=str(dtype).split(".")[-1], N=N, M=M,
                     cqk=cqk, cv=cv, flops=A.attention_flops(B, N, M, cqk, cv))
            if name == "auto":
                r["auto_picks"] = A.choose_backend(q, k, v)
            if "ms" in r:
                r["tflops"] = r["flops"] / (r["ms"] * 1e-3) / 1e12
            rows.append(r)
            _emit(r)
        del q, k, v, go, ref
    return rows


# ------------------------------------------------------------------------------------------ output
_JSONL = None  # rows are appended here as they are measured, so a run cut short keeps its data


def _emit(r):
    print(_fmt_row(r), flush=True)
    if _JSONL is not None:
        with open(_JSONL, "a") as f:
            f.write(json.dumps(r) + "\n")


def _num(v, spec):
    """``v`` formatted with ``spec``, or ``-`` where there is no number (memory on the CPU)."""
    return "-" if v is None else format(v, spec)


def _fmt_row(r):
    kind = "amp" if r.get("autocast") else r.get("table", r.get("shape", "block"))[:7]
    head = f"{r['size']:>3}x{r['size']:<3} C{r['C']:<3} {r['dtype']:<8} {kind:<7} {r['name']:<28}"
    if "error" in r:
        return head + f" {r['error']}"
    if r.get("table") == "variants":
        return head + f" {r['ms']:9.3f} ms {_num(r['peak_gib'], '7.2f')} GiB {r['params']:>10,} params"
    extra = f" -> {r['auto_picks']}" if "auto_picks" in r else ""
    if "fwd_ms" in r:
        extra += f" (fwd only {r['fwd_ms']:.3f} ms)"
    return head + (f" {r['ms']:9.3f} ms {_num(r['peak_gib'], '7.2f')} GiB {r.get('tflops', 0):7.1f} TFLOP/s"
                   f" err {r.get('rel_err', float('nan')):.2e}{extra}")


def markdown(rows, kind):
    out = []
    if kind == "variants":
        out.append("| map | C | dtype | block (source) | parameters | fwd+bwd ms (median) | peak GiB |")
        out.append("|---|---|---|---|---:|---:|---:|")
        for r in rows:
            cells = [f"{r['size']}x{r['size']}", str(r["C"]), "bf16 autocast" if r["autocast"] else "fp32",
                     f"{r['name']} ({r['source']})", "" if r["params"] is None else f"{r['params']:,}"]
            cells += [r["error"], ""] if "error" in r else [f"{r['ms']:.3f}", _num(r["peak_gib"], ".2f")]
            out.append("| " + " | ".join(cells) + " |")
        return "\n".join(out)
    if kind == "blocks":
        out.append("| map | C | dtype | block | fwd+bwd ms (median) | peak GiB | useful TFLOP/s | rel. err vs fp64 |")
        out.append("|---|---|---|---|---:|---:|---:|---:|")
    else:
        out.append("| map | C | dtype | shape (N, M, Cqk, Cv) | backend | fwd+bwd ms (median) | peak GiB | useful TFLOP/s | rel. err vs fp64 |")
        out.append("|---|---|---|---|---|---:|---:|---:|---:|")
    for r in rows:
        cells = [f"{r['size']}x{r['size']}", str(r["C"]), r["dtype"]]
        if kind == "blocks":
            cells.append(r["name"])
        else:
            cells.append(f"{r['shape']} ({r['N']}, {r['M']}, {r['cqk']}, {r['cv']})")
            cells.append(r["name"] + (f" -> {r['auto_picks']}" if "auto_picks" in r else ""))
        if "error" in r:
            cells += [r["error"], "", "", ""]
        else:
            cells += [f"{r['ms']:.3f}", _num(r["peak_gib"], ".2f"), f"{r.get('tflops', 0):.1f}", f"{r.get('rel_err', float('nan')):.1e}"]
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def _size_c(text):
    """``SIZE:C`` (e.g. ``32:256``) -> (32, 256)."""
    try:
        size, C = (int(t) for t in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected SIZE:C such as 32:256, got {text!r}") from None
    return size, C


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="*", default=list(SIZES))
    ap.add_argument("--dtypes", nargs="*", default=list(DTYPES), choices=list(DTYPES))
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--only", nargs="*", default=None, help="op-table backends to run (default: all)")
    ap.add_argument("--no-blocks", action="store_true")
    ap.add_argument("--block-backends", nargs="*", default=list(BLOCK_BACKENDS), help="backends the ganzoo blocks are timed with")
    ap.add_argument("--no-ops", action="store_true")
    ap.add_argument("--variants", action="store_true", help="also run the variants table (every registered attention block)")
    ap.add_argument("--variants-only", action="store_true", help="run the variants table alone (= --variants --no-blocks --no-ops)")
    ap.add_argument("--variant-shapes", nargs="*", type=_size_c, default=list(VARIANT_SHAPES), metavar="SIZE:C",
                    help="feature-map sizes and channels of the variants table (default: 32:256 64:128 128:64)")
    ap.add_argument("--rep-ms", type=float, default=300, help="milliseconds of timed repetitions per row (all tables)")
    ap.add_argument("--out", default=None, help="folder for attention.json and attention.md")
    args = ap.parse_args(argv)
    if args.variants_only:
        args.variants, args.no_blocks, args.no_ops = True, True, True
    device = torch.device(args.device)
    warnings.filterwarnings("ignore", message=".*(kernel not used|runtime disabled|stride 1|require).*")
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    info = {
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "command": "python3 " + " ".join(sys.argv if argv is None else [__file__, *argv]),
        "batch": args.batch,
    }
    try:
        import triton

        info["triton"] = triton.__version__
    except Exception:  # noqa: BLE001
        pass
    print(json.dumps(info), flush=True)
    if args.out:
        global _JSONL
        Path(args.out).mkdir(parents=True, exist_ok=True)
        _JSONL = Path(args.out) / "rows.jsonl"
        _JSONL.write_text(json.dumps({"info": info}) + "\n")
    blocks, ops, variants = [], [], []
    for dt in args.dtypes:
        for size in args.sizes:
            C = SIZES.get(size, 64)
            if not args.no_blocks:
                blocks += block_rows(size, C, DTYPES[dt], args.batch, device, args.block_backends, args.rep_ms)
            if not args.no_ops:
                ops += op_rows(size, C, DTYPES[dt], args.batch, device, args.only, args.rep_ms)
        if args.variants:
            for size, C in args.variant_shapes:
                variants += variant_rows(size, C, DTYPES[dt], args.batch, device, args.rep_ms)
    tables = [("Blocks", "blocks", blocks, not args.no_blocks), ("attend() backends", "ops", ops, not args.no_ops),
              ("Attention variants (bf16 = autocast)", "variants", variants, args.variants)]
    md = f"Device: {info['device']}; torch {info['torch']}; triton {info.get('triton')}; {info['date']}; batch {args.batch}\n"
    md += "".join(f"\n### {title}\n\n{markdown(rows, kind)}\n" for title, kind, rows, ran in tables if ran)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "attention.json").write_text(json.dumps({"info": info, "blocks": blocks, "ops": ops, "variants": variants},
                                                       indent=1))
        (out / "attention.md").write_text(md)
    for _, kind, rows, ran in tables:
        if ran and kind != "ops":
            print("\n" + markdown(rows, kind))
    if args.no_ops:
        return 0
    best = {}
    for r in ops:
        if "ms" in r and r["name"] != "auto":
            key = (r["size"], r["dtype"], r["shape"])
            if key not in best or r["ms"] < best[key]["ms"]:
                best[key] = r
    print("\nfastest op backend per case:")
    for (size, dt, shape), r in sorted(best.items()):
        auto = next((x for x in ops if x["name"] == "auto" and (x["size"], x["dtype"], x["shape"]) == (size, dt, shape)), {})
        print(f"  {size:>3} {dt:<8} {shape:<6} {r['name']:<22} {r['ms']:8.3f} ms  err {r.get('rel_err', math.nan):.1e}"
              f"   auto -> {auto.get('auto_picks')} {auto.get('ms', math.nan):8.3f} ms")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    raise SystemExit(main())
