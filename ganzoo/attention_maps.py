"""What attention learned: the gates (gamma) of every attention block, and SAGAN-style attention maps.

* the gates themselves (``gammas.json``, written with every checkpoint) live in
  :mod:`ganzoo.training.gammas`, beside the checkpoints they are read from.
* :func:`attention_figure` draws, for one EMA-G sample, each attention block's attention map for a
  few query points, upsampled over the image (the paper's Figure 1); ``ganzoo attention-maps``.

torch and matplotlib are imported inside the functions that need them.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import GanzooError


class AttentionMapError(GanzooError):
    pass


# ----------------------------------------------------------------------------- attention maps
@dataclass
class BlockMaps:
    """One attention block's maps for the chosen queries: ``maps[q]`` is a [kh, kw] grid of weights
    (summing to 1) over the key positions; the block's feature map is ``size`` x ``size``."""

    name: str
    size: tuple[int, int]
    key_grid: tuple[int, int]
    maps: Any  # tensor [Q, kh, kw]
    gamma: float | None


def attention_blocks(G: Any) -> list[tuple[str, Any]]:
    """``(name, module)`` of every module of G that exposes ``attention_map(x)``; one whose parent module
    exposes it too (a block wrapping another) is left to the outer one, so each attention is drawn once."""
    found = [(n, m) for n, m in G.named_modules() if callable(getattr(m, "attention_map", None))]
    outer = [n for n, _ in found]
    return [(n, m) for n, m in found if not any(o != n and (o == "" or n.startswith(o + ".")) for o in outer)]


def _key_grid(n_key: int, h: int, w: int) -> tuple[int, int]:
    """The key grid of ``n_key`` positions over an h x w feature map: h/f x w/f for a pooling factor f."""
    for f in range(1, max(h, w) + 1):
        if h % f == 0 and w % f == 0 and (h // f) * (w // f) == n_key:
            return h // f, w // f
    side = math.isqrt(n_key)
    if side * side == n_key:
        return side, side
    raise AttentionMapError(f"attention-maps: {n_key} key positions do not form a grid over a {h}x{w} feature map")


def query_points(n: int) -> list[tuple[float, float]]:
    """``n`` query points (row, col) as fractions of the image, spread over it (a fixed pattern)."""
    fixed = [(0.3, 0.3), (0.7, 0.7), (0.3, 0.72), (0.72, 0.3), (0.5, 0.5), (0.15, 0.5), (0.85, 0.5), (0.5, 0.15)]
    return fixed[:n]


def capture_maps(G: Any, z: Any, y: Any, queries: list[tuple[float, float]]) -> tuple[Any, list[BlockMaps]]:
    """One forward of G (eval, no grad) with forward hooks on its attention blocks; returns the image
    [C, H, W] in [-1, 1] and, per block, the attention of each query (fractions of the image mapped to
    the block's own grid) over the keys."""
    import torch

    blocks = attention_blocks(G)
    if not blocks:
        raise AttentionMapError("attention-maps: this generator has no attention block")
    seen: dict[str, torch.Tensor] = {}

    def hook(name: str):
        def run(module, inputs, output):
            x = inputs[0]
            seen[name] = (module.attention_map(x).detach().float().cpu(), tuple(x.shape[2:]))
        return run

    handles = [m.register_forward_hook(hook(n)) for n, m in blocks]
    try:
        with torch.no_grad():
            image = G(z, y)[0].float().cpu()
    finally:
        for h in handles:
            h.remove()
    out = []
    for name, module in blocks:
        if name not in seen:  # a block the forward never reached
            continue
        attn, (h, w) = seen[name]
        kh, kw = _key_grid(attn.shape[-1], h, w)
        rows = [min(h - 1, int(qr * h)) * w + min(w - 1, int(qc * w)) for qr, qc in queries]
        maps = attn[0, rows].reshape(len(rows), kh, kw)
        gamma = getattr(module, "gamma", None)
        out.append(BlockMaps(name, (h, w), (kh, kw), maps,
                             float(gamma.detach().float().reshape(-1)[0]) if isinstance(gamma, torch.Tensor) else None))
    return image, out


def draw_figure(image: Any, blocks: list[BlockMaps], queries: list[tuple[float, float]], title: str) -> bytes:
    """PNG bytes: the sample with the query points marked, then one row per attention block with each
    query's map upsampled (bilinear) over the image."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch.nn.functional as F

    img = ((image.clamp(-1, 1) + 1) / 2).permute(1, 2, 0).numpy()
    if img.shape[2] == 1:
        img = img[:, :, 0]
    H, W = image.shape[1:]
    colors = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#bfef45"]
    nq = len(queries)
    fig, axes = plt.subplots(len(blocks) + 1, nq, figsize=(2.2 * nq, 2.3 * (len(blocks) + 1)), dpi=100, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    ax = axes[0, 0]
    ax.imshow(img, cmap="gray" if img.ndim == 2 else None, interpolation="nearest")
    for i, (qr, qc) in enumerate(queries):
        ax.scatter([qc * W], [qr * H], s=60, c=colors[i % len(colors)], edgecolors="white", linewidths=1.2)
    ax.set_title("sample, query points", fontsize=8)
    for b, block in enumerate(blocks, start=1):
        up = F.interpolate(block.maps[:, None], size=(H, W), mode="bilinear", align_corners=False)[:, 0]
        for i, (qr, qc) in enumerate(queries):
            ax = axes[b, i]
            ax.imshow(img, cmap="gray" if img.ndim == 2 else None, interpolation="nearest")
            ax.imshow(up[i].numpy(), cmap="inferno", alpha=0.6, interpolation="nearest")
            ax.scatter([qc * W], [qr * H], s=40, c=colors[i % len(colors)], edgecolors="white", linewidths=1.0)
            gate = f", γ={block.gamma:.3g}" if block.gamma is not None else ""
            ax.set_title(f"{block.name} {block.size[0]}x{block.size[1]}{gate}" if i == 0 else f"query {i + 1}",
                         fontsize=7)
    fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def attention_figure(G: Any, out: str | Path, *, num_classes: int = 0, seed: int = 0, num_queries: int = 4,
                     cls: int | None = None, title: str = "", source: str | Path | None = None) -> list[BlockMaps]:
    """Generate one sample of G (noise from ``seed``; class ``cls``, or a seeded one when conditional),
    draw its attention maps (:func:`draw_figure`) and write the PNG ``out`` atomically. ``source``
    (the file G came from) is named in the error, if given, when G has no attention block."""
    import torch

    from .atomic import atomic_write_bytes

    if not attention_blocks(G):  # said here with the file G came from; capture_maps says it for its own callers
        where = f"{source}: " if source is not None else ""
        raise AttentionMapError(f"attention-maps: {where}this generator has no attention block (its recipe's "
                                "generator.attention is none, or generator.attention_resolutions is empty)")
    if not 1 <= num_queries <= 8:
        raise AttentionMapError(f"attention-maps: --queries must be between 1 and 8, got {num_queries}")
    nc = num_classes
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(1, G.z_dim, generator=gen)
    y = None
    if nc:
        if cls is not None and not 0 <= cls < nc:
            raise AttentionMapError(f"attention-maps: --class must be in [0, {nc}), got {cls}")
        y = torch.tensor([cls if cls is not None else int(torch.randint(nc, (1,), generator=gen))])
    elif cls is not None:
        raise AttentionMapError("attention-maps: --class: this generator is unconditional (num_classes 0)")
    param = next(G.parameters(), None)
    if param is not None:
        z = z.to(param.device)
        y = y.to(param.device) if y is not None else None
    queries = query_points(num_queries)
    image, blocks = capture_maps(G, z, y, queries)
    if not blocks:
        raise AttentionMapError("attention-maps: no attention block was reached by the forward")
    png = draw_figure(image, blocks, queries, title)
    try:
        atomic_write_bytes(out, png)
    except OSError as exc:
        raise AttentionMapError(f"attention-maps: --out {out}: cannot write ({exc.strerror or exc})") from None
    return blocks
