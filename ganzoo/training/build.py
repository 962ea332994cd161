"""Building a run, once: the device and its global switches, seeds, data, networks and optimisers.

The lowest layer of training (it imports only :mod:`.plan`, :mod:`.data` and :mod:`.ema`): the step,
the strategy, the hooks and the driver get what is built here. :func:`build` does it all in one
order (backends, seed, data, seed again, networks, optimisers), so the initial weights depend on the
recipe only, not on how the dataset was made.
"""
from __future__ import annotations

import os
import random
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import GanzooError, RecipeError
from ..recipe import Recipe
from ..contracts import flag
from ..registry import DATASET, DISCRIMINATOR, GENERATOR, REGULARIZER
from .data import DataSampler
from .ema import make_ema
from .plan import Plan, autocast_dtype

__all__ = [
    "Networks", "autocast_dtype", "build", "build_data", "build_dataset", "build_discriminator", "build_generator",
    "build_networks", "build_regularizer", "configure_backends", "make_optimizer", "resolve_device", "seed_everything",
]


def resolve_device(spec: str | torch.device = "auto") -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cuda`` without a GPU is a one-line error."""
    if isinstance(spec, torch.device):
        return spec
    spec = str(spec).strip().lower()
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except RuntimeError:
        raise GanzooError(f"--device: unknown device '{spec}' (use auto, cpu, cuda or cuda:N)") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise GanzooError(f"--device {spec}: CUDA is not available on this machine (use --device cpu)")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise GanzooError(f"--device {spec}: only {torch.cuda.device_count()} CUDA device(s) present")
    elif device.type != "cpu":
        raise GanzooError(f"--device: unsupported device '{spec}' (use auto, cpu, cuda or cuda:N)")
    return device


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # CPU and every CUDA device


def configure_backends(recipe: Recipe, device: torch.device) -> None:
    """Global CUDA switches the recipe asks for: TF32 for fp32 matmuls/convs (``train.tf32``) and
    tuned conv kernels (``cudnn.benchmark``), or deterministic kernels (``train.deterministic``).
    Nothing on the CPU."""
    if device.type == "cuda":
        tf32 = bool(recipe.train.tf32)
        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.backends.cudnn.allow_tf32 = tf32
        det = bool(recipe.train.deterministic)
        torch.backends.cudnn.benchmark = not det
        torch.backends.cudnn.deterministic = det
        if det:
            # cuBLAS reads this when its handle is made (lazily, at the first matmul)
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(det, warn_only=True)


def make_optimizer(params, cfg, device: torch.device, fused: bool = True, capturable: bool = False) -> torch.optim.Adam:
    """Adam with the recipe's settings; the fused kernel on CUDA when ``fused`` (``train.fused_optim``);
    ``capturable`` (CUDA only: its step counter on the device, so a CUDA graph can capture the step,
    ``train.cuda_graph``)."""
    kwargs: dict[str, Any] = {"fused": True} if fused and device.type == "cuda" else {}
    if capturable and device.type == "cuda":
        kwargs["capturable"] = True
    return torch.optim.Adam(
        params, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps, weight_decay=cfg.weight_decay, **kwargs
    )


def build_generator(recipe: Recipe) -> nn.Module:
    return GENERATOR.build(recipe.generator, recipe.resolution, recipe.num_classes, recipe.channels)


def build_discriminator(recipe: Recipe) -> nn.Module:
    return DISCRIMINATOR.build(recipe.discriminator, recipe.resolution, recipe.num_classes, recipe.channels)


def check_forward(recipe: Recipe, source: str = "recipe") -> None:
    """One forward of G and D, built on the meta device (shapes only: nothing is allocated, no state
    or random stream of the run changes): ``G(z, y)`` must give ``[2, channels, resolution,
    resolution]`` and ``D(x, y)`` one logit per image. A block that fails or returns the wrong shape is
    a one-line :class:`RecipeError` before anything is written (``ganzoo validate`` runs it too). A
    block that cannot run on the meta device (data-dependent code) is not checked here."""
    n, want = 2, (2, recipe.channels, recipe.resolution, recipe.resolution)
    try:
        with torch.device("meta"), torch.no_grad():
            G, D = build_generator(recipe).eval(), build_discriminator(recipe).eval()
            y = torch.zeros(n, dtype=torch.long) if recipe.num_classes else None
            x = G(torch.empty(n, int(G.z_dim)), y)
            if tuple(x.shape) != want:
                raise RecipeError(source, f"generator '{recipe.generator.type}' returned images of shape "
                                  f"{list(x.shape)}, expected {list(want)}", ("generator",))
            logits = D(torch.empty(want), y)
    except RecipeError:
        raise
    except Exception as exc:  # noqa: BLE001  (a block's own failure, reported in one line)
        if "meta" in str(exc).lower():
            return  # the block needs real values: its shapes are checked by the first training step
        raise RecipeError(source, f"G and D fail on a batch of {n}: {type(exc).__name__}: "
                          f"{str(exc).splitlines()[0] if str(exc) else ''}", ()) from None
    if tuple(logits.shape) not in ((n,), (n, 1)):
        raise RecipeError(source, f"discriminator '{recipe.discriminator.type}' returned logits of shape "
                          f"{list(logits.shape)}, expected one per image ([{n}] or [{n}, 1])", ("discriminator",))


def build_dataset(recipe: Recipe, source: str = "recipe"):
    """The training split, checked against the recipe's resolution, channels and classes."""
    ds = DATASET.build(recipe.data, recipe.resolution, split="train")
    shape = tuple(ds.images.shape)
    want = (recipe.channels, recipe.resolution, recipe.resolution)
    if len(shape) != 4 or shape[1:] != want:
        raise GanzooError(
            f"{source}: data: dataset '{recipe.data.type}' gives images of shape {shape}, "
            f"the recipe needs [N, {want[0]}, {want[1]}, {want[2]}] (check resolution and channels)"
        )
    if recipe.num_classes and ds.num_classes != recipe.num_classes:
        raise GanzooError(
            f"{source}: num_classes: is {recipe.num_classes} but dataset '{recipe.data.type}' "
            f"has {ds.num_classes} classes"
        )
    return ds


def build_data(recipe: Recipe, device: torch.device, source: str = "recipe") -> DataSampler:
    """The training split as a resumable seeded batch stream on ``device``."""
    ds = build_dataset(recipe, source)
    return DataSampler(ds.images, ds.labels, recipe.seed, device, recipe.train.channels_last, recipe.train.hflip)


@dataclass
class Networks:
    """G, D, the EMA copy of G (None without ``train.ema``), the two optimisers, and D's regularizer
    (here because it may carry training state: a ``stateful`` one is on the device and checkpointed)."""

    G: nn.Module
    D: nn.Module
    G_ema: nn.Module | None
    g_opt: torch.optim.Optimizer
    d_opt: torch.optim.Optimizer
    regularizer: Any


def build_regularizer(recipe: Recipe, device: torch.device) -> Any:
    """The recipe's regularizer; a ``stateful`` one (``ganzoo/contracts.py``) moved to ``device``."""
    reg = REGULARIZER.build(recipe.regularizer)
    if flag("regularizer", reg, "stateful"):
        reg = reg.to(device)
    return reg


def build_networks(recipe: Recipe, plan: Plan, device: torch.device) -> Networks:
    """G, D (channels_last if asked), the EMA copy and both optimisers (fused on CUDA if asked;
    capturable under a CUDA graph), after seeding with ``recipe.seed``. ``train.compile`` compiles
    G's forward in place (``nn.Module.compile``: state-dict keys unchanged; the EMA copy, used for
    samples and evaluation, stays eager), and D's when the plan says so (``Plan.eager_d``). Under
    ``train.cuda_graph`` the compiled kernels are what the graph captures."""
    tc = recipe.train
    seed_everything(recipe.seed)  # network init does not depend on how the dataset was made
    G = build_generator(recipe).to(device)
    D = build_discriminator(recipe).to(device)
    if tc.channels_last:
        G = G.to(memory_format=torch.channels_last)
        D = D.to(memory_format=torch.channels_last)
    G.train()
    D.train()
    G_ema = make_ema(G) if tc.ema.enabled else None
    capturable = plan.cuda_graph  # a captured optimiser step needs capturable Adam
    g_opt = make_optimizer(G.parameters(), tc.g_optim, device, fused=tc.fused_optim, capturable=capturable)
    d_opt = make_optimizer(D.parameters(), tc.d_optim, device, fused=tc.fused_optim, capturable=capturable)
    if plan.compile_g:
        G.compile()
    if plan.compile_d:
        D.compile()
    return Networks(G, D, G_ema, g_opt, d_opt, build_regularizer(recipe, device))


def build(recipe: Recipe, plan: Plan, device: torch.device, source: str = "recipe") -> tuple[Networks, DataSampler]:
    """Everything a run trains with, built once: the device's switches, seeds, data, networks."""
    configure_backends(recipe, device)  # CUDA: TF32 (train.tf32) for the fp32 parts, tuned conv kernels
    seed_everything(recipe.seed)
    data = build_data(recipe, device, source)
    return build_networks(recipe, plan, device), data
