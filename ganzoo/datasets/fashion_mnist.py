"""``fashion_mnist``: Fashion-MNIST (10 classes, 28x28 grey) from its IDX files (.gz or raw).

Debian/Ubuntu's ``dataset-fashion-mnist`` package puts them in ``/usr/share/datasets/fashion-mnist``
(the default root). The 28x28 images are padded to 32x32 with black (the background colour), then
resized to the recipe's resolution (``fit: pad``), or resized directly (``fit: resize``).
"""
from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field

from ..config import BlockConfig
from ..registry import DATASET
from . import _cache
from ._base import (
    DatasetError,
    ImageDataset,
    check_path,
    recipe_channel_problems,
    recipe_class_problems,
    resize_square,
    subset_indices,
)

CLASSES = ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle-boot"]
FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
         "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
DEFAULT_ROOT = "/usr/share/datasets/fashion-mnist"


def read_idx(path: Path, where: str) -> np.ndarray:
    """An IDX file of unsigned bytes (magic 0x0000080N) as a uint8 array of its dimensions."""
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise DatasetError(f"{where}: cannot read {path.name} ({exc})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DatasetError(f"{where}: {path.name} is not an IDX file of unsigned bytes")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(raw) < header:
        raise DatasetError(f"{where}: {path.name} has a truncated IDX header")
    dims = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    count = int(np.prod(dims))
    if len(raw) - header != count:
        raise DatasetError(f"{where}: {path.name} holds {len(raw) - header} bytes of data, its header says {count}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def _find(root: Path, stem: str) -> Path | None:
    for name in (stem + ".gz", stem, stem.replace("-idx", ".idx")):
        if (root / name).is_file():
            return root / name
    return None


class FashionMnistConfig(BlockConfig):
    """Fashion-MNIST (10 classes, 28x28 grey) from its IDX files; padded/resized to the resolution."""

    type: Literal["fashion_mnist"] = "fashion_mnist"
    root: str = Field(DEFAULT_ROOT, description="folder with train-images-idx3-ubyte.gz etc. (apt: dataset-fashion-mnist)")
    fit: Literal["pad", "resize"] = Field("pad", description="pad: 28 -> 32 with black, then resize; resize: 28 -> res")
    channels: Literal[1, 3] = Field(1, description="1: grey; 3: grey repeated to RGB")
    max_images: int | None = Field(None, ge=1, description="use a fixed random subset of this many images per split")
    subset_seed: int = Field(0, ge=0, description="seed of the max_images subset")
    cache: bool = Field(True, description="keep the decoded array in the cache dir ($GANZOO_CACHE)")

    def recipe_problems(self, recipe: Any) -> list[tuple[tuple[str, ...], str]]:
        out = [(("channels",), m) for _, m in recipe_channel_problems(
            self.channels, recipe, "fashion_mnist", f"set channels: {getattr(recipe, 'channels', 1)} here")]
        return out + recipe_class_problems(10, recipe, "fashion_mnist")


@DATASET.register(FashionMnistConfig)
class FashionMnist(ImageDataset):
    """Fashion-MNIST (10 classes, 28x28 grey) from its IDX files; padded/resized to the resolution."""

    def __init__(self, cfg: FashionMnistConfig, resolution: int, split: str = "train", *, field: str = "data") -> None:
        self.cfg = cfg
        if split not in FILES:
            raise DatasetError(f"{field}: fashion_mnist has splits 'train' and 'test', not '{split}'")
        hint = "install Debian's dataset-fashion-mnist (apt) or point it at a folder with the IDX .gz files"
        root = check_path(cfg.root, field, "Fashion-MNIST IDX folder", hint)
        where = f"{field}.root: {root}"
        paths = [_find(root, stem) for stem in FILES[split]]
        if None in paths:
            missing = [s for s, p in zip(FILES[split], paths) if p is None]
            raise DatasetError(f"{where}: missing {', '.join(m + '.gz' for m in missing)}; {hint}")
        identity = {"files": [_cache.file_identity(p) for p in paths], "resolution": resolution, "fit": cfg.fit,
                    "channels": cfg.channels, "max_images": cfg.max_images, "seed": cfg.subset_seed}

        def build():
            x, y = read_idx(paths[0], where), read_idx(paths[1], where).astype(np.int64)
            if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
                raise DatasetError(f"{where}: images {x.shape} and labels {y.shape} do not match")
            if y.size and y.max() >= len(CLASSES):
                raise DatasetError(f"{where}: labels outside 0..9")
            idx = subset_indices(len(x), cfg.max_images, cfg.subset_seed)
            x, y = x[idx][:, None], y[idx]
            if cfg.fit == "pad":
                side = max(32, *x.shape[-2:])
                ph, pw = side - x.shape[-2], side - x.shape[-1]
                x = np.pad(x, ((0, 0), (0, 0), (ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2)))
            if x.shape[-1] != x.shape[-2]:
                raise DatasetError(f"{where}: images are not square ({x.shape[-2:]})")
            x = resize_square(np.ascontiguousarray(x), resolution)
            if cfg.channels == 3:
                x = np.repeat(x, 3, axis=1)
            return x, y, CLASSES

        loaded = ImageDataset.cached("fashion_mnist", identity, build, split=split, source=str(root),
                                     use_cache=cfg.cache)
        self.__dict__.update(loaded.__dict__)
