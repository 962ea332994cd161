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
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import atomic_write

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


def save_arrays(path: Path, arrays: dict[str, np.ndarray]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
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
