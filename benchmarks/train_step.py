"""Training throughput (issue 8): times ganzoo's training step, option by option.

One command on the GPU (results and exact commands: docs/benchmarks/training.md):

    PYTHONPATH=$PWD python3 benchmarks/train_step.py --out DIR --data-root /path/to/cifar10-jpeg.tar.gz

What is timed is the object the training loop calls once per G step
(``ganzoo.training.step.build_train_step(recipe, data, device)``, see ``ganzoo/training/step.py``),
built from the recipe with each variant's ``--set`` overrides: ``d_steps`` D updates over
``batch_size`` real + ``batch_size`` fake images (``accumulate`` micro-batches each), one G update
over ``batch_size`` fakes, the EMA update. One iteration = one such call.

Recipes (``--recipes``): ``imagenet128`` = recipes/imagenet128/sagan.yaml as it is (batch 256 as 2 x 128,
1 D step); ``cifar`` = recipes/sagan.yaml with ``train.d_steps=4 train.batch_size=50`` (the reference
CIFAR settings); any other value is a recipe path, taken as it is. ``--set`` applies to every recipe.

Variants (``--variants``; each is a set of recipe overrides on top of the recipe):

    fp32           baseline: precision fp32 (TF32 on for convs and matmuls, as train.tf32 defaults),
                   NCHW, unfused (for-each) Adam, eager, attention backend auto, fused EMA
    fp32-notf32    fp32 with train.tf32=false (true fp32 arithmetic)
    bf16           + bf16 autocast (spectral-norm power iteration and losses stay fp32)
    bf16-cl        + channels_last
    bf16-cl-fused  + fused Adam  (= what `ganzoo run` does on CUDA with the defaults, plus channels_last)
    fused-resample + resampling folded into the convs (generator/discriminator.fused_resample=true)
    compile        + torch.compile of G (default mode; D stays eager without d_concat, see ganzoo/training/plan.py)
    compile-graph  all-fast-concat + torch.compile of G and D, the compiled kernels captured in the CUDA graph
    compile-dense  compile with attention backend dense (if the Triton attention does not compile)
    dense-attn     bf16-cl-fused with attention backend dense in G and D (instead of auto)
    ema-loop       bf16-cl-fused with the EMA as a Python loop of lerp_ (train.ema.foreach=false)
    sync           bf16-cl-fused, reading the step's scalars back to the host every step
    recipe         the recipe's own settings, untouched
    real           bf16-cl-fused on real images (--data-root; 32x32 recipes only), array on the GPU
    real-host      real, with the images in pinned host memory (gathered, copied per batch)
    cuda-graph     bf16-cl-fused with the iteration replayed as a CUDA graph (train.cuda_graph=true)
    all-fast       fused-resample + cuda-graph
    d-concat       bf16-cl-fused with D run once over cat(real, fake) in its update (train.d_concat)
    all-fast-concat  all-fast + d-concat

Every other variant uses synthetic uint8 images already on the GPU, read through the same
``DataSampler`` as real data. Counting: per-iteration time from CUDA events recorded between
iterations (no host sync inside the timed block), after ``--warmup`` untimed iterations; the median
is reported; real img/s = d_steps * batch_size / median; peak memory =
``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats`` (after the warm-up);
FLOPs of one iteration counted once per recipe with ``torch.utils.flop_counter.FlopCounterMode``
(eager, bf16-cl-fused with dense attention, so the attention matmuls are aten ops it sees);
%peak = FLOPs / median / ``--peak-tflops``. Host syncs: one extra iteration under
``torch.cuda.set_sync_debug_mode("warn")``, warnings counted.

Robust by construction: a variant that fails is one row with status ``failed`` and a one-line
reason; each variant has ``--max-seconds`` (a hard alarm; a timed phase cut short keeps the
iterations it timed), the whole run ``--total-seconds`` (later variants are ``skipped``); rows go to
``OUT/rows.jsonl`` as they are measured, and ``train_step.md`` / ``train_step.json`` are rewritten
after each row. The table is printed last.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import gc
import json
import math
import os
import platform
import signal
import statistics
import sys
import time
import traceback
import warnings
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ganzoo.recipe import load_recipe  # noqa: E402
from ganzoo.training import data as data_mod  # noqa: E402
from ganzoo.training.data import DataSampler  # noqa: E402
from ganzoo.training.build import build_dataset, resolve_device  # noqa: E402
from ganzoo.training.step import build_train_step  # noqa: E402

RECIPES = {
    "imagenet128": ("recipes/imagenet128/sagan.yaml", []),
    "cifar": ("recipes/sagan.yaml", ["train.d_steps=4", "train.batch_size=50"]),
}
PLAIN = ["train.precision=fp32", "train.channels_last=false", "train.fused_optim=false",
         "train.compile=false", "train.tf32=true", "train.ema.foreach=true"]
FAST = ["train.precision=bf16", "train.channels_last=true", "train.fused_optim=true", "train.compile=false"]
DENSE = ["generator.attention.backend=dense", "discriminator.attention.backend=dense"]
FUSED_RESAMPLE = ["generator.fused_resample=true", "discriminator.fused_resample=true"]
# name -> (description, overrides, options)
VARIANTS: dict[str, tuple[str, list[str], dict]] = {
    "fp32": ("baseline: fp32 (TF32 on), NCHW, for-each Adam, eager", PLAIN, {}),
    "fp32-notf32": ("fp32 with TF32 off", PLAIN + ["train.tf32=false"], {}),
    "bf16": ("+ bf16 autocast", PLAIN + ["train.precision=bf16"], {}),
    "bf16-cl": ("+ channels_last", PLAIN + ["train.precision=bf16", "train.channels_last=true"], {}),
    "bf16-cl-fused": ("+ fused Adam", PLAIN + FAST, {}),
    "fused-resample": ("+ resampling folded into the convs", PLAIN + FAST + FUSED_RESAMPLE, {}),
    "compile": ("+ torch.compile of G", PLAIN + FAST + ["train.compile=true"], {}),
    "compile-dense": ("compile, attention dense (not auto)", PLAIN + FAST + DENSE + ["train.compile=true"], {}),
    "dense-attn": ("bf16-cl-fused, attention dense (not auto)", PLAIN + FAST + DENSE, {}),
    "ema-loop": ("bf16-cl-fused, EMA as a Python loop", PLAIN + FAST + ["train.ema.foreach=false"], {}),
    "sync": ("bf16-cl-fused, scalars read every step", PLAIN + FAST, {"sync": True}),
    "cuda-graph": ("bf16-cl-fused, the iteration replayed as a CUDA graph", PLAIN + FAST + ["train.cuda_graph=true"], {}),
    "all-fast": ("fused-resample + cuda-graph", PLAIN + FAST + FUSED_RESAMPLE + ["train.cuda_graph=true"], {}),
    "d-concat": ("bf16-cl-fused, D once over cat(real, fake)", PLAIN + FAST + ["train.d_concat=true"], {}),
    "all-fast-concat": ("all-fast + D once over cat(real, fake)",
                        PLAIN + FAST + FUSED_RESAMPLE + ["train.cuda_graph=true", "train.d_concat=true"], {}),
    "compile-graph": ("all-fast-concat + torch.compile of G and D, captured in the graph",
                      PLAIN + FAST + FUSED_RESAMPLE + ["train.cuda_graph=true", "train.d_concat=true",
                                                       "train.compile=true"], {}),
    "recipe": ("the recipe's own settings", [], {}),
    "real": ("bf16-cl-fused, real CIFAR images on the GPU", PLAIN + FAST, {"real": True}),
    "real-host": ("bf16-cl-fused, real images in pinned host memory", PLAIN + FAST, {"real": True, "host": True}),
}
DEFAULT_VARIANTS = ["fp32", "bf16", "bf16-cl", "bf16-cl-fused", "fused-resample", "dense-attn", "cuda-graph", "all-fast",
                    "real", "real-host", "compile"]
# left out of the default run (not of an explicit --variants): at 16x16, auto already picks dense
DEFAULT_SKIP = {"cifar": {"dense-attn"}}
FLOP_VARIANT = PLAIN + FAST + DENSE
COLUMNS = [
    ("recipe", "recipe"), ("variant", "variant"), ("status", "status"), ("s_per_iter", "s/iter"),
    ("img_per_s", "real img/s"), ("peak_gib", "peak GiB"), ("tflops", "TFLOP/s"), ("pct_peak", "% bf16 peak"),
    ("host_syncs", "host syncs/iter"), ("iters", "iters"), ("warmup_s", "warm-up s"), ("note", "note"),
]


class Budget(BaseException):
    """The per-variant time limit (--max-seconds) ran out (a BaseException, so that library code
    catching Exception, e.g. a compiler wrapping errors, lets it through)."""


def _alarm(signum, frame):  # noqa: ARG001
    raise Budget()


@contextlib.contextmanager
def hard_limit(seconds: float):
    """Raise :class:`Budget` in the main thread after ``seconds`` (SIGALRM; no-op where unavailable)."""
    usable = hasattr(signal, "setitimer") and seconds > 0
    if usable:
        old = signal.signal(signal.SIGALRM, _alarm)
        signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        if usable:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, old)


def one_line(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".strip().splitlines()
    first = text[0] if text else type(exc).__name__
    return first[:300]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


# ------------------------------------------------------------------------------------------ data
class Synthetic:
    """uint8 images and labels made once per recipe on the device (enough that no timed
    iteration crosses an epoch boundary of the data order)."""

    def __init__(self, recipe, device: torch.device, iterations: int, max_images: int) -> None:
        tc = recipe.train
        n = tc.d_steps * tc.batch_size * max(iterations, 1)
        n = max(tc.batch_size, min(n, max_images))
        g = torch.Generator(device=device).manual_seed(1234)
        shape = (n, recipe.channels, recipe.resolution, recipe.resolution)
        self.images = torch.randint(0, 256, shape, dtype=torch.uint8, generator=g, device=device)
        nc = max(recipe.num_classes, 1)
        self.labels = torch.randint(0, nc, (n,), generator=g, device=device)
        self.n = n


def make_data(recipe, device, opts, synthetic: Synthetic, data_root: str | None, cache: dict):
    tc = recipe.train
    if not opts.get("real"):
        return DataSampler(synthetic.images, synthetic.labels, recipe.seed, device, tc.channels_last)
    if data_root is None:
        raise ValueError("needs --data-root (the CIFAR-10 tar.gz)")
    if recipe.resolution != 32 or recipe.data.type != "cifar10":
        raise ValueError("real data only for the 32x32 CIFAR-10 recipe")
    if "real" not in cache:
        t0 = time.monotonic()
        cache["real"] = build_dataset(recipe, "--data-root")
        cache["real_load_s"] = time.monotonic() - t0
    ds = cache["real"]
    old = data_mod.DEVICE_FRACTION
    if opts.get("host"):
        data_mod.DEVICE_FRACTION = 0.0  # never fits: pinned host memory, gathered and copied per batch
    try:
        sampler = DataSampler(ds.images, ds.labels, recipe.seed, device, tc.channels_last)
    finally:
        data_mod.DEVICE_FRACTION = old
    if opts.get("host") and sampler.on_device and device.type == "cuda":
        raise RuntimeError("images stayed on the device")
    return sampler


# ------------------------------------------------------------------------------------------ one variant
def count_host_syncs(step, i: int, device: torch.device) -> int | None:
    if device.type != "cuda":
        return None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            step(i)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    sync(device)
    return sum("synchroniz" in str(w.message) for w in caught)


def run_variant(recipe, device, opts, args, synthetic, cache, seconds: float) -> dict:
    """Build the step, warm up, time; returns the measured fields."""
    t0 = time.monotonic()
    out: dict = {}
    step = None
    try:
        with hard_limit(seconds):
            data = make_data(recipe, device, opts, synthetic, args.data_root, cache)
            if opts.get("real"):
                out["data"] = f"on {device.type}" if data.on_device else "in pinned host memory"
            step = build_train_step(recipe, data, device)
            tc = recipe.train
            i = 0
            for _ in range(args.warmup):
                row = step(i)
                i += 1
                sync(device)
            out["warmup_s"] = round(time.monotonic() - t0, 2)
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            times: list[float] = []
            t_timed = time.monotonic()
            rows = []
            try:
                if device.type == "cuda":
                    events = [torch.cuda.Event(enable_timing=True)]
                    events[0].record()
                    for _ in range(args.iters):
                        row = step(i)
                        i += 1
                        if opts.get("sync"):
                            row = row.cpu()
                        rows.append(row)
                        ev = torch.cuda.Event(enable_timing=True)
                        ev.record()
                        events.append(ev)
                        if time.monotonic() - t_timed > args.timed_seconds and len(events) > args.min_iters:
                            break
                    sync(device)
                    times = [a.elapsed_time(b) / 1000.0 for a, b in zip(events[:-1], events[1:])]
                else:
                    for _ in range(args.iters):
                        t = time.perf_counter()
                        rows.append(step(i).cpu())
                        i += 1
                        times.append(time.perf_counter() - t)
                        if time.monotonic() - t_timed > args.timed_seconds and len(times) >= args.min_iters:
                            break
            except Budget:
                if device.type == "cuda":
                    with contextlib.suppress(Exception):
                        sync(device)
                        times = [a.elapsed_time(b) / 1000.0 for a, b in zip(events[:-1], events[1:])]
                if len(times) < 3:
                    raise
                out["note"] = f"cut by --max-seconds after {len(times)} iterations"
            if device.type == "cuda":
                out["peak_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
                out["reserved_gib"] = torch.cuda.max_memory_reserved(device) / 2**30
            last = torch.stack([r.float().cpu() for r in rows[-3:]]) if rows else None
            if last is not None and not bool(torch.isfinite(last).all()):
                out["note"] = (out.get("note", "") + " non-finite losses").strip()
            if last is not None:
                out["last_losses"] = {"loss/d": float(last[-1, 0]), "loss/g": float(last[-1, 4])}
            try:
                out["host_syncs"] = count_host_syncs(step, i, device) if "note" not in out else None
            except Budget:
                out["host_syncs"] = None  # the timing above stands
            if args.profile and device.type == "cuda":
                try:
                    out["profile"] = profile_step(step, i + 1, device, args.profile, Path(args.out),
                                                  f"{opts.get('_label', 'step')}")
                except Budget:
                    pass  # the timing above stands
    except Budget:
        raise Budget(f"over --max-seconds ({seconds:.0f} s) after {time.monotonic() - t0:.0f} s"
                     + ("" if "warmup_s" in out else " (still warming up / compiling)"))
    finally:
        del step
        if recipe.train.compile:
            with contextlib.suppress(Exception):
                torch._dynamo.reset()
        free(device)
    if not times:
        raise RuntimeError("no iteration timed")
    med = statistics.median(times)
    out.update(
        iters=len(times), s_per_iter=med,
        s_per_iter_mean=sum(times) / len(times),
        s_per_iter_p10=sorted(times)[len(times) // 10], s_per_iter_p90=sorted(times)[(9 * len(times)) // 10],
        img_per_s=tc.d_steps * tc.batch_size / med,
    )
    return out


def profile_step(step, i: int, device: torch.device, n: int, out_dir: Path, label: str) -> str:
    """``n`` more iterations under torch.profiler: the kernels' table (by total CUDA time) goes to
    ``OUT/profile-LABEL.txt``; returns that file's name. Not part of the timing."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for k in range(n):
            step(i + k)
        sync(device)
    name = f"profile-{label}.txt".replace("/", "_")
    ka = prof.key_averages()
    text = [f"# {label}: {n} iterations under torch.profiler (self CUDA time per op, summed over the iterations)", "",
            ka.table(sort_by="self_cuda_time_total", row_limit=45, max_name_column_width=70), "",
            "# by CPU time (launch overhead shows here)", "",
            ka.table(sort_by="self_cpu_time_total", row_limit=25, max_name_column_width=70)]
    (out_dir / name).write_text("\n".join(text))
    return name


def count_flops(recipe_path, overrides, device, synthetic) -> float:
    """FLOPs of one iteration (eager, dense attention so every matmul is an aten op)."""
    from torch.utils.flop_counter import FlopCounterMode

    recipe = load_recipe(recipe_path, overrides + FLOP_VARIANT)
    data = DataSampler(synthetic.images, synthetic.labels, recipe.seed, device, recipe.train.channels_last)
    step = build_train_step(recipe, data, device)
    step(0)  # first call outside the counter (cuDNN autotuning etc.)
    counter = FlopCounterMode(display=False)
    with counter:
        step(1)
    sync(device)
    total = float(counter.get_total_flops())
    del step, data
    free(device)
    return total


# ------------------------------------------------------------------------------------------ output
def fmt(key: str, v) -> str:
    if v is None or v == "":
        return ""
    if key == "s_per_iter":
        return f"{v:.4f}"
    if key in ("img_per_s", "tflops"):
        return f"{v:.0f}" if v >= 10 else f"{v:.2f}"
    if key == "peak_gib":
        return f"{v:.2f}"
    if key == "pct_peak":
        return f"{v:.1f}"
    return str(v)


def table(rows: list[dict]) -> str:
    lines = ["| " + " | ".join(h for _, h in COLUMNS) + " |",
             "|" + "|".join("---:" if k not in ("recipe", "variant", "status", "note") else "---" for k, _ in COLUMNS) + "|"]
    for r in rows:
        cells = []
        for k, _ in COLUMNS:
            v = r.get(k)
            if k == "note" and r.get("status") != "ok":
                v = r.get("reason", "")
            cells.append(fmt(k, v).replace("|", "/"))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_outputs(out_dir: Path, meta: dict, rows: list[dict]) -> str:
    md = [f"# Training step throughput ({meta['date']})", "",
          f"- device: {meta['device_name']}; torch {meta['torch']}; Python {meta['python']}",
          f"- command: `{meta['command']}`",
          f"- iterations: warm-up {meta['warmup']}, timed up to {meta['iters']} (or {meta['timed_seconds']} s); "
          f"bf16 peak for %: {meta['peak_tflops']} TFLOP/s",
          ""]
    for name, info in meta["recipes"].items():
        md.append(f"- `{name}`: {info}")
    md += ["", "Variants:", ""]
    md += [f"- `{v}`: {VARIANTS[v][0]}" for v in meta["variants"]]
    md += ["", table(rows), ""]
    text = "\n".join(md)
    (out_dir / "train_step.md").write_text(text)
    (out_dir / "train_step.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1, default=str))
    return table(rows)


# ------------------------------------------------------------------------------------------ main
def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="folder for train_step.md, train_step.json, rows.jsonl")
    p.add_argument("--recipes", nargs="+", default=["imagenet128", "cifar"],
                   help="imagenet128, cifar, or recipe paths (default: imagenet128 cifar)")
    p.add_argument("--variants", nargs="+", default=None,
                   help=f"any of {', '.join(VARIANTS)} or 'all' (default: {' '.join(DEFAULT_VARIANTS)}); "
                        "compile variants run after every other")
    p.add_argument("--set", dest="overrides", nargs="+", action="extend", default=[], metavar="PATH=VALUE",
                   help="recipe overrides applied to every recipe (before the variant's)")
    p.add_argument("--data-root", default=None, help="CIFAR-10 source (e.g. the cifar10-jpeg.tar.gz) for real/real-host")
    p.add_argument("--device", default="auto")
    p.add_argument("--warmup", type=int, default=3, help="untimed iterations per variant (compile happens here)")
    p.add_argument("--iters", type=int, default=30, help="timed iterations per variant (at most)")
    p.add_argument("--min-iters", type=int, default=8, help="timed iterations at least, before --timed-seconds cuts")
    p.add_argument("--timed-seconds", type=float, default=8.0, help="stop timing a variant after this long")
    p.add_argument("--max-seconds", type=float, default=100.0, help="hard limit per variant (build, warm-up, timing)")
    p.add_argument("--total-seconds", type=float, default=340.0,
                   help="no new variant starts after this long, and none runs past it")
    p.add_argument("--peak-tflops", type=float, default=790.0, help="bf16 dense matrix peak for %% of peak")
    p.add_argument("--no-flops", action="store_true", help="skip the FLOP count")
    p.add_argument("--profile", type=int, default=0, metavar="N",
                   help="after timing each variant, N more iterations under torch.profiler: OUT/profile-RECIPE-VARIANT.txt")
    p.add_argument("--synthetic-images", type=int, default=16384, help="most synthetic images per recipe")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    t_start = time.monotonic()
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    device = resolve_device(args.device)
    default_run = args.variants is None
    variants = DEFAULT_VARIANTS if default_run else args.variants
    variants = list(VARIANTS) if "all" in variants else list(dict.fromkeys(variants))
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        print(f"train_step.py: unknown variants {unknown}; known: {', '.join(VARIANTS)}", file=sys.stderr)
        return 2
    recipes: dict[str, tuple[str, list[str]]] = {}
    for name in args.recipes:
        path, extra = RECIPES.get(name, (name, []))
        path = str(ROOT / path) if not Path(path).is_absolute() and not Path(path).exists() else path
        recipes[name] = (path, list(extra) + list(args.overrides))

    meta = {
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "torch": torch.__version__, "python": platform.python_version(),
        "command": " ".join([Path(sys.argv[0]).name] + (sys.argv[1:] if argv is None else list(argv))),
        "warmup": args.warmup, "iters": args.iters, "timed_seconds": args.timed_seconds,
        "peak_tflops": args.peak_tflops, "variants": variants, "recipes": {}, "flops": {},
    }
    rows: list[dict] = []
    rows_file = out_dir / "rows.jsonl"
    rows_file.write_text("")

    def emit(row: dict) -> None:
        rows.append(row)
        with rows_file.open("a") as f:
            f.write(json.dumps(row, default=str) + "\n")
        write_outputs(out_dir, meta, rows)
        msg = row.get("reason") or (f"{row['s_per_iter']:.4f} s/iter  {row['img_per_s']:.0f} img/s" if row["status"] == "ok" else "")
        print(f"[{time.monotonic() - t_start:6.0f} s] {row['recipe']:>12} {row['variant']:<14} {row['status']:<7} {msg}", flush=True)

    # load every recipe once (errors are one row each) and make its synthetic data lazily
    loaded: dict[str, dict] = {}
    for name, (path, ov) in recipes.items():
        try:
            r = load_recipe(path, ov)
            if args.data_root and r.data.type == "cifar10":  # the real-data rows read it
                ov = ov + [f"data.root={args.data_root}"]
                r = load_recipe(path, ov)
            tc = r.train
            loaded[name] = {"path": path, "overrides": ov, "recipe": r, "cache": {}}
            meta["recipes"][name] = (f"{os.path.relpath(path, ROOT)} {' '.join('--set ' + o for o in ov)}".strip()
                                     + f" (batch {tc.batch_size} = {tc.accumulate} x {tc.batch_size // tc.accumulate}, "
                                     f"d_steps {tc.d_steps}, EMA {'on' if tc.ema.enabled else 'off'})")
        except Exception as exc:  # noqa: BLE001
            emit({"recipe": name, "variant": "-", "status": "failed", "reason": one_line(exc)})

    def synthetic(name):
        info = loaded[name]
        if "synthetic" not in info:
            info["synthetic"] = Synthetic(info["recipe"], device, args.warmup + args.iters + 2, args.synthetic_images)
        return info["synthetic"]

    # order: per recipe the FLOP count and the eager variants; compile variants of all recipes last
    plan = []
    compiled = [v for v in variants if v.startswith("compile")]
    skip = DEFAULT_SKIP if default_run else {}
    for name in loaded:
        plan.append((name, None))
        plan += [(name, v) for v in variants if v not in compiled and v not in skip.get(name, ())]
    plan += [(name, v) for v in compiled for name in loaded]

    for name, variant in plan:
        info = loaded[name]
        if variant is None:
            if args.no_flops:
                continue
            try:
                left = args.total_seconds - (time.monotonic() - t_start)
                with hard_limit(min(args.max_seconds, max(left, 10.0))):
                    info["flops"] = count_flops(info["path"], info["overrides"], device, synthetic(name))
                meta["flops"][name] = info["flops"]
                print(f"[{time.monotonic() - t_start:6.0f} s] {name:>12} FLOPs/iter {info['flops'] / 1e12:.3f} T", flush=True)
            except BaseException as exc:  # noqa: BLE001
                if isinstance(exc, KeyboardInterrupt):
                    raise
                meta["flops"][name] = f"failed: {one_line(exc)}"
                print(f"{name}: FLOP count failed: {one_line(exc)}", flush=True)
                free(device)
            continue
        desc, vov, opts = VARIANTS[variant]
        row = {"recipe": name, "variant": variant, "description": desc}
        left = args.total_seconds - (time.monotonic() - t_start)
        if left <= 5:
            emit({**row, "status": "skipped", "reason": f"--total-seconds {args.total_seconds:.0f} used up"})
            continue
        if opts.get("real") and (args.data_root is None or info["recipe"].data.type != "cifar10"):
            why = "no --data-root" if args.data_root is None else "real data only for the CIFAR-10 recipe"
            emit({**row, "status": "skipped", "reason": why})
            continue
        try:
            recipe = load_recipe(info["path"], info["overrides"] + vov)
            if opts.get("real") and "real" not in info["cache"]:  # decoding (or the cache) is not the step's time
                t0 = time.monotonic()
                with hard_limit(max(args.max_seconds, 60.0)):
                    info["cache"]["real"] = build_dataset(recipe, "--data-root")
                info["cache"]["real_load_s"] = time.monotonic() - t0
                left = args.total_seconds - (time.monotonic() - t_start)
                if left <= 5:
                    raise RuntimeError(f"--total-seconds used up loading the dataset ({info['cache']['real_load_s']:.0f} s)")
            opts = {**opts, "_label": f"{Path(name).stem}-{variant}"}
            res = run_variant(recipe, device, opts, args, synthetic(name), info["cache"], min(args.max_seconds, left))
            if opts.get("real"):
                res["load_s"] = round(info["cache"]["real_load_s"], 1)  # dataset build, once per recipe
            flops = info.get("flops")
            if isinstance(flops, float) and flops > 0:
                res["flops_per_iter"] = flops
                res["tflops"] = flops / res["s_per_iter"] / 1e12
                res["pct_peak"] = 100.0 * res["tflops"] / args.peak_tflops
            if opts.get("real"):
                res["note"] = (res.get("note", "") + f" data {res.get('data')}").strip()
            emit({**row, "status": "ok", **res})
        except BaseException as exc:  # noqa: BLE001
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise
            (out_dir / "errors.log").open("a").write(f"--- {name} {variant}\n{traceback.format_exc()}\n")
            emit({**row, "status": "failed", "reason": one_line(exc)})
            free(device)

    final = write_outputs(out_dir, meta, rows)
    print(f"\ntotal {time.monotonic() - t_start:.0f} s; written {out_dir}/train_step.md, train_step.json, rows.jsonl\n")
    print(final)
    return 0


if __name__ == "__main__":
    sys.exit(main())
