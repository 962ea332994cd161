"""One training iteration, as an object: what :func:`ganzoo.training.train` calls once per G step,
and what ``benchmarks/train_step.py`` times (the same code, built by the same function).

:func:`build_train_step` builds G, D, the EMA copy, the loss, the regularizer and both optimisers
from a recipe, applying the recipe's speed options (``train.precision``, ``train.channels_last``,
``train.fused_optim``, ``train.compile``, ``train.tf32``, ``train.ema.foreach``); the loop and the
benchmark both call it. :class:`TrainStep` ``(step)`` then runs one iteration:

1. **D**, ``d_steps`` times: for each of ``accumulate`` micro-batches, real images and labels from
   the data order, fakes from fresh noise with the same labels (no grad through G),
   ``loss.d_loss(D(aug(real)), D(aug(fake))) + penalty``, divided by ``accumulate``, backward; one D
   step (``train.d_concat``: D runs once over ``aug(cat(real, fake))``).
2. **G**, once: for each micro-batch, fresh noise and uniform labels, ``loss.g_loss(D(aug(G(z, y)), y))``
   divided by ``accumulate``, backward (D frozen); one G step.
3. **EMA** of G's weights (a plain copy up to ``ema.start``).

``aug`` is the recipe's ``augment`` chain (DiffAugment, ``ganzoo/augment/``; identity when empty):
fresh random parameters per image on every call, so real and fake images get independent draws.

It returns the step's scalars (``STAT_NAMES``) as one small device tensor and never reads anything
back to the host, so a CUDA step is queued without waiting for the GPU.

``train.cuda_graph`` (CUDA only): steps 1 and 2 are captured once as a ``torch.cuda.CUDAGraph`` and
replayed, which removes the host's launch overhead (thousands of small kernels per iteration). The
graph body is the eager code (:meth:`TrainStep.updates`) reading static buffers; before each replay
the inputs are drawn exactly as the eager step draws them (data order, then noise, per micro-batch;
then G's noise and labels) and copied in. The first ``GRAPH_WARMUP`` calls run eagerly on a side
stream; :meth:`TrainStep.invalidate_graph` (after reloading state or changing a learning rate)
starts over. The EMA stays eager (its decay changes every step).
"""
from __future__ import annotations

import contextlib
import os
from typing import Any, Callable

import torch
from torch import nn

from ..errors import GanzooError
from ..recipe import Recipe
from ..augment._common import AugmentChain
from ..registry import LOSS, REGULARIZER
from .distributed import Latents, no_sync
from .ema import ema_decay, make_ema, update_ema

STAT_NAMES = ("loss/d", "logits/real", "logits/fake", "loss/reg", "loss/g")
GRAPH_WARMUP = 2  # eager iterations (on a side stream: cudnn autotuning, lazy state) before a capture

DInputs = tuple  # (real images, labels or None, noise) of one D micro-batch
GInputs = tuple  # (noise, labels or None) of one G micro-batch


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
        self.aug = AugmentChain(recipe.augment).to(device)  # every image D sees (identity when empty)
        self.z_dim = int(G.z_dim)
        self.nc = recipe.num_classes
        self.micro = tc.batch_size // tc.accumulate
        self.zero = torch.zeros((), device=device)
        # data-parallel (ganzoo/training/distributed.py): DDP wrappers for the forwards whose backward
        # updates G or D, and G's noise as this rank's slice of a global draw; plain run: G, D, torch RNG
        self.G_train, self.D_train = G, D
        self.latents = Latents(device)
        # train.cuda_graph: the iteration (without the EMA) replayed as one CUDA graph; CUDA only
        self.graphed = tc.cuda_graph and device.type == "cuda"
        self._static_out: torch.Tensor | None = None
        self._static_flat: list[torch.Tensor] = []
        self._side: torch.cuda.Stream | None = None
        self.invalidate_graph()

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
        """One G micro-batch's inputs, drawn now: noise and uniform labels."""
        return self.sample_latents(self.micro)

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
                if tc.d_concat:  # one forward over both halves (train.d_concat)
                    labels = None if y is None else torch.cat([y, y])
                    both = self.D_train(self.aug(torch.cat([real, fake.to(real.dtype)])), labels)
                    real_logits, fake_logits = both[: len(real)], both[len(real):]
                else:
                    real_logits = self.D_train(self.aug(real), y)
                    fake_logits = self.D_train(self.aug(fake), y)
            d_loss = self.loss.d_loss(real_logits.float(), fake_logits.float())
            penalty = self.reg.penalty(D, real, fake.float(), y).float() if self.use_reg else self.zero
            ((d_loss + penalty) / tc.accumulate).backward()
            d_stats += torch.stack([
                d_loss.detach(), real_logits.detach().float().mean(),
                fake_logits.detach().float().mean(), penalty.detach(),
            ])
        return d_stats

    def g_backward(self, inputs: Callable[[int], GInputs] | None = None) -> torch.Tensor:
        """Gradients of one G update in ``G``'s ``.grad`` (D frozen); returns the summed G loss.
        ``inputs(i)`` gives micro-batch ``i``'s ``(z, y)`` (default: drawn, :meth:`draw_g_inputs`)."""
        tc, G, D = self.tc, self.G, self.D
        inputs = inputs or (lambda i: self.draw_g_inputs())
        G.requires_grad_(True)
        D.requires_grad_(False)
        self.g_opt.zero_grad(set_to_none=True)
        g_stat = torch.zeros((), device=self.device)
        for i in range(tc.accumulate):
            z, y_fake = inputs(i)
            with self.autocast(), no_sync(self.G_train, i < tc.accumulate - 1):
                fake_logits = D(self.aug(self.G_train(z, y_fake)), y_fake)
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
        if self.graphed:
            stats = self._graph_updates()
        else:
            stats = self.updates()
        self.ema(step + 1)
        return stats

    # ------------------------------------------------------------------ CUDA graph (train.cuda_graph)
    def invalidate_graph(self) -> None:
        """Forget the captured iteration (it bakes in the learning rates and the optimisers' state
        tensors): call after any ``load_state_dict`` of a network or optimiser and any change of a
        learning rate. The next calls warm up eagerly again, then capture anew."""
        self._graph = None
        self._static_out = None
        self._static_flat = []
        self._warmup_left = GRAPH_WARMUP

    def _fill_inputs(self) -> tuple[list[list[DInputs]], list[GInputs]]:
        """Every input of one iteration, drawn in the eager step's order (per D update and
        micro-batch: the data, then the noise; then G's noise and labels)."""
        tc = self.tc
        d = [[self.draw_d_inputs() for _ in range(tc.accumulate)] for _ in range(tc.d_steps)]
        g = [self.draw_g_inputs() for _ in range(tc.accumulate)]
        return d, g

    def _graph_updates(self) -> torch.Tensor:
        """:meth:`updates` through a CUDA graph: ``GRAPH_WARMUP`` eager iterations on a side stream
        (real iterations: they count), then one capture; every call from then on draws its inputs
        eagerly (same draws, same order), copies them into the graph's static buffers and replays."""
        if self.G_train is not self.G or self.D_train is not self.D:
            raise GanzooError("train.cuda_graph: not supported with several processes (torchrun, DDP); "
                              "set train.cuda_graph=false")
        current = torch.cuda.current_stream(self.device)
        if self._warmup_left > 0:
            self._warmup_left -= 1
            if self._side is None:
                self._side = torch.cuda.Stream(self.device)
            side = self._side
            side.wait_stream(current)
            with torch.cuda.stream(side):
                stats = self.updates()
            current.wait_stream(side)
            stats.record_stream(current)
            return stats
        d_in, g_in = self._fill_inputs()
        if self._graph is None:
            self._capture(d_in, g_in)
        else:
            for buf, t in zip(self._static_flat, _flat(d_in, g_in)):
                buf.copy_(t)
        self._graph.replay()
        return self._static_out.clone()  # the loop keeps each step's row

    def _capture(self, d_in, g_in) -> None:
        """Capture :meth:`updates` reading static input buffers, which start as copies of this
        iteration's inputs (clone keeps channels_last); nothing runs until the replay."""
        d_static = [[tuple(None if t is None else t.clone() for t in mb) for mb in upd] for upd in d_in]
        g_static = [tuple(None if t is None else t.clone() for t in mb) for mb in g_in]
        self._static_flat = list(_flat(d_static, g_static))
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self._static_out = self.updates(lambda k, i: d_static[k][i], lambda i: g_static[i])
        self._graph = graph


def _flat(d_in, g_in):
    """The tensors of one iteration's inputs (labels of an unconditional model are None: skipped)."""
    for upd in d_in:
        for mb in upd:
            yield from (t for t in mb if t is not None)
    for mb in g_in:
        yield from (t for t in mb if t is not None)


def compiles_d(recipe: Recipe) -> bool:
    """Whether ``train.compile`` compiles D too: only when D runs once per backward
    (``train.d_concat``) and there is no regularizer. With two forwards of D before one backward (real,
    then fake), each forward updates the spectral-norm vectors in place and a compiled D fails in
    backward ("modified by an inplace operation": the compiled graph saves the buffer itself; seen with
    torch 2.14 and 2.15 on the CPU); a penalty differentiates through D twice, which compiled graphs do
    not support."""
    tc = recipe.train
    return tc.compile and tc.d_concat and recipe.regularizer.type == "none"


def build_train_step(recipe: Recipe, data: Any, device: torch.device) -> TrainStep:
    """G, D (channels_last if asked), the EMA copy, both optimisers (fused on CUDA if asked) and the
    step, from ``recipe``; seeds torch etc. with ``recipe.seed`` first, so initial weights depend on
    the recipe only. ``train.compile`` compiles G's forward in place (``nn.Module.compile``:
    state-dict keys unchanged; the EMA copy, used for samples and evaluation, stays eager), and D's
    when :func:`compiles_d` says so. Under ``train.cuda_graph`` the compiled kernels are what the graph
    captures (every compilation happens in the eager warm-up iterations)."""
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
    graphed = tc.cuda_graph and device.type == "cuda"  # a captured optimiser step needs capturable Adam
    g_opt = make_optimizer(G.parameters(), tc.g_optim, device, fused=tc.fused_optim, capturable=graphed)
    d_opt = make_optimizer(D.parameters(), tc.d_optim, device, fused=tc.fused_optim, capturable=graphed)
    if tc.compile:
        G.compile()
        if compiles_d(recipe):
            D.compile()
    return TrainStep(recipe, G, D, G_ema, g_opt, d_opt, data, device, autocast_dtype(tc.precision, device))
