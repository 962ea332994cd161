"""Metrics (registry kind ``metric``: ``fid``, ``kid``, ``is``) on torch-fidelity's FID Inception features.

The training loop calls one function::

    from ganzoo.metrics import evaluate
    values = evaluate(["fid", "kid"], generate_fn, reference_dataset, num_samples=10000,
                      batch_size=200, weights=recipe.eval.inception_weights, device="cuda")
    # {"fid": 23.1, "kid": 0.012, "kid_std": 0.001}

or :func:`evaluate_recipe` with a recipe. Metric blocks follow :class:`ganzoo.metrics._base.Metric`.
Weights come from a local file only (``eval.inception_weights`` or ``$GANZOO_INCEPTION_WEIGHTS``).
See ``docs/data_and_metrics.md``.
"""
from ._evaluate import build_metrics, evaluate, evaluate_recipe, images_fn, inception_features
from ._inception import WEIGHTS_ENV, MetricError, as_rgb_uint8, classifier_is_zero, resolve_weights, to_uint8

__all__ = [
    "MetricError",
    "WEIGHTS_ENV",
    "as_rgb_uint8",
    "build_metrics",
    "classifier_is_zero",
    "evaluate",
    "evaluate_recipe",
    "images_fn",
    "inception_features",
    "resolve_weights",
    "to_uint8",
]
