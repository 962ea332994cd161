"""Base class of metric blocks: what :func:`ganzoo.metrics.evaluate` calls on each.

A metric block is built as ``METRIC.build(cfg)`` and provides:

* ``needs_reference`` (bool): compares against reference images (FID, KID) or not (IS);
* ``needs_logits`` (bool): uses the Inception classifier (IS), refused with FID-only weights;
* ``reference_key()``: JSON-able settings that change its reference statistics (part of the cache key);
* ``reference_stats(features) -> {name: numpy array}``: statistics of the reference features
  (``features["pool"]`` float32 ``[N, 2048]``, ``features["logits"]`` ``[N, 1008]``, on the Inception
  network's device: compute there, and return CPU arrays), cached on disk;
* ``compute(features, reference_stats) -> {key: float}``: the values for generated features,
  e.g. ``{"fid": 12.3}`` or ``{"kid": 0.004, "kid_std": 0.001}``.
"""
from __future__ import annotations

from abc import abstractmethod
from typing import Any

import numpy as np
import torch

from ..config import BlockConfig


class Metric:
    """A sample-quality metric on Inception features."""

    needs_reference = True
    needs_logits = False

    def __init__(self, cfg: BlockConfig) -> None:
        self.cfg = cfg

    @property
    def name(self) -> str:
        return self.cfg.type

    def reference_key(self) -> dict[str, Any]:
        return {}

    def reference_stats(self, features: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
        return {}

    @abstractmethod  # marks the placeholder: a subclass without its own is refused at registration
    def compute(self, features: dict[str, torch.Tensor], reference: dict[str, np.ndarray] | None) -> dict[str, float]:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.cfg!r})"
