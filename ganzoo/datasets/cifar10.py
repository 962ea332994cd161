"""``cifar10``: CIFAR-10 from the python batches, an image folder/tar.gz of it, or torchvision's download.

Sources tried at ``root``, in order:

1. ``root/cifar-10-batches-py/`` (or ``root`` itself being that folder): the original pickled
   batches. They are pickles, so they are read with :class:`_SafeUnpickler`, which only resolves
   numpy's array reconstructors, ``numpy.dtype`` and ``_codecs.encode``; any other global in the
   stream (the way a malicious pickle runs code) is refused.
2. ``root/cifar-10-python.tar.gz`` (the original download): the same batches read from the archive.
3. an image folder or .tar/.tar.gz of one with ``train/<class>/*.jpg`` and ``test/<class>/*.jpg``
   (e.g. ``../shared/data/cifar10-jpeg.tar.gz``); class folders must be the 10 CIFAR classes.

With ``download: true`` and nothing found, torchvision's downloader fetches the original archive
into ``root`` (needs internet); otherwise a one-line error lists the local options.
"""
from __future__ import annotations

import io
import pickle
import tarfile
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
    recipe_channel_problems,
    recipe_class_problems,
    resize_square,
    subset_indices,
)
from ._images import is_archive, load_images, source_identity

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
BATCHES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
FOLDER = "cifar-10-batches-py"
ARCHIVE = "cifar-10-python.tar.gz"
SHARED_HINT = "../shared/data/cifar10-jpeg.tar.gz"


class _SafeUnpickler(pickle.Unpickler):
    """Unpickler for the CIFAR batches: only numpy array reconstruction is allowed."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),  # how protocol-2 pickles written by Python 3 store bytes
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"global '{module}.{name}' is not allowed in a CIFAR batch")


def load_batch(data: bytes, where: str) -> tuple[np.ndarray, np.ndarray]:
    """One pickled batch -> (uint8 [N,3,32,32], int64 labels)."""
    try:
        obj = _SafeUnpickler(io.BytesIO(data), encoding="bytes").load()
    except Exception as exc:  # noqa: BLE001
        raise DatasetError(f"{where}: not a CIFAR-10 python batch ({type(exc).__name__}: {exc})") from None
    if not isinstance(obj, dict):
        raise DatasetError(f"{where}: not a CIFAR-10 python batch (no dict)")
    obj = {k.decode() if isinstance(k, bytes) else k: v for k, v in obj.items()}
    x, y = obj.get("data"), obj.get("labels")
    if not isinstance(x, np.ndarray) or x.dtype != np.uint8 or x.ndim != 2 or x.shape[1] != 3072:
        raise DatasetError(f"{where}: 'data' is not a uint8 [N, 3072] array")
    y = np.asarray(y, dtype=np.int64)
    if y.shape != (x.shape[0],) or (y.size and (y.min() < 0 or y.max() > 9)):
        raise DatasetError(f"{where}: 'labels' do not match 'data' or are outside 0..9")
    return x.reshape(-1, 3, 32, 32), y


class Cifar10Config(BlockConfig):
    """CIFAR-10 (10 classes, 32x32 RGB) from the python batches, an image folder/tar.gz, or a download."""

    type: Literal["cifar10"] = "cifar10"
    root: str | None = Field(
        None,
        description=f"cifar-10-batches-py folder (or its parent), {ARCHIVE}, or an image folder/tar.gz "
        f"such as {SHARED_HINT}",
    )
    download: bool = Field(False, description="download the original archive into root if nothing is there (internet)")
    max_images: int | None = Field(None, ge=1, description="use a fixed random subset of this many images per split")
    subset_seed: int = Field(0, ge=0, description="seed of the max_images subset")
    cache: bool = Field(True, description="keep the decoded array in the cache dir ($GANZOO_CACHE)")

    def recipe_problems(self, recipe: Any) -> list[tuple[tuple[str, ...], str]]:
        return recipe_channel_problems(3, recipe, "cifar10", "set the recipe's channels: 3") + recipe_class_problems(
            10, recipe, "cifar10"
        )


def _options(field: str) -> str:
    return (
        f"set {field}.root to a local copy: a {FOLDER} folder (or its parent), {ARCHIVE}, or an image "
        f"folder/tar.gz with train/<class>/ and test/<class>/ (e.g. {SHARED_HINT}); "
        f"or set {field}.download: true on a machine with internet"
    )


@DATASET.register(Cifar10Config)
class Cifar10(ImageDataset):
    """CIFAR-10 (10 classes, 32x32 RGB) from the python batches, an image folder/tar.gz, or a download."""

    def __init__(self, cfg: Cifar10Config, resolution: int, split: str = "train", *, field: str = "data") -> None:
        self.cfg = cfg
        if split not in BATCHES:
            raise DatasetError(f"{field}: cifar10 has splits 'train' and 'test', not '{split}'")
        if cfg.root is None:
            raise DatasetError(f"{field}.root: not set; {_options(field)}")
        root = Path(cfg.root).expanduser()
        kind, path = _find(root)
        if kind is None and cfg.download:
            _download(root, field)
            kind, path = _find(root)
        if kind is None:
            what = "not found" if not root.exists() else "holds no CIFAR-10 copy"
            raise DatasetError(f"{field}.root: {root}: {what}; {_options(field)}")
        assert path is not None
        where = f"{field}.root: {path}"
        opts = {"resolution": resolution, "max_images": cfg.max_images, "seed": cfg.subset_seed, "src": kind}
        if kind == "images":
            identity, _, _ = source_identity(path)

            def build():
                images, labels, names = load_images(path, split, resolution, "RGB", where, cfg.max_images,
                                                    cfg.subset_seed)
                if names != CLASSES:
                    raise DatasetError(f"{where}: class folders {names} are not the 10 CIFAR-10 classes {CLASSES}")
                return images, labels, names
        else:
            files = [path / n for n in BATCHES[split]] if kind == "folder" else [path]
            identity = {"files": [_cache.file_identity(f) for f in files if f.exists()]}

            def build():
                x, y = _read_batches(kind, path, split, where)
                idx = subset_indices(len(x), cfg.max_images, cfg.subset_seed)
                return resize_square(x[idx], resolution), y[idx], CLASSES

        loaded = ImageDataset.cached("cifar10", {**identity, **opts}, build, split=split, source=str(path),
                                     use_cache=cfg.cache)
        self.__dict__.update(loaded.__dict__)


def _find(root: Path) -> tuple[str | None, Path | None]:
    if root.is_dir():
        if (root / "batches.meta").exists() or (root / "test_batch").exists():
            return "folder", root
        if (root / FOLDER).is_dir():
            return "folder", root / FOLDER
        if (root / ARCHIVE).is_file():
            return "archive", root / ARCHIVE
        if any(root.iterdir()):
            return "images", root
        return None, None
    if root.is_file() and root.name == ARCHIVE:
        return "archive", root
    if is_archive(root):
        return "images", root
    return None, None


def _read_batches(kind: str, path: Path, split: str, where: str) -> tuple[np.ndarray, np.ndarray]:
    blobs: dict[str, bytes] = {}
    if kind == "folder":
        for name in BATCHES[split]:
            f = path / name
            try:
                blobs[name] = f.read_bytes()
            except OSError as exc:
                raise DatasetError(f"{where}/{name}: cannot read ({exc.strerror or exc})") from None
    else:
        try:
            with tarfile.open(path, "r:*") as tf:
                for m in tf:
                    base = m.name.rsplit("/", 1)[-1]
                    if m.isfile() and base in BATCHES[split]:
                        blobs[base] = tf.extractfile(m).read()  # type: ignore[union-attr]
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise DatasetError(f"{where}: cannot read archive ({exc})") from None
    missing = [n for n in BATCHES[split] if n not in blobs]
    if missing:
        raise DatasetError(f"{where}: missing batch file(s) {', '.join(missing)}")
    parts = [load_batch(blobs[n], f"{where}/{n}") for n in BATCHES[split]]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def _download(root: Path, field: str) -> None:
    try:
        from torchvision.datasets import CIFAR10
        from torchvision.datasets.utils import download_and_extract_archive

        root.mkdir(parents=True, exist_ok=True)
        download_and_extract_archive(CIFAR10.url, str(root), filename=CIFAR10.filename, md5=CIFAR10.tgz_md5)
    except Exception as exc:  # noqa: BLE001  (offline, proxy, disk full, ...)
        raise DatasetError(
            f"{field}.download: could not download CIFAR-10 into {root} ({type(exc).__name__}: {exc}); "
            + _options(field)
        ) from None
