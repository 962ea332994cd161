"""On-disk cache of decoded datasets: one uncompressed ``.npz`` per (source identity, options).

Files live under ``$GANZOO_CACHE`` (default ``~/.cache/ganzoo``) in ``datasets/``. They are written
atomically (temporary file in the same folder, ``fsync``, ``os.replace``) so a crash or two
processes decoding at once never leave a truncated file, and read back with
``numpy.load(allow_pickle=False)`` (class names are a fixed-width unicode array, not objects).
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Callable

import numpy as np

CACHE_ENV = "GANZOO_CACHE"
FORMAT_VERSION = 1


def cache_root() -> Path:
    """``$GANZOO_CACHE`` or ``~/.cache/ganzoo``."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "ganzoo"


def key_of(parts: dict[str, Any]) -> str:
    """A stable hex key of a JSON-able mapping (sorted keys)."""
    text = json.dumps(parts, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def file_identity(path: Path) -> dict[str, Any]:
    """What identifies a source file without reading it: resolved path, size, mtime (ns)."""
    st = path.stat()
    return {"path": str(path.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def atomic_write(path: Path, write: Callable[[Any], None]) -> None:
    """Write ``path`` through ``write(fileobj)`` via a temporary file, fsync and rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    try:  # make the rename itself durable
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


def save_arrays(path: Path, arrays: dict[str, np.ndarray]) -> None:
    atomic_write(path, lambda f: np.savez(f, **arrays))


def load_arrays(path: Path) -> dict[str, np.ndarray] | None:
    """The arrays of a cache file, or None if it is missing or unreadable (then it is rebuilt)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (FileNotFoundError, OSError, ValueError, zipfile.BadZipFile, EOFError, KeyError):
        return None


def dataset_cache_path(kind: str, key: str) -> Path:
    return cache_root() / "datasets" / f"{kind}-{key}.npz"
