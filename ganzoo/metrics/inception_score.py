"""``is``: Inception Score (Salimans et al. 2016) from the Inception classifier's logits.

Needs weights with the real 1008-way classifier. The shared FID weights store that layer as zeros
(IS would silently be exactly 1.0); they are refused with a one-line error, at recipe validation
when the weights file can be found and again before any sample is generated.
"""
from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field
from torch_fidelity.metric_isc import isc_features_to_metric

from ..config import BlockConfig
from ..registry import METRIC
from ._base import Metric


class InceptionScoreConfig(BlockConfig):
    """Inception Score of the samples alone, mean and std over splits (higher is better; needs classifier weights)."""

    type: Literal["is"] = "is"
    splits: int = Field(10, ge=1, le=1000, description="splits averaged (lowered so each split has 2+ samples)")
    seed: int = Field(2020, ge=0, description="seed of the sample shuffle before splitting")

    def recipe_problems(self, recipe: Any) -> list[tuple[tuple[str, ...], str]]:
        from ._inception import MetricError, classifier_is_zero, resolve_weights

        try:
            path = resolve_weights(getattr(getattr(recipe, "eval", None), "inception_weights", None))
            zero = classifier_is_zero(path)
        except MetricError:
            return []  # reported when evaluating (the weights may only exist on the training machine)
        return [((), zero_fc_message(path))] if zero else []


def zero_fc_message(path) -> str:
    return (
        f"Inception Score needs the Inception classifier, but the fc layer of {path} is all zeros "
        "(FID/KID-only weights; IS would be 1.0); drop 'is' from eval.metrics or use weights with the classifier"
    )


@METRIC.register(InceptionScoreConfig)
class InceptionScore(Metric):
    """Inception Score of the samples alone, mean and std over splits (higher is better; needs classifier weights)."""

    cfg: InceptionScoreConfig
    needs_reference = False
    needs_logits = True

    def compute(self, features: dict[str, torch.Tensor], reference: dict[str, np.ndarray] | None) -> dict[str, Any]:
        logits = features["logits"].cpu()
        splits = max(1, min(self.cfg.splits, len(logits) // 2))  # 1 sample per split: IS == 1
        out = isc_features_to_metric(logits, splits=splits, shuffle=True, rng_seed=self.cfg.seed)
        return {"is": float(out["inception_score_mean"]), "is_std": float(out["inception_score_std"])}
