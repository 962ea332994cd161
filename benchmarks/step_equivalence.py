"""The fast training step computes what the plain one does: same weights, same batch, same noise.

    PYTHONPATH=$PWD python3 benchmarks/step_equivalence.py --recipes cifar imagenet128 [--compile] --out DIR

For each recipe, two steps are built with ``ganzoo.training.step.build_train_step`` (the loop's own
step) from the same recipe and seed: the reference (``precision fp32``, TF32 off, NCHW, unfused
Adam, eager: plain fp32 arithmetic) and the fast one (default: bf16 autocast, channels_last, fused
Adam; ``--compile`` adds torch.compile; ``--fast-set`` replaces the fast overrides). The fast step
gets the reference's weights and buffers; both draw from data samplers over the same images in the
same order, and the RNG is reseeded identically before each call, so noise and labels match. Then:

1. one D update's gradients (``d_backward``): D loss and mean logits, and every D gradient;
2. one G update's gradients (``g_backward``): G loss and every G gradient;
3. one whole iteration (D steps, G step, EMA): the returned scalars, after the reference has trained
   ``WARM`` iterations and the fast step has taken over all of its state (Adam moments included).

Gradients are compared per network by ||g_fast - g_ref|| / ||g_ref|| over all its tensors (the worst
single tensors are listed too, not judged: a tensor whose gradient is tiny has a large relative
error in bf16 without anything being wrong); losses by |fast - ref| / max(1, |ref|). Tolerances:
bf16 (the default) 0.1 for gradients (measured on the CPU: 0.005 for D, 0.03 for G at batch 50, more at
tiny batches, where G's batch norm sees few samples) and 2e-2 for losses; with ``--fast-set`` keeping fp32,
5e-3 / 1e-4 (channels_last, fused Adam and compile only reorder fp32 arithmetic, but G's gradients amplify
the rounding: measured on the CPU at batch 8, channels_last 4e-4 and compile 1.0e-3 for G, 5e-7 for D;
a wrong step is off by O(1)). The whole iteration's scalars, which come after optimizer updates, get
0.1 (bf16) / 2e-3 (fp32): see ``iter_tol``.

Prints one line per check and PASS/FAIL; exit status 1 when any check fails. Synthetic images;
batch and widths from the recipe unless ``--set`` changes them (a 128x128 check at full batch
needs a GPU).
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ganzoo.recipe import load_recipe  # noqa: E402
from ganzoo.training.data import DataSampler  # noqa: E402
from ganzoo.training.build import resolve_device  # noqa: E402
from ganzoo.training.checkpoint import load_regularizer_state, regularizer_state  # noqa: E402
from ganzoo.training.step import build_train_step  # noqa: E402

# augment=[]: the augmentations draw their random parameters on the device, and the paths compared here
# draw them differently (a CUDA graph's replays, d_concat's one draw for real and fake together), so the
# same step would see different augmentations; each augment block's maths is checked against float64
# by its property tests (ganzoo/testing/augment.py)
RECIPES = {
    "imagenet128": ("recipes/imagenet128/sagan.yaml", []),
    "cifar": ("recipes/sagan.yaml", ["train.d_steps=4", "train.batch_size=50", "augment=[]"]),
}
REFERENCE = ["train.precision=fp32", "train.tf32=false", "train.channels_last=false",
             "train.fused_optim=false", "train.compile=false", "train.ema.foreach=true"]
FAST = ["train.precision=bf16", "train.channels_last=true", "train.fused_optim=true"]
WARM = 5  # reference iterations before the whole-iteration comparison (see compare_steps)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    num = torch.linalg.vector_norm((a.double() - b.double()).flatten()).item()
    den = torch.linalg.vector_norm(b.double().flatten()).item()
    return num / den if den > 0 else (0.0 if num == 0 else math.inf)


def _grads(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: (p.grad.detach().float().contiguous() if p.grad is not None else torch.zeros_like(p, dtype=torch.float32))
            for n, p in module.named_parameters()}


def _compare_grads(fast: dict[str, torch.Tensor], ref: dict[str, torch.Tensor]) -> tuple[float, list]:
    names = [n for n in ref if ref[n].numel()]
    num = sum(((fast[n].double() - ref[n].double()) ** 2).sum().item() for n in names)
    den = sum((ref[n].double() ** 2).sum().item() for n in names)
    total = math.sqrt(num / den) if den > 0 else (0.0 if num == 0 else math.inf)
    worst = sorted(((_rel(fast[n], ref[n]), n) for n in names), reverse=True)[:3]
    return total, [(n, e) for e, n in worst]


def _take_state(dst, src, training: bool = False) -> None:
    """``dst`` step gets ``src``'s weights and buffers (SN vectors, BN statistics) and EMA copy; with
    ``training`` also its Adam moments and data position (the same next batches)."""
    dst.G.load_state_dict(src.G.state_dict())
    dst.D.load_state_dict(src.D.state_dict())
    if src.G_ema is not None and dst.G_ema is not None:
        dst.G_ema.load_state_dict(src.G_ema.state_dict())
    load_regularizer_state(dst.reg, regularizer_state(src.reg))  # a stateful one's (LeCam's averages)
    if training:
        # deep copies: Optimizer.load_state_dict keeps the given moment tensors when their dtype and
        # device already fit, and the two optimizers would then update the same tensors
        dst.g_opt.load_state_dict(copy.deepcopy(src.g_opt.state_dict()))
        dst.d_opt.load_state_dict(copy.deepcopy(src.d_opt.state_dict()))
        dst.data.load_state_dict(src.data.state_dict())


def compare_steps(recipe_path: str, overrides: list[str], fast_overrides: list[str], device: torch.device,
                  seed: int = 123) -> dict:
    """Build the reference and the fast step from one recipe and compare them (see the module doc)."""
    ref_recipe = load_recipe(recipe_path, overrides + REFERENCE)
    fast_recipe = load_recipe(recipe_path, overrides + REFERENCE + fast_overrides)
    bf16 = fast_recipe.train.precision == "bf16" or (fast_recipe.train.precision == "auto" and device.type == "cuda")
    grad_tol, loss_tol = (1e-1, 2e-2) if bf16 else (5e-3, 1e-4)
    # after d_steps + 1 Adam updates the rounding differences are amplified: Adam moves every element
    # by about lr whatever its gradient's size, so noise-sized gradients (conv biases before a batch
    # norm) take lr-sized steps of random sign (measured on the CPU, tiny recipe, batch 8-32, 2 D steps:
    # G loss 0.023-0.034 apart in bf16, 2.3e-4 in reordered fp32; a wrong step is off by O(1))
    iter_tol = 1e-1 if bf16 else 2e-3
    tc = ref_recipe.train
    n = tc.batch_size * tc.d_steps * 3
    g = torch.Generator().manual_seed(seed)
    shape = (n, ref_recipe.channels, ref_recipe.resolution, ref_recipe.resolution)
    images = torch.randint(0, 256, shape, dtype=torch.uint8, generator=g)
    labels = torch.randint(0, max(ref_recipe.num_classes, 1), (n,), generator=g)

    def make(recipe):
        data = DataSampler(images, labels, recipe.seed, device, recipe.train.channels_last)
        return build_train_step(recipe, data, device)

    ref = make(ref_recipe)
    fast = make(fast_recipe)
    _take_state(fast, ref)  # identical starting point
    if device.type == "cuda":  # the reference is plain fp32 (the fast step's TF32 switch is global)
        torch.backends.cuda.matmul.allow_tf32 = fast_recipe.train.tf32
        torch.backends.cudnn.allow_tf32 = fast_recipe.train.tf32

    def call(step, fn):
        torch.manual_seed(seed)
        tf32 = step.tc.tf32 and device.type == "cuda"
        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.backends.cudnn.allow_tf32 = tf32
        out = fn(step)
        return out.detach().float().cpu()

    checks = []

    def check(name, err, tol, extra=None):
        ok = bool(math.isfinite(err) and err <= tol)
        checks.append({"check": name, "error": err, "tol": tol, "ok": ok, **({"worst": extra} if extra else {})})

    r = call(ref, lambda s: s.d_backward())
    f = call(fast, lambda s: s.d_backward())
    for i, what in enumerate(("D loss", "mean real logit", "mean fake logit")):
        check(f"D update: {what}", abs(float(f[i] - r[i])) / max(1.0, abs(float(r[i]))), loss_tol)
    err, worst = _compare_grads(_grads(fast.D), _grads(ref.D))
    check("D update: D gradients (all tensors)", err, grad_tol, worst)

    r = call(ref, lambda s: s.g_backward())
    f = call(fast, lambda s: s.g_backward())
    check("G update: G loss", abs(float(f - r)) / max(1.0, abs(float(r))), loss_tol)
    err, worst = _compare_grads(_grads(fast.G), _grads(ref.G))
    check("G update: G gradients (all tensors)", err, grad_tol, worst)

    # the whole iteration from a trained-for-a-moment state: Adam's first updates are lr * sign(g) for
    # every element, so elements whose gradient is rounding noise (e.g. conv biases before a batch
    # norm) take full-size steps of random sign, and after d_steps such updates the two steps differ
    # by O(lr) per weight for that reason alone (measured on the H100: fake logits 0.17 apart after 4
    # D updates from fresh Adam states). So the reference trains WARM iterations first, and the fast
    # step starts from all of its state: weights, buffers, EMA, Adam moments.
    for k in range(WARM):
        call(ref, lambda s, k=k: s(k))
    _take_state(fast, ref, training=True)
    r = call(ref, lambda s: s(WARM))
    f = call(fast, lambda s: s(WARM))
    for i, what in enumerate(("loss/d", "logits/real", "logits/fake", "loss/reg", "loss/g")):
        check(f"whole iteration: {what}", abs(float(f[i] - r[i])) / max(1.0, abs(float(r[i]))), iter_tol)
    return {"recipe": recipe_path, "overrides": overrides, "fast": fast_overrides, "bf16": bf16,
            "checks": checks, "ok": all(c["ok"] for c in checks)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--recipes", nargs="+", default=["cifar"], help="imagenet128, cifar, or recipe paths")
    p.add_argument("--set", dest="overrides", nargs="+", action="extend", default=[], metavar="PATH=VALUE")
    p.add_argument("--fast-set", nargs="+", default=None, metavar="PATH=VALUE",
                   help=f"the fast step's overrides (default: {' '.join(FAST)})")
    p.add_argument("--compile", action="store_true", help="add train.compile=true to the fast step")
    p.add_argument("--device", default="auto")
    p.add_argument("--out", default=None, help="folder for step_equivalence.json")
    args = p.parse_args(argv)
    device = resolve_device(args.device)
    fast = list(FAST if args.fast_set is None else args.fast_set) + (["train.compile=true"] if args.compile else [])
    results, ok = [], True
    for name in args.recipes:
        path, extra = RECIPES.get(name, (name, []))
        path = str(ROOT / path) if not Path(path).exists() else path
        torch._dynamo.reset()  # each recipe compiles afresh (no recompile limit shared with the last one)
        try:
            res = compare_steps(path, list(extra) + list(args.overrides), fast, device)
        except Exception as exc:  # noqa: BLE001
            res = {"recipe": name, "ok": False, "error": f"{type(exc).__name__}: {exc}".splitlines()[0]}
        results.append(res)
        ok &= res["ok"]
        print(f"== {name}: fast = {' '.join(fast)}  ->  {'PASS' if res['ok'] else 'FAIL'}")
        if "error" in res:
            print(f"   error: {res['error']}")
        for c in res.get("checks", []):
            worst = ""
            if c.get("worst"):
                worst = "  (worst tensors: " + ", ".join(f"{n} {e:.1e}" for n, e in c["worst"]) + ")"
            print(f"   {'ok  ' if c['ok'] else 'FAIL'} {c['check']:<40} {c['error']:.2e} (tol {c['tol']:.0e}){worst}")
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "step_equivalence.json").write_text(json.dumps(results, indent=1, default=str))
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
