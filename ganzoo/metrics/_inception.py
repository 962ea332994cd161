"""The FID Inception network (torch-fidelity's ``inception-v3-compat``), loaded from a local file only.

* :func:`resolve_weights`: ``eval.inception_weights``, else ``$GANZOO_INCEPTION_WEIGHTS``; never a
  download (a clear :class:`MetricError` names both options instead).
* :func:`weights_sha256`: the file's sha256, cached on disk by (path, size, mtime).
* :func:`classifier_is_zero`: whether the ``fc`` layer is all zeros (FID/KID-only weights, where an
  Inception Score would silently be 1.0). Read with ``torch.load(weights_only=True, mmap=True)``.
* :func:`load_extractor`: torch-fidelity's :class:`FeatureExtractorInceptionV3` on a device, memoized.
  torch-fidelity calls ``torch.load(path, weights_only=False)``; it is built here under
  ``TORCH_FORCE_WEIGHTS_ONLY_LOAD=1``, which makes torch load it with ``weights_only=True`` anyway.
* :func:`extract`: uint8 batches -> ``{"pool": [N,2048], "logits": [N,1008]}`` float32 on the CPU.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import threading
from pathlib import Path
from typing import Any, Iterable, Iterator

import torch

from ..datasets import _cache
from ..errors import GanzooError

WEIGHTS_ENV = "GANZOO_INCEPTION_WEIGHTS"
FIELD = "eval.inception_weights"
SHARED_HINT = "../shared/weights/fid-inception-2015-12-05.pth"
EXTRACTOR_NAME = "inception-v3-compat"
FEATURES = ("2048", "logits_unbiased")  # torch-fidelity names -> our "pool", "logits"

_lock = threading.Lock()
_extractors: dict[tuple[Any, ...], torch.nn.Module] = {}
_zero_fc: dict[tuple[Any, ...], bool] = {}


class MetricError(GanzooError):
    """A metric cannot be computed (missing weights, IS with FID-only weights, no reference, ...)."""


def resolve_weights(value: str | os.PathLike[str] | None = None) -> Path:
    """The Inception weights file: ``value`` (the recipe's field), else ``$GANZOO_INCEPTION_WEIGHTS``."""
    options = f"set {FIELD} in the recipe or the {WEIGHTS_ENV} environment variable to a local .pth (e.g. {SHARED_HINT}); nothing is downloaded"
    if value:
        path, where = Path(value).expanduser(), FIELD
    elif os.environ.get(WEIGHTS_ENV):
        path, where = Path(os.environ[WEIGHTS_ENV]).expanduser(), WEIGHTS_ENV
    else:
        raise MetricError(f"{FIELD}: Inception weights not set; {options}")
    if not path.is_file():
        raise MetricError(f"{where}: {path}: not found; {options}")
    return path


def _identity(path: Path) -> tuple[Any, ...]:
    st = path.stat()
    return (str(path.resolve()), st.st_size, st.st_mtime_ns)


def weights_sha256(path: Path, cache_dir: Path | None = None) -> str:
    """sha256 of the weights file, cached under ``cache_dir/hashes`` by (path, size, mtime)."""
    folder = (cache_dir or _cache.cache_root() / "metrics") / "hashes"
    key = _cache.key_of({"identity": list(_identity(path))})
    record = folder / f"{key}.sha256"
    try:
        text = record.read_text().strip()
        if len(text) == 64:
            return text
    except OSError:
        pass
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    digest = h.hexdigest()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        _cache.atomic_write(record, lambda f: f.write(digest.encode()))
    except OSError:
        pass
    return digest


def _load_state_dict(path: Path, where: str) -> dict[str, torch.Tensor]:
    try:
        try:
            sd = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as exc:
            if "mmap" not in str(exc):
                raise
            sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001  (corrupt file, unsafe pickle, not a torch file)
        raise MetricError(f"{where}: {path}: cannot load as a weights-only state dict ({type(exc).__name__}: "
                          f"{str(exc).splitlines()[0] if str(exc) else ''})") from None
    if not isinstance(sd, dict) or "fc.weight" not in sd:
        raise MetricError(f"{where}: {path}: not a torch-fidelity Inception state dict (no 'fc.weight')")
    return sd


def classifier_is_zero(path: Path, where: str = FIELD) -> bool:
    """True when the weights' ``fc`` (2048->1008 classifier) is all zeros: Inception Score is meaningless."""
    key = _identity(path)
    if key not in _zero_fc:
        sd = _load_state_dict(path, where)
        _zero_fc[key] = not bool(sd["fc.weight"].any())
    return _zero_fc[key]


@contextlib.contextmanager
def _weights_only_loads() -> Iterator[None]:
    old = os.environ.get("TORCH_FORCE_WEIGHTS_ONLY_LOAD")
    os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = "1"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("TORCH_FORCE_WEIGHTS_ONLY_LOAD", None)
        else:
            os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = old


def load_extractor(path: Path, device: torch.device | str = "cpu", where: str = FIELD) -> torch.nn.Module:
    """torch-fidelity's FID Inception (``pool`` 2048-d and ``logits_unbiased``) from ``path``, on ``device``."""
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    device = torch.device(device)
    key = (*_identity(path), str(device))
    with _lock:
        if key not in _extractors:
            _load_state_dict(path, where)  # validates the file with weights_only=True first
            try:
                with _weights_only_loads():
                    fe = FeatureExtractorInceptionV3(EXTRACTOR_NAME, list(FEATURES),
                                                     feature_extractor_weights_path=str(path))
            except Exception as exc:  # noqa: BLE001  (wrong keys/shapes)
                raise MetricError(f"{where}: {path}: not torch-fidelity's FID Inception weights "
                                  f"({type(exc).__name__}: {str(exc).splitlines()[0]})") from None
            _extractors.clear()  # keep one network in memory
            fe = fe.to(device).eval()
            if device.type == "cpu":  # measured ~2x faster with oneDNN; features agree to ~5e-6
                fe = fe.to(memory_format=torch.channels_last)
            _extractors[key] = fe
        return _extractors[key]


def as_rgb_uint8(x: torch.Tensor) -> torch.Tensor:
    """Images for the Inception net: uint8 ``[N,3,H,W]``. Floats are taken as ``[-1, 1]``; grey is repeated."""
    if x.ndim != 4:
        raise MetricError(f"images must be [N, C, H, W], got shape {tuple(x.shape)}")
    if x.dtype != torch.uint8:
        if not x.is_floating_point():
            raise MetricError(f"images must be uint8 [0, 255] or float [-1, 1], got {x.dtype}")
        x = to_uint8(x)
    c = x.shape[1]
    if c == 1:
        x = x.expand(-1, 3, -1, -1)
    elif c == 4:
        x = x[:, :3]
    elif c != 3:
        raise MetricError(f"images must have 1, 3 or 4 channels, got {c}")
    return x.contiguous()


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """float ``[-1, 1]`` -> uint8 ``[0, 255]`` (rounded, clamped), as images are saved."""
    return ((x.detach().float() + 1) * 127.5).round_().clamp_(0, 255).to(torch.uint8)


@contextlib.contextmanager
def full_fp32() -> Iterator[None]:
    """No TF32 on CUDA while extracting: FID is specified in float32 (TF32 shifts it slightly)."""
    old = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


@torch.inference_mode()
def extract(extractor: torch.nn.Module, batches: Iterable[torch.Tensor]) -> dict[str, torch.Tensor]:
    """Features of every batch: ``{"pool": float32 [N,2048], "logits": float32 [N,1008]}`` on the
    extractor's device (the metrics compute there: see fid.py and kid.py)."""
    device = next(extractor.parameters()).device
    pools, logits = [], []
    with full_fp32():
        for x in batches:
            x = as_rgb_uint8(x).to(device, non_blocking=True)
            p, lg = extractor(x)
            pools.append(p.float())
            logits.append(lg.float())
    if not pools:
        return {"pool": torch.empty(0, 2048, device=device), "logits": torch.empty(0, 1008, device=device)}
    return {"pool": torch.cat(pools), "logits": torch.cat(logits)}
