"""``evaluate``: generated samples + reference images -> metric values, with cached reference stats."""
from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch

from ..datasets import _cache
from ..datasets._base import subset_indices
from ..registry import METRIC
from ._base import Metric
from ._inception import (
    FIELD,
    MetricError,
    classifier_is_zero,
    extract,
    load_extractor,
    resolve_weights,
    weights_sha256,
)

log = logging.getLogger("ganzoo.metrics")
REFERENCE_FORMAT = 1

GenerateFn = Callable[[int], torch.Tensor]


def build_metrics(specs: Sequence[Any]) -> list[Metric]:
    """Metric objects from names, mappings, configs or already built metrics."""
    out = []
    for spec in specs:
        out.append(spec if isinstance(spec, Metric) else METRIC.build(spec))
    names = [m.name for m in out]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise MetricError(f"eval.metrics: {', '.join(sorted(dup))} listed more than once")
    return out


def images_fn(images: torch.Tensor) -> GenerateFn:
    """A ``generate_fn`` that hands out ``images`` in order (to evaluate a fixed set, e.g. in tests)."""
    pos = [0]

    def generate(n: int) -> torch.Tensor:
        if pos[0] + n > len(images):
            raise MetricError(f"only {len(images)} images to evaluate, asked for more")
        out = images[pos[0] : pos[0] + n]
        pos[0] += n
        return out

    return generate


def _generated_batches(generate_fn: GenerateFn, num_samples: int, batch_size: int) -> Iterator[torch.Tensor]:
    done = 0
    while done < num_samples:
        n = min(batch_size, num_samples - done)
        x = generate_fn(n)
        if not isinstance(x, torch.Tensor) or x.ndim != 4 or x.shape[0] != n:
            got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise MetricError(f"generate_fn({n}) must return images [{n}, C, H, W], got {got}")
        done += n
        yield x


def _reference_batches(images: torch.Tensor, idx: np.ndarray, batch_size: int) -> Iterator[torch.Tensor]:
    index = torch.from_numpy(idx)
    for s in range(0, len(index), batch_size):
        yield images[index[s : s + batch_size].to(images.device)]


def reference_cache_path(cache_dir: Path, metric: Metric, key: dict[str, Any]) -> Path:
    return cache_dir / "reference" / f"{metric.name}-{_cache.key_of({**key, **metric.reference_key(), 'metric': metric.name})}.npz"


def evaluate(
    metrics: Sequence[Any],
    generate_fn: GenerateFn | None,
    reference: Any | None,
    *,
    num_samples: int,
    batch_size: int = 200,
    weights: str | os.PathLike[str] | None = None,
    device: torch.device | str = "cpu",
    cache_dir: str | os.PathLike[str] | None = None,
    max_reference: int | None = None,
) -> dict[str, float]:
    """Compute ``metrics`` for ``num_samples`` images from ``generate_fn`` against ``reference``.

    * ``metrics``: names (``"fid"``), mappings (``{"type": "kid", "subsets": 50}``), configs or metrics.
    * ``generate_fn(n)``: ``n`` images ``[n, C, H, W]``, uint8 ``[0, 255]`` (or float ``[-1, 1]``), on
      any device; called with ``n <= batch_size`` until ``num_samples`` are made. 1-channel images
      are repeated to RGB, a 4th (alpha) channel dropped.
    * ``reference``: an :class:`~ganzoo.datasets.ImageDataset` (``images``, ``content_hash``); its first
      ``max_reference`` images of a fixed random order (all by default) are used. May be None when
      only reference-free metrics (``is``) are asked for.
    * ``weights``: the FID Inception ``.pth`` (the recipe's ``eval.inception_weights``); None: the
      ``GANZOO_INCEPTION_WEIGHTS`` environment variable; neither: :class:`MetricError`.
    * ``cache_dir``: reference statistics and weight hashes (default ``$GANZOO_CACHE/metrics``); the
      key holds the dataset's content hash, the weights' sha256, the number of reference images and
      the metric's settings, so a changed dataset or network never reuses stale statistics.

    Returns ``{"fid": ..., "kid": ..., "kid_std": ..., "is": ..., "is_std": ...}`` for the metrics asked.
    Everything that can fail for a user reason (weights, IS with a zero classifier, no reference)
    fails before the first sample is generated.
    """
    mets = build_metrics(metrics)
    if not mets:
        return {}
    if num_samples < 2:
        raise MetricError(f"eval.num_samples: must be at least 2, got {num_samples}")
    path = resolve_weights(weights)
    if any(m.needs_logits for m in mets) and classifier_is_zero(path):
        from .inception_score import zero_fc_message

        raise MetricError(f"eval.metrics: {zero_fc_message(path)}")
    needs_ref = [m for m in mets if m.needs_reference]
    if needs_ref and reference is None:
        raise MetricError(f"eval.reference: {', '.join(m.name for m in needs_ref)} need reference images")
    if generate_fn is None:
        raise MetricError("evaluate: generate_fn is required")
    cache = Path(cache_dir) if cache_dir is not None else _cache.cache_root() / "metrics"
    extractor = load_extractor(path, device)

    ref_stats: dict[str, dict[str, np.ndarray]] = {}
    if needs_ref:
        n_ref = len(reference.images)
        idx = subset_indices(n_ref, max_reference, 0)
        if len(idx) < 2:
            raise MetricError(f"eval.reference: needs at least 2 images, has {len(idx)}")
        key = {"format": REFERENCE_FORMAT, "dataset": reference.content_hash,
               "weights": weights_sha256(path, cache), "n": int(len(idx)), "of": int(n_ref)}
        missing = []
        for m in needs_ref:
            p = reference_cache_path(cache, m, key)
            arrays = _cache.load_arrays(p)
            if arrays is not None:
                log.debug("reference stats for %s: cache hit %s", m.name, p)
                ref_stats[m.name] = arrays
            else:
                missing.append((m, p))
        if missing:
            t = time.perf_counter()
            feats = extract(extractor, _reference_batches(reference.images, idx, batch_size))
            log.info("reference features: %d images in %.1fs", len(idx), time.perf_counter() - t)
            for m, p in missing:
                stats = m.reference_stats(feats)
                ref_stats[m.name] = stats
                try:
                    _cache.save_arrays(p, stats)
                except OSError as exc:
                    log.warning("could not cache reference stats at %s: %s", p, exc)

    t = time.perf_counter()
    feats = extract(extractor, _generated_batches(generate_fn, num_samples, batch_size))
    log.info("sample features: %d images in %.1fs", num_samples, time.perf_counter() - t)
    out: dict[str, float] = {}
    for m in mets:
        out.update(m.compute(feats, ref_stats.get(m.name)))
    return out


def inception_features(
    images: torch.Tensor,
    *,
    weights: str | os.PathLike[str] | None = None,
    device: torch.device | str = "cpu",
    batch_size: int = 200,
) -> dict[str, torch.Tensor]:
    """Inception features of ``images`` ``[N, C, H, W]`` (uint8, or float in ``[-1, 1]``), no caching:
    ``{"pool": float32 [N, 2048], "logits": float32 [N, 1008]}`` on the CPU."""
    extractor = load_extractor(resolve_weights(weights), device)
    return extract(extractor, (images[s : s + batch_size] for s in range(0, len(images), batch_size)))


def evaluate_recipe(
    recipe: Any,
    generate_fn: GenerateFn,
    *,
    reference: Any | None = None,
    device: torch.device | str = "cpu",
    cache_dir: str | os.PathLike[str] | None = None,
    num_samples: int | None = None,
) -> dict[str, float]:
    """:func:`evaluate` with the recipe's ``eval`` section (metrics, num_samples, batch_size, weights).

    ``reference`` defaults to :func:`ganzoo.datasets.build_reference` (``eval.reference``, else the
    training data's test split) when a metric needs one.
    """
    mets = build_metrics(recipe.eval.metrics)
    if not mets:
        return {}
    resolve_weights(recipe.eval.inception_weights)  # fail before building the reference
    if reference is None and any(m.needs_reference for m in mets):
        from ..datasets import build_reference

        reference = build_reference(recipe)
    return evaluate(
        mets, generate_fn, reference,
        num_samples=num_samples or recipe.eval.num_samples, batch_size=recipe.eval.batch_size,
        weights=recipe.eval.inception_weights, device=device, cache_dir=cache_dir,
    )


__all__ = ["evaluate", "evaluate_recipe", "images_fn", "inception_features", "build_metrics", "FIELD"]
