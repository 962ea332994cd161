"""``kid``: Kernel Inception Distance (Bińkowski et al. 2018), torch-fidelity's unbiased polynomial MMD.

The same subsets as torch-fidelity's ``kid_features_to_metric`` (its ``RandomState`` draws, in its order)
and the same estimator, computed in torch on the features' device, many subsets per batched matmul:
the kernel products in float32 (TF32 off), as torch-fidelity's NumPy code does, and the kernel and
its sums in float64. On the H200 (2026-12-05), with one CPU thread, torch-fidelity's loop of 100
subsets took most of an evaluation's ~25 s; a test checks the values against it.
"""
from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field

from ..config import BlockConfig
from ..registry import METRIC
from ._base import Metric
from ._inception import full_fp32


class KidConfig(BlockConfig):
    """Kernel Inception Distance to the reference split, mean and std over subsets (lower is better)."""

    type: Literal["kid"] = "kid"
    subsets: int = Field(100, ge=1, le=10000, description="random subsets averaged")
    subset_size: int = Field(
        1000, ge=2, description="samples per subset (lowered to the number of samples when there are fewer)"
    )
    degree: int = Field(3, ge=1, le=10, description="polynomial kernel degree")
    gamma: float | None = Field(None, gt=0, description="kernel scale (default 1 / feature dim)")
    coef0: float = Field(1.0, description="kernel offset")
    seed: int = Field(2020, ge=0, description="seed of the subset sampling")


@METRIC.register(KidConfig)
class Kid(Metric):
    """Kernel Inception Distance to the reference split, mean and std over subsets (lower is better)."""

    cfg: KidConfig

    def reference_stats(self, features: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
        return {"features": features["pool"].float().cpu().numpy()}

    def subset_size(self, n_generated: int, n_reference: int) -> int:
        return min(self.cfg.subset_size, n_generated, n_reference)

    def compute(self, features: dict[str, torch.Tensor], reference: dict[str, np.ndarray] | None) -> dict[str, Any]:
        assert reference is not None
        ref = torch.from_numpy(reference["features"])
        gen = features["pool"]  # on the extractor's device
        m = self.subset_size(len(gen), len(ref))
        if m < 2:
            raise ValueError("KID needs at least 2 generated and 2 reference samples")
        c = self.cfg
        mmds = subset_mmds(ref, gen, subsets=c.subsets, subset_size=m, degree=c.degree, gamma=c.gamma,
                           coef0=c.coef0, seed=c.seed)
        return {"kid": float(mmds.mean()), "kid_std": float(mmds.std())}


def subset_mmds(x: torch.Tensor, y: torch.Tensor, *, subsets: int, subset_size: int, degree: int,
                gamma: float | None, coef0: float, seed: int, max_elements: int = 1 << 25) -> np.ndarray:
    """Unbiased polynomial-kernel MMD^2 of ``subsets`` random subset pairs of ``x`` and ``y`` (``[n, d]``),
    float64 ``[subsets]``, on ``y``'s device. Subsets are drawn as torch-fidelity draws them; each
    chunk of subsets (at most ``max_elements`` gathered feature values per side) is one batched matmul."""
    rng = np.random.RandomState(seed)
    draws = [(rng.choice(len(x), subset_size, replace=False), rng.choice(len(y), subset_size, replace=False))
             for _ in range(subsets)]
    device, m = y.device, subset_size
    x, y = x.to(device=device, dtype=torch.float32), y.to(dtype=torch.float32)
    g = 1.0 / x.shape[1] if gamma is None else gamma
    per = max(1, max_elements // (m * x.shape[1]))

    def kernel(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:  # [k, m, d] x [k, m, d] -> [k, m, m]
        return (torch.bmm(u, v.transpose(1, 2)).double() * g + coef0) ** degree

    out = []
    with full_fp32():
        for s in range(0, subsets, per):
            ix = torch.as_tensor(np.stack([d[0] for d in draws[s:s + per]]), device=device)
            iy = torch.as_tensor(np.stack([d[1] for d in draws[s:s + per]]), device=device)
            a, b = x[ix], y[iy]  # [k, m, d]
            kxx, kyy, kxy = kernel(a, a), kernel(b, b), kernel(a, b)
            off = (kxx.sum((1, 2)) - kxx.diagonal(dim1=1, dim2=2).sum(1)
                   + kyy.sum((1, 2)) - kyy.diagonal(dim1=1, dim2=2).sum(1))
            out.append(off / (m * (m - 1)) - 2 * kxy.sum((1, 2)) / (m * m))
    return torch.cat(out).cpu().numpy()
