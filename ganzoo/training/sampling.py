"""Sampling from a generator: fixed noise for progress grids, uint8 conversion, PNG grids, and
standing batch-norm statistics for evaluation."""
from __future__ import annotations

import contextlib
import copy
import io
import math
import sys
import time
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from ..atomic import atomic_write_bytes

GRID_COLUMNS = 8
MAX_CLASS_ROWS = 16
NOISE_SEED_OFFSET = 0x5A3D1E  # the fixed grid noise never shares a stream with training
STANDING_SEED_OFFSET = 0x57A4D  # nor does the noise of standing statistics


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] float images -> uint8 [0, 255] (rounded, clamped)."""
    return x.float().add(1.0).mul(127.5).round_().clamp_(0, 255).to(torch.uint8)


def grid_labels(num_classes: int, columns: int = GRID_COLUMNS) -> torch.Tensor | None:
    """One row per class (at most ``MAX_CLASS_ROWS`` classes, evenly spread) or None if unconditional."""
    if num_classes <= 0:
        return None
    rows = min(num_classes, MAX_CLASS_ROWS)
    classes = torch.linspace(0, num_classes - 1, rows).round().long()
    return classes.repeat_interleave(columns)


def fixed_noise(z_dim: int, num_classes: int, seed: int) -> tuple[torch.Tensor, torch.Tensor | None, int]:
    """The progress-grid batch ``(z, y, columns)``: the same for every step and every resume."""
    y = grid_labels(num_classes)
    n = GRID_COLUMNS * GRID_COLUMNS if y is None else y.numel()
    g = torch.Generator().manual_seed(int(seed) + NOISE_SEED_OFFSET)
    return torch.randn(n, z_dim, generator=g), y, GRID_COLUMNS


def latent_noise(n: int, z_dim: int, generator: torch.Generator, truncation: float | None = None) -> torch.Tensor:
    """Noise ``[n, z_dim]`` for G from ``generator``: N(0, 1), the training distribution, or with
    ``truncation`` t > 0 the normal truncated to [-t, t] (BigGAN's truncation trick, Brock et al. 2019:
    less variety, each sample more typical). Truncated noise is drawn by the inverse CDF in float64,
    ``Phi^-1(U(Phi(-t), Phi(t)))``, which is exact for any t with no rejection loop (a small t rejects
    almost every normal draw). ``None``: ``torch.randn``, the stream every grid and evaluation used before."""
    if truncation is None:
        return torch.randn(n, z_dim, generator=generator)
    t = float(truncation)
    if not (math.isfinite(t) and t > 0):
        raise ValueError(f"truncation must be a positive finite number, got {truncation}")
    low = torch.special.ndtr(torch.tensor(-t, dtype=torch.float64))
    u = torch.rand(n, z_dim, generator=generator, dtype=torch.float64)
    return torch.special.ndtri(low + u * (1 - 2 * low)).clamp_(-t, t).float()


@torch.no_grad()
def generate(
    generator: nn.Module,
    z: torch.Tensor,
    y: torch.Tensor | None,
    batch_size: int = 256,
    autocast_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """uint8 images [N, C, H, W] (on CPU) from ``generator`` in eval mode, in batches."""
    was_training = generator.training
    generator.eval()
    device = next(generator.parameters()).device
    out = []
    try:
        for i in range(0, z.shape[0], batch_size):
            zb = z[i : i + batch_size].to(device)
            yb = None if y is None else y[i : i + batch_size].to(device)
            amp = torch.autocast(device.type, dtype=autocast_dtype) if autocast_dtype else contextlib.nullcontext()
            with amp:
                img = generator(zb, yb)
            out.append(to_uint8(img).cpu())
    finally:
        generator.train(was_training)
    return torch.cat(out)


def make_generate_fn(
    generator: nn.Module,
    z_dim: int,
    num_classes: int,
    seed: int,
    batch_size: int = 256,
    autocast_dtype: torch.dtype | None = None,
    truncation: float | None = None,
) -> Callable[[int], torch.Tensor]:
    """``generate_fn(n) -> uint8 [n, C, H, W]`` for metrics: its own seeded noise stream (uniform
    classes when conditional), so evaluating never disturbs the training RNG; ``truncation``: the
    noise of :func:`latent_noise`."""
    g = torch.Generator().manual_seed(int(seed))

    def generate_fn(n: int) -> torch.Tensor:
        z = latent_noise(n, z_dim, g, truncation)
        y = torch.randint(0, num_classes, (n,), generator=g) if num_classes > 0 else None
        return generate(generator, z, y, batch_size, autocast_dtype)

    return generate_fn


def grid_png(images: torch.Tensor, columns: int, padding: int = 2) -> bytes:
    """uint8 [N, C, H, W] images -> PNG bytes of a grid with ``columns`` images per row."""
    from PIL import Image

    n, c, h, w = images.shape
    columns = max(1, min(columns, n))
    rows = math.ceil(n / columns)
    canvas = torch.zeros(c, rows * (h + padding) + padding, columns * (w + padding) + padding, dtype=torch.uint8)
    for i in range(n):
        r, col = divmod(i, columns)
        top, left = padding + r * (h + padding), padding + col * (w + padding)
        canvas[:, top : top + h, left : left + w] = images[i]
    arr = canvas.permute(1, 2, 0).numpy()
    pil = Image.fromarray(arr[:, :, 0] if c == 1 else arr)  # L, LA, RGB or RGBA from the shape
    buf = io.BytesIO()
    pil.save(buf, format="PNG")
    return buf.getvalue()


def save_grid(path: str | Path, images: torch.Tensor, columns: int) -> Path:
    """Write a PNG grid atomically."""
    return atomic_write_bytes(path, grid_png(images, columns))


def batch_norms(module: nn.Module) -> list[nn.Module]:
    """The batch-norm layers of ``module`` that keep running statistics."""
    return [m for m in module.modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]


CPU_NOTICE_SECONDS = 60.0  # work on the CPU (an evaluation, standing statistics) expected to take longer is announced


def batch_norm_buffers(module: nn.Module) -> dict[str, torch.Tensor]:
    """The running-statistics buffers of ``module``'s batch norms, by their state-dict names."""
    norms = {id(m) for m in batch_norms(module)}
    return {f"{name}.{b}" if name else b: t for name, m in module.named_modules() if id(m) in norms
            for b, t in m.named_buffers(recurse=False)}


@torch.no_grad()
def with_buffers(generator: nn.Module, buffers: dict[str, torch.Tensor]) -> nn.Module:
    """A copy of ``generator`` (eval mode) with ``buffers`` (:func:`batch_norm_buffers` of a standing copy)
    in place of its batch norms' own; they must name exactly its batch-norm buffers with their shapes."""
    G = copy.deepcopy(generator).eval()
    own = batch_norm_buffers(G)
    if own.keys() != buffers.keys() or any(own[k].shape != buffers[k].shape for k in own):
        raise ValueError("the stored batch-norm buffers do not fit this generator")
    for k, t in buffers.items():
        own[k].copy_(t)
    return G


@torch.no_grad()
def with_standing_statistics(generator: nn.Module, batches: int, batch_size: int, num_classes: int, seed: int,
                             autocast_dtype: torch.dtype | None = None, progress: bool = False) -> nn.Module:
    """A copy of ``generator`` (eval mode) whose batch-norm running statistics are the exact average
    batch statistics of ``batches`` batches of ``batch_size`` samples from its own seeded noise
    (BigGAN's "standing statistics"; ``eval.standing_stats``). The reason: EMA-G averages G's weights
    but copies G's running statistics (training/ema.py), so in eval mode it normalises with
    statistics of other weights than its own; these are its own. Only the batch norms run in train
    mode (momentum None: a cumulative average); spectral norm and everything else stay in eval mode,
    and ``generator`` itself is not changed. ``batches <= 0``, or no batch norm: ``generator`` itself.
    ``progress``: a progress bar over the batches, and on the CPU a line saying how long they will take
    when that is over ``CPU_NOTICE_SECONDS`` (50 batches of 200 CIFAR samples take minutes there).
    """
    if batches <= 0 or not batch_norms(generator):
        return generator
    G = copy.deepcopy(generator).eval()
    norms = batch_norms(G)
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
        m.train()
    device = next(G.parameters()).device
    g = torch.Generator().manual_seed(int(seed) + STANDING_SEED_OFFSET)
    amp = torch.autocast(device.type, dtype=autocast_dtype) if autocast_dtype else contextlib.nullcontext()
    from tqdm.auto import tqdm

    t0 = time.monotonic()
    for i in tqdm(range(batches), disable=not progress, unit="batch", desc="standing statistics", leave=False,
                  file=sys.stderr):
        z = torch.randn(batch_size, int(G.z_dim), generator=g).to(device)
        y = torch.randint(0, num_classes, (batch_size,), generator=g).to(device) if num_classes > 0 else None
        with amp:
            G(z, y)
        if progress and i == 0 and device.type == "cpu" and batches > 1:
            estimate = (time.monotonic() - t0) * batches
            if estimate > CPU_NOTICE_SECONDS:
                tqdm.write(f"ganzoo: standing statistics over {batches} batches of {batch_size} on the CPU: about "
                           f"{estimate / 60:.0f} min (from the first; --standing-stats 0 uses the stored ones)",
                           file=sys.stderr)
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
        m.eval()
    return G
