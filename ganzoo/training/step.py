"""One training iteration, as an object: what :func:`ganzoo.training.train` calls once per G step,
and what ``benchmarks/train_step.py`` times (the same code, built by the same function).

:class:`TrainStep` is built from what :mod:`.build` made (networks, optimisers, data), the run's
:class:`~ganzoo.training.plan.Plan` (autocast, micro-batch size, penalty, CUDA graph) and a
parallelism strategy (:class:`~ganzoo.training.distributed.Parallel`: DDP wrappers and the noise
source under torchrun, the networks and the global RNG otherwise). ``step(n)`` then runs one iteration:

1. **D**, ``d_steps`` times: for each of ``accumulate`` micro-batches, real images and labels from
   the data order, fakes from fresh noise with the same labels (no grad through G),
   ``loss.d_loss(D(aug(real)), D(aug(fake))) + penalty``, divided by ``accumulate``, backward; one D
   step (``train.d_concat``: D runs once over ``aug(cat(real, fake))``). The penalty is
   ``regularizer.penalty(D, real, fake, y)``, or for a regularizer that ``uses_logits`` (LeCam, bCR)
   ``penalty(D, aug(real), aug(fake), y, real_logits=, fake_logits=)`` with the loss's own logits,
   under autocast (no second forward for them).
2. **G**, once: for each micro-batch, fresh noise and uniform labels,
   ``loss.g_loss(real_logits, D(aug(G(z, y)), y))`` divided by ``accumulate``, backward (D frozen);
   one G step. ``real_logits`` is None unless the loss sets ``g_needs_real`` (relativistic losses):
   then it is ``D(aug(real), y_real)`` on a fresh real micro-batch from the data order, computed
   under ``no_grad`` (constants for G: its gradient flows through the fake logits alone, and no
   backward runs through D's real half), with its own augmentation draws, as D's update sees reals.
3. **EMA** of G's weights (a plain copy up to ``ema.start``).

``aug`` is the recipe's ``augment`` chain (DiffAugment, ``ganzoo/augment/``; identity when empty):
fresh random parameters per image on every call, so real and fake images get independent draws.

It returns the step's scalars (``STAT_NAMES``) as one small device tensor and never reads anything
back to the host, so a CUDA step is queued without waiting for the GPU. Under ``train.cuda_graph``
steps 1 and 2 run through :class:`~ganzoo.training.graph.CudaGraphRunner` (captured once, replayed).
:func:`build_train_step` builds all of it from a recipe and a data sampler (one process).
"""
from __future__ import annotations

import contextlib
from typing import Any, Callable

import torch
from torch import nn

from ..augment._common import AugmentChain
from ..recipe import Recipe
from ..registry import LOSS
from .build import Networks, build_networks, configure_backends
from .distributed import Parallel, no_sync, single
from .ema import ema_decay, update_ema
from .graph import GRAPH_WARMUP, CudaGraphRunner
from .plan import Plan

STAT_NAMES = ("loss/d", "logits/real", "logits/fake", "loss/reg", "loss/g")

DInputs = tuple  # (real images, labels or None, noise) of one D micro-batch
GInputs = tuple  # (noise, labels or None, real images or None, their labels or None) of one G micro-batch


class TrainStep:
    """One iteration (``d_steps`` D updates, one G update, EMA) of a recipe; see the module doc."""

    def __init__(self, recipe: Recipe, nets: Networks, data: Any, plan: Plan, parallel: Parallel | None = None) -> None:
        tc = recipe.train
        self.recipe, self.tc, self.plan = recipe, tc, plan
        self.G, self.D, self.G_ema = nets.G, nets.D, nets.G_ema
        self.g_opt, self.d_opt = nets.g_opt, nets.d_opt
        self.data = data
        self.device = next(nets.G.parameters()).device
        self.amp = plan.amp
        self.loss = LOSS.build(recipe.loss)
        self.reg = nets.regularizer  # built with the networks (a stateful one: on the device, checkpointed)
        self.use_reg = plan.penalty
        self.aug = AugmentChain(recipe.augment).to(self.device)  # every image D sees (identity when empty)
        self.z_dim = int(nets.G.z_dim)
        self.nc = recipe.num_classes
        self.micro = plan.micro
        self.zero = torch.zeros((), device=self.device)
        # the strategy (ganzoo/training/distributed.py): DDP wrappers for the forwards whose backward
        # updates G or D, and G's noise as this rank's slice of a global draw; one process: G, D, torch RNG
        parallel = parallel or single(nets.G, nets.D, self.device)
        self.G_train, self.D_train, self.latents = parallel.G_train, parallel.D_train, parallel.latents
        # train.cuda_graph: the iteration (without the EMA) replayed as one CUDA graph; CUDA only
        self.graphed = plan.cuda_graph
        self.graph = CudaGraphRunner(self) if self.graphed else None

    # ------------------------------------------------------------------ pieces
    def autocast(self):
        if self.amp is None:
            return contextlib.nullcontext()
        # CUDA graphs: no cast cache (its tensors would outlive the capture); the same values
        return torch.autocast(self.device.type, dtype=self.amp, cache_enabled=not self.graphed)

    def sample_latents(self, n: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        z = self.latents.randn(n, self.z_dim)
        y = self.latents.randint(self.nc, n) if self.nc else None
        return z, y

    def draw_d_inputs(self) -> DInputs:
        """One D micro-batch's inputs, drawn now: real images and labels from the data order, then
        the fakes' noise (the fakes get the real batch's labels, see regularizers)."""
        real, y = self.data.next(self.micro)
        z = self.latents.randn(self.micro, self.z_dim)
        return real, (y if self.nc else None), z

    def draw_g_inputs(self) -> GInputs:
        """One G micro-batch's inputs, drawn now: noise and uniform labels; then, for a loss whose G
        loss reads real logits (``plan.g_real``), real images and labels from the data order."""
        z, y = self.sample_latents(self.micro)
        if not self.plan.g_real:
            return z, y, None, None
        real, y_real = self.data.next(self.micro)
        return z, y, real, (y_real if self.nc else None)

    def d_forward(self, real: torch.Tensor, fake: torch.Tensor, y: torch.Tensor | None) -> tuple:
        """D on one micro-batch (call under autocast): ``(aug(real), aug(fake), real logits, fake
        logits)``; one forward over both halves with ``train.d_concat``."""
        if self.tc.d_concat:
            labels = None if y is None else torch.cat([y, y])
            seen = self.aug(torch.cat([real, fake.to(real.dtype)]))
            both = self.D_train(seen, labels)
            n = len(real)
            return seen[:n], seen[n:], both[:n], both[n:]
        real_seen = self.aug(real)
        real_logits = self.D_train(real_seen, y)
        fake_seen = self.aug(fake)
        return real_seen, fake_seen, real_logits, self.D_train(fake_seen, y)

    def d_penalty(self, real: torch.Tensor, fake: torch.Tensor, y: torch.Tensor | None, seen: tuple) -> torch.Tensor:
        """The regularizer's penalty for one D micro-batch (0 without one); ``seen`` is :meth:`d_forward`'s."""
        if not self.use_reg:
            return self.zero
        if self.plan.reg_logits:  # the images and logits of D's loss: no second forward for them
            real_seen, fake_seen, real_logits, fake_logits = seen
            with self.autocast():
                return self.reg.penalty(self.D, real_seen, fake_seen, y, real_logits=real_logits.float(),
                                        fake_logits=fake_logits.float()).float()
        return self.reg.penalty(self.D, real, fake.float(), y).float()

    def g_real_logits(self, real: torch.Tensor | None, y: torch.Tensor | None) -> torch.Tensor | None:
        """D's logits on a G micro-batch's augmented reals, without autograd (None when not drawn)."""
        if real is None:
            return None
        with torch.no_grad(), self.autocast():
            return self.D(self.aug(real), y).float()

    def d_backward(self, inputs: Callable[[int], DInputs] | None = None) -> torch.Tensor:
        """Gradients of one D update (``accumulate`` micro-batches) in ``D``'s ``.grad``; returns
        the summed [d_loss, mean real logit, mean fake logit, penalty] over the micro-batches.
        ``inputs(i)`` gives micro-batch ``i``'s ``(real, y, z)`` (default: drawn when needed, as
        :meth:`draw_d_inputs`; a CUDA graph reads them from its static buffers)."""
        tc, G, D = self.tc, self.G, self.D
        inputs = inputs or (lambda i: self.draw_d_inputs())
        G.requires_grad_(False)
        D.requires_grad_(True)
        self.d_opt.zero_grad(set_to_none=True)
        d_stats = torch.zeros(4, device=self.device)
        for i in range(tc.accumulate):
            real, y, z = inputs(i)
            with torch.no_grad(), self.autocast():
                fake = G(z, y)
            with self.autocast(), no_sync(self.D_train, i < tc.accumulate - 1):
                seen = self.d_forward(real, fake, y)  # (aug(real), aug(fake), real logits, fake logits)
            real_logits, fake_logits = seen[2], seen[3]
            d_loss = self.loss.d_loss(real_logits.float(), fake_logits.float())
            penalty = self.d_penalty(real, fake, y, seen)
            ((d_loss + penalty) / tc.accumulate).backward()
            d_stats += torch.stack([
                d_loss.detach(), real_logits.detach().float().mean(),
                fake_logits.detach().float().mean(), penalty.detach(),
            ])
        return d_stats

    def g_backward(self, inputs: Callable[[int], GInputs] | None = None) -> torch.Tensor:
        """Gradients of one G update in ``G``'s ``.grad`` (D frozen); returns the summed G loss.
        ``inputs(i)`` gives micro-batch ``i``'s ``(z, y, real, y_real)`` (default: drawn,
        :meth:`draw_g_inputs`; ``real`` is None unless the loss reads real logits)."""
        tc, G, D = self.tc, self.G, self.D
        inputs = inputs or (lambda i: self.draw_g_inputs())
        G.requires_grad_(True)
        D.requires_grad_(False)
        self.g_opt.zero_grad(set_to_none=True)
        g_stat = torch.zeros((), device=self.device)
        for i in range(tc.accumulate):
            z, y_fake, real, y_real = inputs(i)
            real_logits = self.g_real_logits(real, y_real)  # None unless the loss sets g_needs_real
            with self.autocast(), no_sync(self.G_train, i < tc.accumulate - 1):
                fake_logits = D(self.aug(self.G_train(z, y_fake)), y_fake)
            g_loss = self.loss.g_loss(real_logits, fake_logits.float())
            (g_loss / tc.accumulate).backward()
            g_stat += g_loss.detach()
        return g_stat

    def ema(self, step: int) -> None:
        """EMA update after G step number ``step`` (1-based); a plain copy up to ``ema.start``, then
        the decay of :func:`ema_decay` (ramped up unless ``ema.rampup`` is false)."""
        if self.G_ema is not None:
            ec = self.tc.ema
            decay = ema_decay(ec.decay, step - ec.start, ec.rampup)
            update_ema(self.G_ema, self.G, decay, foreach=ec.foreach)

    # ------------------------------------------------------------------ the iteration
    def updates(
        self,
        d_inputs: Callable[[int, int], DInputs] | None = None,
        g_inputs: Callable[[int], GInputs] | None = None,
    ) -> torch.Tensor:
        """The iteration without the EMA: ``d_steps`` D updates, then one G update; returns the
        [5] stats. ``d_inputs(k, i)``/``g_inputs(i)``: micro-batch inputs of D update ``k`` and of
        the G update (default: drawn when needed). The eager step and the CUDA graph's body."""
        tc = self.tc
        d_stats = torch.zeros(4, device=self.device)
        for k in range(tc.d_steps):
            d_stats += self.d_backward(None if d_inputs is None else (lambda i, k=k: d_inputs(k, i)))
            self.d_opt.step()
        g_stat = self.g_backward(g_inputs)
        self.g_opt.step()
        return torch.cat([d_stats / (tc.d_steps * tc.accumulate), (g_stat / tc.accumulate)[None]])

    def __call__(self, step: int) -> torch.Tensor:
        """Run G step number ``step + 1`` (``step`` = G steps done before). Returns the scalars of
        :data:`STAT_NAMES` (means over D steps and micro-batches) as a [5] device tensor."""
        stats = self.graph() if self.graph is not None else self.updates()
        self.ema(step + 1)
        return stats

    # ------------------------------------------------------------------ CUDA graph (train.cuda_graph)
    def invalidate_graph(self) -> None:
        """Forget the captured iteration (it bakes in the learning rates and the optimisers' state
        tensors): call after any ``load_state_dict`` of a network or optimiser and any change of a
        learning rate. The next calls warm up eagerly again, then capture anew. Eager: nothing to do."""
        if self.graph is not None:
            self.graph.invalidate()


def build_train_step(recipe: Recipe, data: Any, device: torch.device) -> TrainStep:
    """The step of ``recipe`` in one process, on ``data`` (a :class:`~ganzoo.training.data.DataSampler`):
    the device's switches, then G, D, the EMA copy and both optimisers
    (:func:`~ganzoo.training.build.build_networks`, seeded with ``recipe.seed`` first, so initial
    weights depend on the recipe only) and the step, as the training loop builds them."""
    plan = Plan.resolve(recipe, device)
    configure_backends(recipe, device)
    return TrainStep(recipe, build_networks(recipe, plan, device), data, plan)


__all__ = ["GRAPH_WARMUP", "STAT_NAMES", "TrainStep", "build_train_step"]
