"""``synthetic``: procedurally drawn coloured shapes, 10 classes (class = shape); no download needed.

Each image is one antialiased shape (circle, ring, square, frame, diamond, triangle, cross, star,
crescent, bars) with random position, size, small rotation, colour and shading, on a random
two-colour gradient background with a little grain. Everything follows from ``seed`` (and the split),
so two runs give the same pixels and the same ``content_hash`` at any resolution. Classes differ in
shape only, so a conditional GAN must learn shapes, not colours.
"""
from __future__ import annotations

from typing import Any, Literal

import numpy as np
from pydantic import Field

from ..config import BlockConfig
from ..registry import DATASET
from ._base import DatasetError, ImageDataset, recipe_channel_problems, recipe_class_problems

CLASSES = ["circle", "ring", "square", "frame", "diamond", "triangle", "cross", "star", "crescent", "bars"]
SPLITS = {"train": 0, "test": 1}
VERSION = 1  # bump when the drawing changes (it is part of the cache key)
CHUNK = 256


class SyntheticConfig(BlockConfig):
    """Built-in coloured shapes (10 classes, class = shape), generated from a seed; no download."""

    type: Literal["synthetic"] = "synthetic"
    num_images: int = Field(10000, ge=1, le=10_000_000, description="images in the train split")
    num_test_images: int = Field(2000, ge=1, le=10_000_000, description="images in the test split")
    num_classes: int = Field(10, ge=1, le=len(CLASSES), description="use the first N shape classes")
    seed: int = Field(0, ge=0, le=2**32 - 1, description="seed of the generator (train and test differ)")
    shape_scale: float = Field(1.0, ge=0.25, le=2.0, description="size of the shapes relative to the default "
                               "(0.38-0.6 of half the image side): larger shapes are easier to learn and to see")
    channels: Literal[1, 3] = Field(3, description="3: RGB, 1: greyscale (luma)")
    cache: bool = Field(True, description="keep the generated array in the cache dir ($GANZOO_CACHE)")

    def recipe_problems(self, recipe: Any) -> list[tuple[tuple[str, ...], str]]:
        out = [(("channels",), m) for _, m in recipe_channel_problems(
            self.channels, recipe, "synthetic", f"set channels: {getattr(recipe, 'channels', 3)} here")]
        out += [(("num_classes",), m) for _, m in recipe_class_problems(self.num_classes, recipe, "synthetic")]
        return out


@DATASET.register(SyntheticConfig)
class Synthetic(ImageDataset):
    """Built-in coloured shapes (10 classes, class = shape), generated from a seed; no download."""

    def __init__(self, cfg: SyntheticConfig, resolution: int, split: str = "train", *, field: str = "data") -> None:
        self.cfg = cfg
        if split not in SPLITS:
            raise DatasetError(f"{field}: synthetic has splits {', '.join(SPLITS)}, not '{split}'")
        n = cfg.num_images if split == "train" else cfg.num_test_images
        identity = {"version": VERSION, "n": n, "classes": cfg.num_classes, "seed": cfg.seed,
                    "channels": cfg.channels, "resolution": resolution}
        if cfg.shape_scale != 1.0:  # the default keeps the cache key (and pixels) it always had
            identity["shape_scale"] = cfg.shape_scale

        def build():
            images, labels = generate(n, resolution, cfg.num_classes, cfg.seed, SPLITS[split], cfg.channels,
                                      cfg.shape_scale)
            return images, labels, CLASSES[: cfg.num_classes]

        loaded = ImageDataset.cached("synthetic", identity, build, split=split,
                                     source=f"synthetic(seed={cfg.seed})", use_cache=cfg.cache)
        self.__dict__.update(loaded.__dict__)


# ----------------------------------------------------------------------------- drawing
def _box(px, py, bx, by):
    qx, qy = np.abs(px) - bx, np.abs(py) - by
    outside = np.hypot(np.maximum(qx, 0), np.maximum(qy, 0))
    return outside + np.minimum(np.maximum(qx, qy), 0)


def _sdf(cls: str, px: np.ndarray, py: np.ndarray) -> np.ndarray:
    """Signed distance (negative inside) of a unit-sized shape; y points down."""
    r = np.hypot(px, py)
    if cls == "circle":
        return r - 1.0
    if cls == "ring":
        return np.abs(r - 0.72) - 0.28
    if cls == "square":
        return _box(px, py, 0.82, 0.82)
    if cls == "frame":
        return np.abs(_box(px, py, 0.72, 0.72)) - 0.2
    if cls == "diamond":
        return (np.abs(px) + np.abs(py) - 1.1) / np.sqrt(2)
    if cls == "triangle":  # pointing up, circumradius 1.1
        c, s = np.cos(np.pi / 6), np.sin(np.pi / 6)
        return np.maximum.reduce([py, c * px - s * py, -c * px - s * py]) - 0.55
    if cls == "cross":
        return np.minimum(_box(px, py, 1.0, 0.3), _box(px, py, 0.3, 1.0))
    if cls == "star":  # five points, pointing up
        a = np.arctan2(px, -py)
        return (r - (0.6 + 0.45 * np.cos(5 * a))) * 0.6
    if cls == "crescent":
        return np.maximum(r - 1.0, -(np.hypot(px - 0.45, py + 0.25) - 0.8))
    if cls == "bars":
        return np.minimum(_box(px, py - 0.5, 0.95, 0.24), _box(px, py + 0.5, 0.95, 0.24))
    raise KeyError(cls)


def _hsv_to_rgb(h: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Vectorised HSV in [0,1] -> RGB [..., 3]."""
    i = np.floor(h * 6) % 6
    f = h * 6 - np.floor(h * 6)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    table = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)]
    out = np.zeros((*h.shape, 3), dtype=np.float32)
    for k, rgb in enumerate(table):
        m = i == k
        for ch in range(3):
            out[..., ch][m] = rgb[ch][m]
    return out


def generate(n: int, resolution: int, num_classes: int, seed: int, split_id: int = 0, channels: int = 3,
             shape_scale: float = 1.0):
    """``n`` images uint8 ``[n, channels, res, res]`` and their labels, deterministic in the arguments
    (``shape_scale`` scales every shape's size; the random draws are the same at any scale)."""
    rng = np.random.default_rng([seed, split_id, VERSION])
    labels = rng.integers(0, num_classes, size=n).astype(np.int64)
    center = rng.uniform(-0.25, 0.25, size=(n, 2)).astype(np.float32)
    size = (rng.uniform(0.38, 0.6, size=n) * shape_scale).astype(np.float32)
    angle = rng.uniform(-0.3, 0.3, size=n).astype(np.float32)
    fg = _hsv_to_rgb(rng.uniform(0, 1, n), rng.uniform(0.55, 1.0, n), rng.uniform(0.75, 1.0, n))
    bg_hue = rng.uniform(0, 1, (n, 2))
    bg1 = _hsv_to_rgb(bg_hue[:, 0], rng.uniform(0.1, 0.5, n), rng.uniform(0.1, 0.45, n))
    bg2 = _hsv_to_rgb(bg_hue[:, 1], rng.uniform(0.1, 0.5, n), rng.uniform(0.1, 0.45, n))
    grad_dir = rng.uniform(0, 2 * np.pi, n).astype(np.float32)
    grain_seed = rng.integers(0, 2**63 - 1)

    coords = (np.arange(resolution, dtype=np.float32) + 0.5) / resolution * 2 - 1
    yy, xx = np.meshgrid(coords, coords, indexing="ij")  # [R, R]
    pixel = 2.0 / resolution
    out = np.empty((n, channels, resolution, resolution), dtype=np.uint8)
    grain_rng = np.random.default_rng(grain_seed)
    for s in range(0, n, CHUNK):
        sl = slice(s, min(n, s + CHUNK))
        b = sl.stop - sl.start
        dx = xx[None] - center[sl, 0, None, None]
        dy = yy[None] - center[sl, 1, None, None]
        ca, sa = np.cos(angle[sl])[:, None, None], np.sin(angle[sl])[:, None, None]
        sz = size[sl][:, None, None]
        px, py = (ca * dx + sa * dy) / sz, (-sa * dx + ca * dy) / sz
        dist = np.empty((b, resolution, resolution), dtype=np.float32)
        lab = labels[sl]
        for k in np.unique(lab):
            m = lab == k
            dist[m] = _sdf(CLASSES[k], px[m], py[m]) * sz[m]
        alpha = np.clip(0.5 - dist / pixel, 0.0, 1.0)[..., None]
        # background: linear gradient between two colours, plus grain
        g = (np.cos(grad_dir[sl])[:, None, None] * xx + np.sin(grad_dir[sl])[:, None, None] * yy) * 0.5 + 0.5
        bg = bg1[sl, None, None] * (1 - g[..., None]) + bg2[sl, None, None] * g[..., None]
        bg = bg + grain_rng.normal(0, 0.025, size=(b, resolution, resolution, 1)).astype(np.float32)
        # shape: its colour, lit from the top left
        shade = (1.0 - 0.18 * (px + py) / 1.5).clip(0.7, 1.15)[..., None]
        img = bg * (1 - alpha) + (fg[sl, None, None] * shade) * alpha
        img = np.clip(img * 255 + 0.5, 0, 255).astype(np.uint8)  # [b, R, R, 3]
        if channels == 1:
            luma = img.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
            out[sl, 0] = np.clip(luma + 0.5, 0, 255).astype(np.uint8)
        else:
            out[sl] = img.transpose(0, 3, 1, 2)
    return out, labels
