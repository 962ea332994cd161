"""``fid``: Fréchet Inception Distance (Heusel et al. 2017) on the 2048-d pool features."""
from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch

from ..config import BlockConfig
from ..registry import METRIC
from ._base import Metric


class FidConfig(BlockConfig):
    """Fréchet Inception Distance to the reference split (lower is better)."""

    type: Literal["fid"] = "fid"


def _f64(x: Any, device: torch.device) -> torch.Tensor:
    return torch.as_tensor(x).to(device=device, dtype=torch.float64)


def _device(*xs: Any) -> torch.device:
    """The device of the first tensor among ``xs`` (arrays and None are skipped), else the CPU."""
    return next((x.device for x in xs if isinstance(x, torch.Tensor)), torch.device("cpu"))


def feature_statistics(feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and covariance (``ddof=1``, as ``np.cov``) of ``[n, d]`` features, in float64 on their device."""
    x = feats.to(torch.float64)
    mu = x.mean(0)
    a = x - mu
    return mu, a.T @ a / (x.shape[0] - 1)


def trace_sqrt_product(sigma1: Any, sigma2: Any, feats2: Any | None = None) -> float:
    """``tr(sqrtm(sigma1 @ sigma2))`` for symmetric PSD matrices, through symmetric eigendecompositions.

    Same quantity as torch-fidelity's ``sum(sqrt(eigvals(sigma1 @ sigma2)))`` (a test checks it), but
    stable and faster. With the features behind ``sigma2`` (``feats2`` ``[n, d]``, ``n <= d``) the
    non-zero eigenvalues of ``sigma1 sigma2`` are those of the ``n x n`` matrix
    ``A sigma1 A^T / (n - 1)`` with ``A`` the centred features, which is much smaller. Arrays or
    tensors; the maths runs in float64 on ``feats2``'s device (else ``sigma2``'s): on a GPU
    after an evaluation's sampling, where a single-threaded CPU took seconds per 2048 x 2048 eigh.
    """
    device = _device(feats2, sigma2)
    s1 = _f64(sigma1, device)
    if feats2 is not None and feats2.shape[0] <= feats2.shape[1]:
        a = _f64(feats2, device)
        a = a - a.mean(0)
        m = a @ s1 @ a.T / (a.shape[0] - 1)
    else:
        w, v = torch.linalg.eigh(s1)
        root = (v * w.clamp(min=0).sqrt()) @ v.T
        m = root @ _f64(sigma2, device) @ root
    ev = torch.linalg.eigvalsh((m + m.T) / 2)
    return float(ev.clamp(min=0).sqrt().sum())


def frechet_distance(mu1: Any, sigma1: Any, mu2: Any, sigma2: Any, feats2: Any | None = None) -> float:
    """``|mu1 - mu2|^2 + tr(sigma1) + tr(sigma2) - 2 tr(sqrtm(sigma1 sigma2))`` (float64; arrays or
    tensors, on ``feats2``'s or ``sigma2``'s device)."""
    device = _device(feats2, sigma2)
    mu1, sigma1, mu2, sigma2 = (_f64(x, device) for x in (mu1, sigma1, mu2, sigma2))
    diff = mu1 - mu2
    tr = float(diff @ diff + torch.trace(sigma1) + torch.trace(sigma2))
    return tr - 2 * trace_sqrt_product(sigma1, sigma2, feats2)


@METRIC.register(FidConfig)
class Fid(Metric):
    """Fréchet Inception Distance to the reference split (lower is better)."""

    def reference_stats(self, features: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
        mu, sigma = feature_statistics(features["pool"])
        return {"mu": mu.cpu().numpy(), "sigma": sigma.cpu().numpy()}

    def compute(self, features: dict[str, torch.Tensor], reference: dict[str, np.ndarray] | None) -> dict[str, float]:
        assert reference is not None
        feats = features["pool"]  # on the extractor's device
        if feats.shape[0] < 2:
            raise ValueError("FID needs at least 2 samples")
        mu, sigma = feature_statistics(feats)
        return {"fid": frechet_distance(reference["mu"], reference["sigma"], mu, sigma, feats)}
