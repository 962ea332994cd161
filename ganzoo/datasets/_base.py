"""What every dataset block returns, plus shared helpers (hashing, caching, device placement).

A dataset block is built as ``DATASET.build(cfg, resolution, split="train")`` and is an
:class:`ImageDataset`: the whole split decoded once into memory as

* ``images``: ``torch.uint8`` ``[N, C, H, W]`` (``H == W == resolution``),
* ``labels``: ``torch.int64`` ``[N]`` in ``[0, num_classes)``,
* ``num_classes``, ``class_names`` (``len(class_names) == num_classes``),
* ``content_hash``: sha256 of the decoded pixels, labels and class names (independent of where the
  data came from and of the cache; the metrics use it to key reference statistics).
"""
from __future__ import annotations

import hashlib
import inspect
import warnings
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from ..errors import GanzooError
from . import _cache


class DatasetError(GanzooError):
    """A dataset cannot be loaded (missing root, empty folder, unreadable image, ...)."""


class MissingSplitError(DatasetError):
    """The requested split (e.g. ``test``) does not exist in the source."""


def content_hash(images: np.ndarray, labels: np.ndarray, class_names: Sequence[str]) -> str:
    h = hashlib.sha256()
    h.update(repr((tuple(images.shape), str(images.dtype), tuple(class_names))).encode())
    h.update(np.ascontiguousarray(images).data)
    h.update(np.ascontiguousarray(labels.astype("<i8")).data)
    return h.hexdigest()


class ImageDataset(torch.utils.data.Dataset):
    """A decoded, in-memory image split. ``ds[i] -> (uint8 [C,H,W], int label)``."""

    def __init__(
        self,
        images: np.ndarray | torch.Tensor,
        labels: np.ndarray | torch.Tensor,
        class_names: Sequence[str],
        *,
        split: str = "train",
        source: str = "",
        hash_: str | None = None,
    ) -> None:
        images_np = images.numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
        labels_np = labels.numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
        if images_np.dtype != np.uint8 or images_np.ndim != 4:
            raise ValueError(f"images must be uint8 [N,C,H,W], got {images_np.dtype} {images_np.shape}")
        if labels_np.shape != (images_np.shape[0],):
            raise ValueError(f"labels must be [N={images_np.shape[0]}], got {labels_np.shape}")
        self.class_names = [str(c) for c in class_names]
        self.num_classes = len(self.class_names)
        if labels_np.size and (labels_np.min() < 0 or labels_np.max() >= self.num_classes):
            raise ValueError(f"labels must lie in [0, {self.num_classes})")
        self.split = split
        self.source = source
        self.content_hash = hash_ or content_hash(images_np, labels_np, self.class_names)
        self.images = torch.from_numpy(np.ascontiguousarray(images_np))
        self.labels = torch.from_numpy(labels_np.astype(np.int64, copy=False))

    # -- conveniences
    @property
    def channels(self) -> int:
        return int(self.images.shape[1])

    @property
    def resolution(self) -> int:
        return int(self.images.shape[-1])

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __getitem__(self, i: int):
        return self.images[i], int(self.labels[i])

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({len(self)} images {tuple(self.images.shape[1:])}, "
            f"{self.num_classes} classes, split={self.split!r}, source={self.source!r})"
        )

    # -- caching
    @classmethod
    def cached(
        cls,
        kind: str,
        identity: dict[str, Any],
        build: Callable[[], tuple[np.ndarray, np.ndarray, Sequence[str]]],
        *,
        split: str,
        source: str,
        use_cache: bool = True,
        **kwargs: Any,
    ) -> "ImageDataset":
        """Load from the cache under ``identity`` or ``build()`` (images NCHW, labels, class names) and store."""
        if not use_cache:
            images, labels, names = build()
            return cls._make(images, labels, names, split=split, source=source, **kwargs)
        key = _cache.key_of({"kind": kind, "format": _cache.FORMAT_VERSION, "split": split, **identity})
        path = _cache.dataset_cache_path(kind, key)
        arrays = _cache.load_arrays(path)
        if arrays is not None and {"images", "labels", "class_names", "content_hash"} <= arrays.keys():
            obj = cls._make(
                arrays["images"], arrays["labels"], [str(c) for c in arrays["class_names"]],
                split=split, source=source, hash_=str(arrays["content_hash"]), **kwargs,
            )
            obj.cache_path = path
            obj.cache_hit = True
            return obj
        images, labels, names = build()
        obj = cls._make(images, labels, names, split=split, source=source, **kwargs)
        try:
            _cache.save_arrays(path, {
                "images": obj.images.numpy(),
                "labels": obj.labels.numpy(),
                "class_names": np.array(obj.class_names, dtype=np.str_),
                "content_hash": np.array(obj.content_hash),
            })
            obj.cache_path = path
        except OSError as exc:  # a read-only cache dir must not stop training
            warnings.warn(f"could not write dataset cache {path}: {exc}", stacklevel=2)
            obj.cache_path = None
        obj.cache_hit = False
        return obj

    @classmethod
    def _make(cls, images, labels, names, **kwargs: Any) -> "ImageDataset":
        return ImageDataset(images, labels, names, **kwargs)

    cache_path: Path | None = None
    cache_hit: bool = False


# ----------------------------------------------------------------------------- helpers
def resize_square(images: np.ndarray, resolution: int) -> np.ndarray:
    """Resize uint8 ``[N,C,S,S]`` square images to ``resolution`` (antialiased bicubic), in chunks."""
    n, c, h, w = images.shape
    if h == resolution and w == resolution:
        return images
    out = np.empty((n, c, resolution, resolution), dtype=np.uint8)
    for i in range(0, n, 4096):
        x = torch.from_numpy(images[i : i + 4096]).float()
        y = torch.nn.functional.interpolate(
            x, size=(resolution, resolution), mode="bicubic", align_corners=False, antialias=True
        )
        out[i : i + 4096] = y.round_().clamp_(0, 255).to(torch.uint8).numpy()
    return out


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 ``[0, 255]`` -> float32 ``[-1, 1]`` (what generators output and discriminators take)."""
    return images.to(torch.float32).div_(127.5).sub_(1.0)


def to_device(dataset: ImageDataset, device: torch.device | str, max_bytes: int | None = None) -> bool:
    """Move ``dataset.images``/``labels`` to ``device`` if they fit; returns whether they were moved.

    ``max_bytes`` defaults to a quarter of the device's free memory (CUDA) and to "no limit" for the
    CPU. When the images do not fit they stay on the host (pinned when CUDA is available, so
    ``images[idx].to(device, non_blocking=True)`` overlaps with compute).
    """
    device = torch.device(device)
    if device.type == "cpu":
        return True
    nbytes = dataset.images.numel() * dataset.images.element_size() + dataset.labels.numel() * 8
    if max_bytes is None:
        if device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(device)
            max_bytes = free // 4
        else:
            max_bytes = 1 << 62
    if nbytes <= max_bytes:
        dataset.images = dataset.images.to(device)
        dataset.labels = dataset.labels.to(device)
        return True
    if torch.cuda.is_available() and not dataset.images.is_pinned():
        dataset.images = dataset.images.pin_memory()
        dataset.labels = dataset.labels.pin_memory()
    return False


def sample_batch(
    dataset: ImageDataset, batch_size: int, generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """A uniformly random batch (with replacement): float ``[-1,1]`` images and labels on ``device``."""
    device = torch.device(device) if device is not None else dataset.images.device
    gen_device = generator.device if generator is not None else torch.device("cpu")
    idx = torch.randint(len(dataset), (batch_size,), generator=generator, device=gen_device)
    idx = idx.to(dataset.images.device)
    x = dataset.images[idx].to(device, non_blocking=True)
    y = dataset.labels[idx].to(device, non_blocking=True)
    return to_float(x), y


def check_path(root: str | None, field: str, what: str, hint: str = "") -> Path:
    """``root`` as an existing Path, else a DatasetError naming the field."""
    if not root:
        raise DatasetError(f"{field}.root: not set; {hint}".rstrip("; "))
    path = Path(root).expanduser()
    if not path.exists():
        raise DatasetError(f"{field}.root: {path}: not found ({what}){'; ' + hint if hint else ''}")
    return path


def subset_indices(n: int, max_images: int | None, seed: int) -> np.ndarray:
    """All of ``range(n)``, or a fixed random subset of ``max_images`` of them (sorted)."""
    if max_images is None or max_images >= n:
        return np.arange(n)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n, size=max_images, replace=False))


def recipe_channel_problems(channels: int, recipe: Any, name: str, fix: str = "") -> list[tuple[tuple[str, ...], str]]:
    rc = getattr(recipe, "channels", channels)
    if rc != channels:
        msg = f"{name} gives {channels}-channel images but the recipe's channels is {rc}"
        return [((), msg + (f"; {fix}" if fix else ""))]
    return []


def recipe_class_problems(num_classes: int, recipe: Any, name: str) -> list[tuple[tuple[str, ...], str]]:
    rc = getattr(recipe, "num_classes", 0)
    if rc and rc != num_classes:
        return [((), f"{name} has {num_classes} classes but the recipe's num_classes is {rc} (use {num_classes} or 0)")]
    return []


def check_compatible(dataset: ImageDataset, recipe: Any, field: str = "data") -> None:
    """Raise a DatasetError if a built dataset does not match the recipe (channels, classes, size)."""
    if dataset.channels != recipe.channels:
        raise DatasetError(
            f"{field}: gives {dataset.channels}-channel images but the recipe's channels is {recipe.channels}"
        )
    if recipe.num_classes and dataset.num_classes != recipe.num_classes:
        raise DatasetError(
            f"{field}: has {dataset.num_classes} classes ({dataset.source}) but the recipe's num_classes is "
            f"{recipe.num_classes} (use {dataset.num_classes} or 0)"
        )
    if dataset.resolution != recipe.resolution:
        raise DatasetError(f"{field}: images are {dataset.resolution}px, recipe resolution is {recipe.resolution}")


def build_dataset(recipe: Any, split: str = "train") -> ImageDataset:
    """The recipe's training dataset (``data``) for ``split``, checked against the recipe."""
    from ..registry import DATASET

    ds = DATASET.build(recipe.data, recipe.resolution, split=split)
    check_compatible(ds, recipe, "data")
    return ds


def build_reference(recipe: Any) -> ImageDataset:
    """The images metrics compare against: ``eval.reference`` if set, else ``data``'s test split.

    A source without a ``test`` split falls back to its ``train`` split with a warning (FID against
    the training set, as is common for datasets without a held-out split).
    """
    from ..registry import DATASET

    spec, field = (recipe.eval.reference, "eval.reference") if recipe.eval.reference is not None else (recipe.data, "data")
    entry, cfg = DATASET.resolve(spec)
    # built-in datasets name the recipe field in their errors; a plugin's may not take `field`
    kw = {"field": field} if "field" in inspect.signature(entry.obj).parameters else {}
    try:
        ds = entry.obj(cfg, recipe.resolution, split="test", **kw)
    except MissingSplitError as exc:
        warnings.warn(f"{exc}; using its train split as the metric reference", stacklevel=2)
        ds = entry.obj(cfg, recipe.resolution, split="train", **kw)
    check_compatible(ds, recipe, field)
    return ds
