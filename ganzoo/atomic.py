"""Crash-safe file writes: a file is either the old version or the complete new one, never half.

Every file of a run folder (recipe, checkpoints, sample grids, exports) goes through
:func:`atomic_write`: the bytes go to a temporary file in the same folder, which is flushed and
fsync'ed, then renamed over the target (an atomic operation on POSIX and Windows), and finally the
folder itself is fsync'ed so that the rename survives a power loss.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import IO, Callable

FILE_MODE = 0o644


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """Flush a folder's entries (renames, new files) to disk; a no-op where folders can't be opened."""
    flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0)
    try:
        fd = os.open(path, flags)
    except OSError:  # e.g. Windows: folders cannot be opened, renames are durable anyway
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def temp_name(path: Path) -> str:
    """Prefix of the temporary files used while writing ``path`` (hidden, same folder)."""
    return f".{path.name}."


PAUSE_ENV = "GANZOO_TEST_PAUSE_BEFORE_RENAME"


def _test_pause() -> None:
    """Test hook: sleep ``$GANZOO_TEST_PAUSE_BEFORE_RENAME`` seconds between the fsync and the rename,
    so that the crash tests (tests/test_reliability.py) can kill a run while a checkpoint is half
    done. Unset (always, outside those tests) it costs one environment lookup."""
    pause = os.environ.get(PAUSE_ENV)
    if pause:
        import time

        time.sleep(float(pause))


def atomic_write(path: str | os.PathLike[str], write: Callable[[IO[bytes]], None]) -> Path:
    """Write ``path`` atomically: ``write(f)`` fills a temporary file that then replaces ``path``.

    If anything fails (or the process is interrupted) before the rename, ``path`` keeps its previous
    content and the temporary file is removed.
    """
    path = Path(path)
    folder = path.parent
    fd, tmp = tempfile.mkstemp(prefix=temp_name(path), suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, FILE_MODE)
        _test_pause()
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(folder)
    return path


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    return atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def remove_stale_temps(folder: str | os.PathLike[str]) -> None:
    """Delete temporary files left by a process killed in the middle of :func:`atomic_write`."""
    folder = Path(folder)
    if not folder.is_dir():
        return
    for p in folder.iterdir():
        if p.name.startswith(".") and p.name.endswith(".tmp") and p.is_file():
            with contextlib.suppress(OSError):
                p.unlink()
