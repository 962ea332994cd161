"""One training iteration, as an object: what :func:`ganzoo.training.train` calls once per G step,
and what ``benchmarks/train_step.py`` times (the same code, built by the same function).

:func:`build_train_step` builds G, D, the EMA copy, the loss, the regularizer and both optimisers
from a recipe, applying the recipe's speed options (``train.precision``, ``train.channels_last``,
``train.fused_optim``, ``train.compile``, ``train.tf32``, ``train.ema.foreach``); the loop and the
benchmark both call it. :class:`TrainStep` ``(step)`` then runs one iteration:

1. **D**, ``d_steps`` times: for each of ``accumulate`` micro-batches, real images and labels from
   the data order, fakes from fresh noise with the same labels (no grad through G),
   ``loss.d_loss(D(real), D(fake)) + penalty``, divided by ``accumulate``, backward; one D step.
2. **G**, once: for each micro-batch, fresh noise and uniform labels, ``loss.g_loss(D(G(z, y), y))``
   divided by ``accumulate``, backward (D frozen); one G step.
3. **EMA** of G's weights (a plain copy up to ``ema.start``).

It returns the step's scalars (``STAT_NAMES``) as one small device tensor and never reads anything
back to the host, so a CUDA step is queued without waiting for the GPU.
"""
from __future__ import annotations

import contextlib
import os
from typing import Any

import torch
from torch import nn

from ..recipe import Recipe
from ..registry import LOSS, REGULARIZER
from .distributed import Latents, no_sync
from .ema import ema_decay, make_ema, update_ema

STAT_NAMES = ("loss/d", "logits/real", "logits/fake", "loss/reg", "loss/g")


def configure_backends(recipe: Recipe, device: torch.device) -> None:
    """Global CUDA switches the recipe asks for: TF32 for fp32 matmuls/convs (``train.tf32``) and
    tuned conv kernels (``cudnn.benchmark``), or deterministic kernels (``train.deterministic``).
    Nothing on the CPU."""
    if device.type == "cuda":
        tf32 = bool(recipe.train.tf32)
        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.backends.cudnn.allow_tf32 = tf32
        det = bool(recipe.train.deterministic)
        torch.backends.cudnn.benchmark = not det
        torch.backends.cudnn.deterministic = det
        if det:
            # cuBLAS reads this when its handle is made (lazily, at the first matmul)
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(det, warn_only=True)


class TrainStep:
    """One iteration (``d_steps`` D updates, one G update, EMA) of a recipe; see the module doc."""

    def __init__(
        self,
        recipe: Recipe,
        G: nn.Module,
        D: nn.Module,
        G_ema: nn.Module | None,
        g_opt: torch.optim.Optimizer,
        d_opt: torch.optim.Optimizer,
        data: Any,
        device: torch.device,
        amp: torch.dtype | None,
    ) -> None:
        tc = recipe.train
        self.recipe, self.tc = recipe, tc
        self.G, self.D, self.G_ema = G, D, G_ema
        self.g_opt, self.d_opt = g_opt, d_opt
        self.data = data
        self.device = device
        self.amp = amp
        self.loss = LOSS.build(recipe.loss)
        self.reg = REGULARIZER.build(recipe.regularizer)
        self.use_reg = recipe.regularizer.type != "none"
        self.z_dim = int(G.z_dim)
        self.nc = recipe.num_classes
        self.micro = tc.batch_size // tc.accumulate
        self.zero = torch.zeros((), device=device)
        # data-parallel (ganzoo/training/distributed.py): DDP wrappers for the forwards whose backward
        # updates G or D, and G's noise as this rank's slice of a global draw; plain run: G, D, torch RNG
        self.G_train, self.D_train = G, D
        self.latents = Latents(device)

    # ------------------------------------------------------------------ pieces
    def autocast(self):
        if self.amp is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp)

    def sample_latents(self, n: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        z = self.latents.randn(n, self.z_dim)
        y = self.latents.randint(self.nc, n) if self.nc else None
        return z, y

    def d_backward(self) -> torch.Tensor:
        """Gradients of one D update (``accumulate`` micro-batches) in ``D``'s ``.grad``; returns
        the summed [d_loss, mean real logit, mean fake logit, penalty] over the micro-batches."""
        tc, G, D = self.tc, self.G, self.D
        G.requires_grad_(False)
        D.requires_grad_(True)
        self.d_opt.zero_grad(set_to_none=True)
        d_stats = torch.zeros(4, device=self.device)
        for i in range(tc.accumulate):
            real, y = self.data.next(self.micro)
            y = y if self.nc else None  # fakes get the real batch's labels (see regularizers)
            z = self.latents.randn(self.micro, self.z_dim)
            with torch.no_grad(), self.autocast():
                fake = G(z, y)
            with self.autocast(), no_sync(self.D_train, i < tc.accumulate - 1):
                real_logits = self.D_train(real, y)
                fake_logits = self.D_train(fake, y)
            d_loss = self.loss.d_loss(real_logits.float(), fake_logits.float())
            penalty = self.reg.penalty(D, real, fake.float(), y).float() if self.use_reg else self.zero
            ((d_loss + penalty) / tc.accumulate).backward()
            d_stats += torch.stack([
                d_loss.detach(), real_logits.detach().float().mean(),
                fake_logits.detach().float().mean(), penalty.detach(),
            ])
        return d_stats

    def g_backward(self) -> torch.Tensor:
        """Gradients of one G update in ``G``'s ``.grad`` (D frozen); returns the summed G loss."""
        tc, G, D = self.tc, self.G, self.D
        G.requires_grad_(True)
        D.requires_grad_(False)
        self.g_opt.zero_grad(set_to_none=True)
        g_stat = torch.zeros((), device=self.device)
        for i in range(tc.accumulate):
            z, y_fake = self.sample_latents(self.micro)
            with self.autocast(), no_sync(self.G_train, i < tc.accumulate - 1):
                fake_logits = D(self.G_train(z, y_fake), y_fake)
            g_loss = self.loss.g_loss(fake_logits.float())
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
    def __call__(self, step: int) -> torch.Tensor:
        """Run G step number ``step + 1`` (``step`` = G steps done before). Returns the scalars of
        :data:`STAT_NAMES` (means over D steps and micro-batches) as a [5] device tensor."""
        tc = self.tc
        d_stats = torch.zeros(4, device=self.device)
        for _ in range(tc.d_steps):
            d_stats += self.d_backward()
            self.d_opt.step()
        g_stat = self.g_backward()
        self.g_opt.step()
        self.ema(step + 1)
        return torch.cat([d_stats / (tc.d_steps * tc.accumulate), (g_stat / tc.accumulate)[None]])


def build_train_step(recipe: Recipe, data: Any, device: torch.device) -> TrainStep:
    """G, D (channels_last if asked), the EMA copy, both optimisers (fused on CUDA if asked) and the
    step, from ``recipe``; seeds torch etc. with ``recipe.seed`` first, so initial weights depend on
    the recipe only. ``train.compile`` compiles G's forward in place (``nn.Module.compile``:
    state-dict keys unchanged; the EMA copy, used for samples and evaluation, stays eager). D stays
    eager: the D update runs D twice (real, fake) before one backward, each forward updating the
    spectral-norm vectors in place, and a compiled D then fails in backward ("modified by an inplace
    operation": the compiled graph keeps the buffer itself for its backward; seen with torch 2.15 on
    the CPU), and a regularizer's penalty differentiates through D twice, which compiled graphs do
    not support."""
    from .loop import autocast_dtype, build_discriminator, build_generator, make_optimizer, seed_everything

    tc = recipe.train
    configure_backends(recipe, device)
    seed_everything(recipe.seed)  # network init does not depend on how the dataset was made
    G = build_generator(recipe).to(device)
    D = build_discriminator(recipe).to(device)
    if tc.channels_last:
        G = G.to(memory_format=torch.channels_last)
        D = D.to(memory_format=torch.channels_last)
    G.train()
    D.train()
    G_ema = make_ema(G) if tc.ema.enabled else None
    g_opt = make_optimizer(G.parameters(), tc.g_optim, device, fused=tc.fused_optim)
    d_opt = make_optimizer(D.parameters(), tc.d_optim, device, fused=tc.fused_optim)
    if tc.compile:
        G.compile()
    return TrainStep(recipe, G, D, G_ema, g_opt, d_opt, data, device, autocast_dtype(tc.precision, device))
