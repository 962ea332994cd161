"""Sample-quality evaluation of a generator through :mod:`ganzoo.metrics` (FID, KID, IS).

The generator (EMA-G during training) produces ``eval.num_samples`` images from its own seeded noise
stream (classes uniform when conditional), so evaluating never changes the training RNG and a
resumed run evaluates exactly like an uninterrupted one. The reference images (``eval.reference``,
else the training data's test split) are built once per :class:`Evaluator`.
"""
from __future__ import annotations

import sys
import time
from typing import Any, Callable

import torch
from torch import nn

from ..errors import GanzooError
from ..recipe import Recipe
from .sampling import CPU_NOTICE_SECONDS, batch_norm_buffers, make_generate_fn, with_standing_statistics


class EvaluationInterrupted(GanzooError):
    """SIGINT/SIGTERM arrived during an evaluation: it stops at the next batch, unfinished."""


def _tracked(generate_fn: Callable, total: int, device: torch.device, interrupted: Callable[[], bool] | None,
             progress: bool) -> Callable:
    """``generate_fn`` that stops at the next batch once ``interrupted()`` says so, shows a progress bar
    (``progress``), and on the CPU announces how long the whole evaluation will take, from its first batch."""
    from tqdm.auto import tqdm

    bar = tqdm(total=total, disable=not progress, unit="img", desc="evaluation", leave=False, file=sys.stderr)
    t0, done = time.monotonic(), [0]

    def generate(n: int) -> torch.Tensor:
        if interrupted is not None and interrupted():
            bar.close()
            raise EvaluationInterrupted("evaluation interrupted by a signal")
        images = generate_fn(n)
        done[0] += n
        bar.update(n)
        if done[0] == n and device.type == "cpu" and total > n:
            estimate = (time.monotonic() - t0) * total / n
            if estimate > CPU_NOTICE_SECONDS:
                print(f"ganzoo: evaluating {total} samples on the CPU: about {estimate / 60:.0f} min (from the "
                      f"first {n}); Ctrl-C stops it, and the checkpoint is already written", file=sys.stderr, flush=True)
        if done[0] >= total:
            bar.close()
        return images

    return generate


def weights_problem(recipe: Recipe) -> str | None:
    """Why the recipe's metrics cannot run (no Inception weights), or None. Checked before training."""
    if not recipe.eval.metrics:
        return None
    from ..metrics import MetricError, resolve_weights

    try:
        resolve_weights(recipe.eval.inception_weights)
    except MetricError as exc:
        return str(exc)
    return None


class Evaluator:
    """Computes ``recipe.eval.metrics`` for a generator; the reference split is built on first use."""

    def __init__(self, recipe: Recipe, device: torch.device, autocast: torch.dtype | None = None,
                 metrics: list[Any] | None = None, num_samples: int | None = None) -> None:
        self.recipe = recipe
        self.device = device
        self.autocast = autocast
        self.metrics = list(recipe.eval.metrics if metrics is None else metrics)
        self.num_samples = num_samples or recipe.eval.num_samples
        self.reference = None
        # the standing batch-norm buffers of the last call (eval.standing_stats > 0), kept so that the run
        # can store them beside the evaluated checkpoint: {"buffers", "batches", "batch_size", "seed"}
        self.last_standing: dict[str, Any] | None = None

    def __call__(self, generator: nn.Module, seed: int, interrupted: Callable[[], bool] | None = None,
                 progress: bool = False, truncation: float | None = None) -> dict[str, float]:
        """The metrics of ``generator``'s samples (noise seeded by ``seed``). ``interrupted``: polled
        before each batch; when it returns True the evaluation stops (:class:`EvaluationInterrupted`).
        ``progress``: a progress bar over the generated samples. ``truncation``: the samples' noise is
        the normal truncated to [-t, t] (``sampling.latent_noise``); standing statistics are still of
        the training noise, N(0, 1), as they describe G itself."""
        from ..metrics import build_metrics, evaluate

        mets = build_metrics(self.metrics)
        if not mets:
            return {}
        if self.reference is None and any(m.needs_reference for m in mets):
            from ..datasets import build_reference

            self.reference = build_reference(self.recipe)
        ec = self.recipe.eval
        standing = with_standing_statistics(generator, ec.standing_stats, ec.batch_size, self.recipe.num_classes,
                                            seed, self.autocast, progress)
        self.last_standing = None if standing is generator else {
            "buffers": {k: t.detach().cpu().clone() for k, t in batch_norm_buffers(standing).items()},
            "batches": ec.standing_stats, "batch_size": ec.batch_size, "seed": seed}
        generator = standing
        generate_fn = make_generate_fn(
            generator, int(generator.z_dim), self.recipe.num_classes, seed, ec.batch_size, self.autocast, truncation
        )
        generate_fn = _tracked(generate_fn, self.num_samples, self.device, interrupted, progress)
        # building the Inception extractor (first call) initialises layers from the global RNG before
        # loading its weights: restore the training RNG afterwards, so evaluating never changes training
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            return evaluate(
                mets, generate_fn, self.reference, num_samples=self.num_samples, batch_size=ec.batch_size,
                weights=ec.inception_weights, device=self.device,
            )


def check_eval_ready(recipe: Recipe, source: str) -> bool:
    """Whether evaluation will run: True if there are metrics and weights; False (with a warning) if
    weights are missing and ``eval.missing_weights`` is ``skip``; raises if it is ``error``."""
    problem = weights_problem(recipe)
    if not recipe.eval.metrics:
        return False
    if problem is None:
        return True
    if recipe.eval.missing_weights == "skip":
        names = ", ".join(m.type for m in recipe.eval.metrics)
        print(f"ganzoo: skipping evaluation ({names}): {problem}", file=sys.stderr)
        return False
    from ..metrics import MetricError

    raise MetricError(f"{source}: {problem}")
