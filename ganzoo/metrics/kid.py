"""``kid``: Kernel Inception Distance (Bińkowski et al. 2018), torch-fidelity's unbiased polynomial MMD."""
from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field
from torch_fidelity.metric_kid import kid_features_to_metric

from ..config import BlockConfig
from ..registry import METRIC
from ._base import Metric


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
        return {"features": features["pool"].cpu().numpy().astype(np.float32)}

    def subset_size(self, n_generated: int, n_reference: int) -> int:
        return min(self.cfg.subset_size, n_generated, n_reference)

    def compute(self, features: dict[str, torch.Tensor], reference: dict[str, np.ndarray] | None) -> dict[str, Any]:
        assert reference is not None
        ref = torch.from_numpy(reference["features"])
        gen = features["pool"].cpu()
        m = self.subset_size(len(gen), len(ref))
        if m < 2:
            raise ValueError("KID needs at least 2 generated and 2 reference samples")
        out = kid_features_to_metric(
            ref, gen,
            kid_subsets=self.cfg.subsets, kid_subset_size=m, kid_kernel="poly",
            kid_kernel_poly_degree=self.cfg.degree, kid_kernel_poly_gamma=self.cfg.gamma,
            kid_kernel_poly_coef0=self.cfg.coef0, rng_seed=self.cfg.seed, verbose=False,
        )
        return {"kid": float(out["kernel_inception_distance_mean"]), "kid_std": float(out["kernel_inception_distance_std"])}
