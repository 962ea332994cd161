"""Listing and decoding image folders and archives of them (``.tar``, ``.tar.gz``, ``.tgz``).

Layout understood (``root`` is a folder or an archive of one; an archive may wrap it in one
top-level folder)::

    root/train/<class>/*.jpg   root/test/<class>/*.jpg     split folders, class folders
    root/<class>/*.png                                      no split folders: everything is "train"
    root/*.jpg                                              flat: one class

Decoding: JPEGs use PIL's draft mode (DCT scaling) when much larger than the target, then the
shorter side is resized (bicubic, antialiased) to the resolution and the centre square cropped.
Large sets are decoded in a process pool.
"""
from __future__ import annotations

import io
import os
import tarfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path, PurePosixPath
from typing import Any, Sequence

import numpy as np

from . import _cache
from ._base import DatasetError, MissingSplitError

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff")
SPLIT_NAMES = ("train", "test", "val", "valid", "validation")
ARCHIVE_EXTS = (".tar", ".tar.gz", ".tgz")
POOL_THRESHOLD = 2048  # below this many images, decode in-process
ONE_PASS_BYTES = 1 << 30  # archives up to this size are read in one pass (all members in memory)


def is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTS) and not PurePosixPath(name).name.startswith(".")


def is_archive(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith(ARCHIVE_EXTS)


# ----------------------------------------------------------------------------- listing
def list_folder(root: Path) -> dict[str, tuple[int, int]]:
    """Relative posix path -> (size, mtime_ns) of every image file under ``root`` (symlinks followed)."""
    out: dict[str, tuple[int, int]] = {}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        rel = Path(dirpath).relative_to(root)
        for fn in filenames:
            if is_image(fn):
                st = os.stat(os.path.join(dirpath, fn))
                out[(rel / fn).as_posix()] = (st.st_size, st.st_mtime_ns)
    return out


def _archive_problem(exc: BaseException) -> str:
    """The first line of why ``tarfile`` failed (its "file could not be opened successfully" lists every
    compression it tried, one line each): one line of an error message."""
    lines = str(exc).strip().splitlines()
    first = lines[0].rstrip(":") if lines else type(exc).__name__
    return first + (" (not a tar archive, plain or compressed)" if len(lines) > 1 else "")


def list_archive(path: Path) -> list[str]:
    try:
        with tarfile.open(path, "r:*") as tf:
            return [m.name for m in tf if m.isfile() and is_image(m.name)]
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise DatasetError(f"cannot read archive {path}: {_archive_problem(exc)}") from None


def read_archive_members(path: Path, wanted: set[str] | None) -> dict[str, bytes]:
    """Bytes of the ``wanted`` image members (None: all), in one sequential pass over the archive."""
    out: dict[str, bytes] = {}
    try:
        with tarfile.open(path, "r:*") as tf:
            for m in tf:
                if m.isfile() and (m.name in wanted if wanted is not None else is_image(m.name)):
                    f = tf.extractfile(m)
                    assert f is not None
                    out[m.name] = f.read()
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise DatasetError(f"cannot read archive {path}: {_archive_problem(exc)}") from None
    return out


# ----------------------------------------------------------------------------- layout
class Layout:
    """Which files of a source form a split, and their labels."""

    def __init__(self, files: list[str], labels: np.ndarray, class_names: list[str], prefix: str) -> None:
        self.files = files  # paths relative to the source root (archive member names for archives)
        self.labels = labels
        self.class_names = class_names
        self.prefix = prefix


def resolve_layout(paths: Sequence[str], split: str, where: str, flat_name: str) -> Layout:
    """Pick ``split`` and the class folders out of a list of image paths (relative, posix)."""
    if not paths:
        raise DatasetError(f"{where}: no images found (looked for {', '.join(IMAGE_EXTS)})")
    parts = [PurePosixPath(p).parts for p in paths]
    prefix: tuple[str, ...] = ()
    # one wrapping folder (common in archives): root/cifar10/train/...
    firsts = {p[0] for p in parts}
    if len(firsts) == 1 and all(len(p) >= 3 for p in parts) and next(iter(firsts)) not in SPLIT_NAMES:
        seconds = {p[1] for p in parts}
        if seconds & set(SPLIT_NAMES):
            prefix = (next(iter(firsts)),)
            parts = [p[1:] for p in parts]
    tops = {p[0] for p in parts if len(p) >= 2}
    splits_here = sorted(tops & set(SPLIT_NAMES))
    if splits_here:
        if split not in splits_here:
            raise MissingSplitError(
                f"{where}: has no '{split}' split folder (found: {', '.join(splits_here)})"
            )
        keep = [(orig, p[1:]) for orig, p in zip(paths, parts) if p[0] == split and len(p) >= 2]
        prefix = (*prefix, split)
    elif split != "train":
        raise MissingSplitError(f"{where}: has no '{split}' split folder (no split folders at all)")
    else:
        keep = list(zip(paths, parts))
    if not keep:
        raise DatasetError(f"{where}: no images in split '{split}'")
    keep.sort(key=lambda t: t[1])
    depths = {len(p) >= 2 for _, p in keep}
    if depths == {True, False}:
        loose = next("/".join(p) for _, p in keep if len(p) == 1)
        raise DatasetError(
            f"{where}: mixes loose images (e.g. '{loose}') with class folders; use one layout or the other"
        )
    if depths == {True}:
        class_names = sorted({p[0] for _, p in keep})
        index = {c: i for i, c in enumerate(class_names)}
        labels = np.array([index[p[0]] for _, p in keep], dtype=np.int64)
    else:
        class_names = [flat_name]
        labels = np.zeros(len(keep), dtype=np.int64)
    return Layout([orig for orig, _ in keep], labels, class_names, "/".join(prefix))


# ----------------------------------------------------------------------------- decoding
def decode_image(data: bytes, resolution: int, mode: str) -> np.ndarray:
    """Encoded bytes -> uint8 ``[res, res, C]`` (shorter side resized, centre crop)."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as img:
        if img.format == "JPEG":
            img.draft("L" if mode == "L" else "RGB", (resolution, resolution))
        if img.mode in ("RGBA", "LA", "P", "PA") and mode != "RGBA":
            img = img.convert("RGBA")
            bg = Image.new("RGBA", img.size, (255, 255, 255, 255))  # transparent -> white
            img = Image.alpha_composite(bg, img)
        img = img.convert(mode)
        w, h = img.size
        if min(w, h) != resolution:
            s = resolution / min(w, h)
            nw, nh = max(resolution, round(w * s)), max(resolution, round(h * s))
            img = img.resize((nw, nh), Image.Resampling.BICUBIC, reducing_gap=3.0)
            w, h = nw, nh
        if (w, h) != (resolution, resolution):
            left, top = (w - resolution) // 2, (h - resolution) // 2
            img = img.crop((left, top, left + resolution, top + resolution))
        arr = np.asarray(img, dtype=np.uint8)
    return arr[:, :, None] if arr.ndim == 2 else arr


def _decode_chunk(args: tuple[list[bytes], int, str]) -> tuple[np.ndarray | None, int, str]:
    blobs, resolution, mode = args
    c = {"L": 1, "RGB": 3, "RGBA": 4}[mode]
    out = np.empty((len(blobs), c, resolution, resolution), dtype=np.uint8)
    for i, b in enumerate(blobs):
        try:
            out[i] = decode_image(b, resolution, mode).transpose(2, 0, 1)
        except Exception as exc:  # noqa: BLE001  (reported with the file name by the caller)
            return None, i, f"{type(exc).__name__}: {exc}"
    return out, -1, ""


def decode_all(blobs: list[bytes], names: list[str], resolution: int, mode: str, where: str,
               workers: int | None = None) -> np.ndarray:
    """Decode every blob into uint8 ``[N, C, res, res]``; a bad file raises a DatasetError naming it."""
    workers = workers or max(1, min(len(os.sched_getaffinity(0)), 16))
    chunk = max(256, -(-len(blobs) // (workers * 4)))
    starts = list(range(0, len(blobs), chunk))
    jobs = [(blobs[s : s + chunk], resolution, mode) for s in starts]
    if workers > 1 and len(blobs) >= POOL_THRESHOLD:
        with ProcessPoolExecutor(max_workers=workers) as ex:
            results = list(ex.map(_decode_chunk, jobs))
    else:
        results = [_decode_chunk(j) for j in jobs]
    for s, (arr, bad, msg) in zip(starts, results):
        if arr is None:
            raise DatasetError(f"{where}/{names[s + bad]}: cannot read image ({msg})")
    c = {"L": 1, "RGB": 3, "RGBA": 4}[mode]
    if not results:
        return np.empty((0, c, resolution, resolution), np.uint8)
    return np.concatenate([r[0] for r in results], axis=0)


# ----------------------------------------------------------------------------- one call
def source_identity(root: Path) -> tuple[dict[str, Any], list[str], dict[str, tuple[int, int]] | None]:
    """(cache identity, image paths, folder listing or None for an archive)."""
    if root.is_dir():
        listing = list_folder(root)
        digest = _cache.key_of({"files": sorted((k, v[0], v[1]) for k, v in listing.items())})
        return {"path": str(root.resolve()), "listing": digest}, sorted(listing), listing
    if is_archive(root):
        return _cache.file_identity(root), [], None
    raise DatasetError(f"{root}: not a folder or a .tar/.tar.gz archive of images")


def load_images(root: Path, split: str, resolution: int, mode: str, where: str,
                max_images: int | None, subset_seed: int, paths: list[str] | None = None):
    """Decode ``split`` of an image folder/archive: (images NCHW uint8, labels, class names)."""
    from ._base import subset_indices

    archive = not root.is_dir()
    data: dict[str, bytes] | None = None
    if archive and root.stat().st_size <= ONE_PASS_BYTES:
        data = read_archive_members(root, None)  # one pass: names and bytes together
        paths = list(data)
    elif archive:
        paths = list_archive(root)
    elif paths is None:
        paths = sorted(list_folder(root))
    flat_name = root.name.split(".")[0] or "images"
    layout = resolve_layout(paths, split, where, flat_name)
    idx = subset_indices(len(layout.files), max_images, subset_seed)
    files = [layout.files[i] for i in idx]
    labels = layout.labels[idx]
    if archive:
        if data is None:
            data = read_archive_members(root, set(files))
        blobs = [data[f] for f in files]
    else:
        blobs = []
        for f in files:
            try:
                blobs.append((root / f).read_bytes())
            except OSError as exc:
                raise DatasetError(f"{where}/{f}: cannot read ({exc.strerror or exc})") from None
    images = decode_all(blobs, files, resolution, mode, where)
    return images, labels, layout.class_names
