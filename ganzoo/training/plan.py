"""The plan of a run: every rule on which options combine, resolved once from the recipe, the
device and the number of processes, with one clear error per conflict.

Everything below (:mod:`.build`, :mod:`.step`, :mod:`.graph`, :mod:`.distributed`) reads the plan's
flags instead of re-deciding from the recipe. The recipe's own validator (``ganzoo/recipe.py``)
already refuses a regularizer that is not ``graph_safe`` with ``train.cuda_graph``; the plan checks it
again, so a recipe built without validation fails here with the same rule. The loss's and the
regularizer's capability flags (``ganzoo/contracts.py``) decide the rest: whether G's update runs D on
reals (``g_needs_real``), whether the penalty gets the loss's logits (``uses_logits``), whether a
compiled D stays eager (``runs_d``), and that a ``stateful`` regularizer runs in one process.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import GanzooError
from ..recipe import Recipe
from ..registry import block_flag, regularizer_active


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for networks, or None for plain fp32."""
    if precision == "bf16" or (precision == "auto" and device.type == "cuda"):
        return torch.bfloat16
    return None


def has_penalty(recipe: Recipe) -> bool:
    """Whether the recipe's regularizer adds a penalty to D's loss (its `active` flag: every built-in one but ``none``)."""
    return regularizer_active(recipe.regularizer)  # the block's `active` flag (ganzoo/contracts.py)


def reg_flag(recipe: Recipe, name: str) -> bool:
    """A capability flag of the recipe's regularizer (``ganzoo/contracts.py``): ``uses_logits``,
    ``runs_d``, ``graph_safe``, ``stateful``; False for an inactive one (the trainer never calls it)."""
    return has_penalty(recipe) and bool(block_flag("regularizer", recipe.regularizer, name))


def g_needs_real(recipe: Recipe) -> bool:
    """Whether the recipe's loss reads the real logits in G's loss (relativistic losses): G's update then
    also runs D on a batch of augmented real images, without autograd."""
    return bool(block_flag("loss", recipe.loss, "g_needs_real"))


def eager_d_reason(recipe: Recipe) -> str | None:
    """Why ``train.compile`` leaves D eager (None when it compiles D, or compile is off). With two
    forwards of D before one backward (real, then fake), each forward updates the spectral-norm
    vectors in place and a compiled D fails in backward ("modified by an inplace operation": the
    compiled graph saves the buffer itself; seen with torch 2.14 and 2.15 on the CPU); a penalty
    differentiates through D twice, which compiled graphs do not support."""
    if not recipe.train.compile:
        return None
    if not recipe.train.d_concat:
        return "D stays eager: train.d_concat is off (two D forwards before one backward)"
    if reg_flag(recipe, "runs_d"):
        return (f"D stays eager: regularizer {recipe.regularizer.type} runs D itself (another forward, or a "
                "double backward, before the one backward)")
    return None


@dataclass(frozen=True)
class Plan:
    """What the step, the graph runner, the builders and the strategy do (see the module doc)."""

    amp: torch.dtype | None  # autocast dtype of the networks (train.precision), None: fp32
    micro: int  # images per micro-batch (train.batch_size / train.accumulate; global under torchrun)
    penalty: bool  # the regularizer adds a penalty (its stat is logged)
    reg_logits: bool  # the penalty is handed the D loss's images and logits (the regularizer's uses_logits)
    g_real: bool  # G's loss reads real logits: G's update runs D on augmented reals too (the loss's g_needs_real)
    cuda_graph: bool  # the iteration is captured and replayed (train.cuda_graph, CUDA only)
    compile_g: bool  # G's forward compiled (train.compile)
    compile_d: bool  # D's forward compiled too (train.compile, when D runs once per backward)
    eager_d: str | None  # why train.compile leaves D eager, if it does
    parallel: bool  # launched by torchrun: DDP wrappers (even with one process)
    world_size: int  # processes sharing the global batch
    sync_batchnorm: bool  # G's batch norms synchronised over the processes
    check_every: int  # steps between NaN/inf checks of the logged scalars (CPU: every step)

    @classmethod
    def resolve(cls, recipe: Recipe, device: torch.device, world_size: int = 1, parallel: bool = False,
                source: str = "recipe") -> "Plan":
        """The plan, or a :class:`GanzooError` naming ``source`` and the conflicting options."""
        tc = recipe.train
        _check(recipe, device, world_size, parallel, source)
        graphed = tc.cuda_graph and device.type == "cuda"
        reason = eager_d_reason(recipe)
        return cls(
            amp=autocast_dtype(tc.precision, device), micro=tc.batch_size // tc.accumulate,
            penalty=has_penalty(recipe), reg_logits=reg_flag(recipe, "uses_logits"), g_real=g_needs_real(recipe),
            cuda_graph=graphed, compile_g=tc.compile,
            compile_d=tc.compile and reason is None, eager_d=reason, parallel=parallel,
            world_size=world_size, sync_batchnorm=tc.sync_batchnorm and parallel and world_size > 1,
            check_every=1 if device.type == "cpu" else tc.log_every,
        )


def _check(recipe: Recipe, device: torch.device, world: int, parallel: bool, source: str) -> None:
    tc = recipe.train
    if parallel and tc.batch_size % (world * tc.accumulate):
        raise GanzooError(
            f"{source}: train.batch_size: {tc.batch_size} (the global batch) must be divisible by the number of "
            f"processes x train.accumulate = {world} x {tc.accumulate} = {world * tc.accumulate}"
        )
    if tc.cuda_graph and device.type == "cuda" and parallel:
        raise GanzooError(f"{source}: train.cuda_graph: not supported with several processes (torchrun, DDP); "
                          "set train.cuda_graph=false")
    if tc.cuda_graph and has_penalty(recipe) and not reg_flag(recipe, "graph_safe"):
        raise GanzooError(f"{source}: train.cuda_graph: cannot be combined with regularizer {recipe.regularizer.type} "
                          "(not graph_safe: its penalty's double backward or host reads are not captured)")
    if parallel and world > 1 and reg_flag(recipe, "stateful"):
        raise GanzooError(f"{source}: regularizer: {recipe.regularizer.type} keeps state of its own (e.g. moving "
                          f"averages of D's outputs) that {world} processes would each update apart; "
                          "train it in one process")
