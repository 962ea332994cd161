"""``fid``: Fréchet Inception Distance (Heusel et al. 2017) on the 2048-d pool features."""
from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from torch_fidelity.metric_fid import fid_features_to_statistics

from ..config import BlockConfig
from ..registry import METRIC
from ._base import Metric


class FidConfig(BlockConfig):
    """Fréchet Inception Distance to the reference split (lower is better)."""

    type: Literal["fid"] = "fid"


def trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray, feats2: np.ndarray | None = None) -> float:
    """``tr(sqrtm(sigma1 @ sigma2))`` for symmetric PSD matrices, through symmetric eigendecompositions.

    Same quantity as torch-fidelity's ``sum(sqrt(eigvals(sigma1 @ sigma2)))`` (a test checks it), but
    stable and faster. With the features behind ``sigma2`` (``feats2`` ``[n, d]``, ``n <= d``) the
    non-zero eigenvalues of ``sigma1 sigma2`` are those of the ``n x n`` matrix
    ``A sigma1 A^T / (n - 1)`` with ``A`` the centred features, which is much smaller.
    """
    if feats2 is not None and feats2.shape[0] <= feats2.shape[1]:
        a = feats2.astype(np.float64) - feats2.astype(np.float64).mean(0)
        m = a @ sigma1 @ a.T / (a.shape[0] - 1)
    else:
        w, v = np.linalg.eigh(sigma1)
        root = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
        m = root @ sigma2 @ root
    ev = np.linalg.eigvalsh((m + m.T) / 2)
    return float(np.sqrt(np.clip(ev, 0, None)).sum())


def frechet_distance(mu1, sigma1, mu2, sigma2, feats2: np.ndarray | None = None) -> float:
    """``|mu1 - mu2|^2 + tr(sigma1) + tr(sigma2) - 2 tr(sqrtm(sigma1 sigma2))``."""
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    sigma1, sigma2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * trace_sqrt_product(sigma1, sigma2, feats2))


@METRIC.register(FidConfig)
class Fid(Metric):
    """Fréchet Inception Distance to the reference split (lower is better)."""

    def reference_stats(self, features: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
        stats = fid_features_to_statistics(features["pool"].cpu())
        return {"mu": np.asarray(stats["mu"], np.float64), "sigma": np.asarray(stats["sigma"], np.float64)}

    def compute(self, features: dict[str, torch.Tensor], reference: dict[str, np.ndarray] | None) -> dict[str, float]:
        assert reference is not None
        feats = features["pool"].cpu()
        if feats.shape[0] < 2:
            raise ValueError("FID needs at least 2 samples")
        gen = fid_features_to_statistics(feats)
        value = frechet_distance(reference["mu"], reference["sigma"], gen["mu"], gen["sigma"], feats.numpy())
        return {"fid": value}
