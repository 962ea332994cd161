"""Data-parallel training (PyTorch DDP) when ganzoo is launched by ``torchrun``.

``torchrun --nproc_per_node=N -m ganzoo run RECIPE`` runs the ordinary training loop in N processes;
this module is everything that differs (see ``docs/distributed.md``):

* :func:`setup` joins the process group that torchrun's environment describes (``nccl`` on CUDA,
  ``gloo`` on the CPU; collective timeout ``$GANZOO_DIST_TIMEOUT_MINUTES``, default 30), picks this
  rank's device (``cuda:LOCAL_RANK``); the run's plan has checked that the global batch splits evenly. Without
  torchrun it returns an inactive :class:`Dist` whose helpers do exactly what a plain run did.
* **Data**: every rank keeps the same global data order (:class:`~ganzoo.training.data.DataSampler`,
  seeded from the recipe) and takes its contiguous slice of each global micro-batch, so the ranks'
  slices together are exactly the batch a single process would see, the order is reshuffled each
  epoch, and the saved data state is global (resume works with another number of processes).
* **Noise** (:class:`Latents`): G's latents and labels are drawn for the whole global micro-batch from
  one stream identical on every rank (the stream a single process draws from), and each rank keeps
  its slice. Everything else random (a regularizer's interpolation, dropout) uses the ordinary
  global RNGs, which are seeded per rank from the run seed (:func:`rank_seed`).
* **Gradients**: G and D are wrapped in ``DistributedDataParallel`` for the forward passes whose
  backward updates them (D on real and fakes, G through a frozen D); gradients are averaged over
  ranks, which with equal slices is the gradient of the global batch mean. Accumulated micro-batches
  run under ``no_sync`` except the last. ``broadcast_buffers=False``: spectral-norm vectors are a
  deterministic function of the (synchronised) weights and start equal, so they stay equal;
  :meth:`Dist.check_consistent` verifies it at every checkpoint. ``find_unused_parameters=False``.
* **Batch norm**: ``train.sync_batchnorm`` replaces G's batch norms (conditional BN's inner one
  included) by :class:`SyncBatchNorm`: statistics over the global batch, on any backend (gloo and
  NCCL). State-dict keys are unchanged.
* **Files**: rank 0 alone writes the run folder, logs, samples, checkpoints; evaluation runs on rank 0
  while the others wait for its result (:meth:`Dist.on_main`). Logged scalars are averaged over
  ranks, and decisions (divergence, time limit, signals) are taken together.
"""
from __future__ import annotations

import contextlib
import datetime
import inspect
import os
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch
import torch.distributed as tdist
from torch import nn

from ..errors import GanzooError
from .build import seed_everything
from .plan import Plan

TIMEOUT_ENV = "GANZOO_DIST_TIMEOUT_MINUTES"
DEFAULT_TIMEOUT_MINUTES = 30.0
EXIT_DISTRIBUTED = 4


class DistributedError(GanzooError):
    """A collective failed: another process died, hung past the timeout, or failed on its own."""

    exit_code = EXIT_DISTRIBUTED


def launched() -> bool:
    """Whether this process was started by torchrun (or anything setting its environment)."""
    return "WORLD_SIZE" in os.environ and "RANK" in os.environ


def timeout_minutes() -> float:
    raw = os.environ.get(TIMEOUT_ENV, "").strip()
    if not raw:
        return DEFAULT_TIMEOUT_MINUTES
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise GanzooError(f"${TIMEOUT_ENV}: '{raw}' is not a positive number of minutes")
    return value


def rank_seed(seed: int, rank: int, step: int) -> int:
    """Seed of rank ``rank``'s global RNGs from the run seed (and the step a session starts at, so
    a resumed session does not replay the first session's numbers)."""
    return int(np.random.SeedSequence([int(seed), int(rank), int(step)]).generate_state(1, np.uint32)[0])


# ----------------------------------------------------------------------------- the context
@dataclass
class Dist:
    """This process's place in the job. Inactive (rank 0 of 1, no process group) without torchrun."""

    device: torch.device
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    active: bool = False
    ctrl: Any = None  # gloo group for host-side decisions (the default group on the CPU)
    latents: "Latents | None" = field(default=None, repr=False)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def sharded(self) -> bool:
        """More than one process shares the batch."""
        return self.active and self.world_size > 1

    # ---- collectives (no-ops when inactive) ----------------------------------------------
    def barrier(self) -> None:
        if self.active:
            _collective(lambda: tdist.barrier(group=self.ctrl), "barrier")

    def mean(self, t: torch.Tensor) -> torch.Tensor:
        """Average of ``t`` over ranks (NaN anywhere gives NaN everywhere)."""
        if not self.sharded:
            return t
        t = t.detach().clone()
        _collective(lambda: tdist.all_reduce(t), "all_reduce")
        return t / self.world_size

    def agree_max(self, values: list[int]) -> list[int]:
        """Element-wise maximum of small host integers over ranks (through the gloo group)."""
        if not self.sharded:
            return list(values)
        t = torch.tensor(values, dtype=torch.int64)
        _collective(lambda: tdist.all_reduce(t, op=tdist.ReduceOp.MAX, group=self.ctrl), "all_reduce")
        return [int(v) for v in t.tolist()]

    def broadcast(self, value: Any) -> Any:
        """Rank 0's ``value`` (any picklable object) on every rank."""
        if not self.sharded:
            return value
        box = [value]
        _collective(lambda: tdist.broadcast_object_list(box, src=0, group=self.ctrl), "broadcast")
        return box[0]

    def on_main(self, fn: Callable[[], Any], what: str) -> Any:
        """``fn()`` on rank 0; the other ranks wait for its result (or its failure)."""
        if not self.sharded:
            return fn()
        result, error = None, None
        if self.is_main:
            try:
                result = fn()
            except BaseException as exc:  # noqa: BLE001 - reported to the other ranks, then re-raised
                error = exc
        box = self.broadcast((result, None if error is None else f"{type(error).__name__}: {error}"))
        if error is not None:
            raise error
        if box[1] is not None:
            raise DistributedError(f"rank 0 failed during {what} ({box[1]}); stopping")
        return box[0]

    # ---- models --------------------------------------------------------------------------
    def wrap(self, module: nn.Module) -> nn.Module:
        """``module`` in DistributedDataParallel (parameters and buffers broadcast from rank 0 once,
        gradients averaged over ranks in every backward), or ``module`` itself when not sharded."""
        if not self.active:
            return module
        from torch.nn.parallel import DistributedDataParallel as DDP

        ids = [self.device.index] if self.device.type == "cuda" else None
        # buffers are synchronised once at construction, not before every forward (module doc)
        if "forward_sync_buffers" in inspect.signature(DDP.__init__).parameters:
            sync: dict[str, Any] = {"forward_sync_buffers": False}
        else:  # older torch: broadcast_buffers=False (it also skips the initial buffer broadcast,
            sync = {"broadcast_buffers": False}  # which changes nothing: every rank starts equal)
        return DDP(module, device_ids=ids, find_unused_parameters=False, **sync)

    def check_consistent(self, modules: dict[str, nn.Module]) -> None:
        """Raise if the ranks' weights or spectral-norm vectors differ (BN running statistics may
        legitimately differ without sync BN and are not compared). One all-gather per call."""
        if not self.sharded:
            return
        sums = []
        names = []
        for name, m in modules.items():
            for key, t in m.state_dict().items():
                if "running_" in key or key.endswith("num_batches_tracked"):
                    continue
                names.append(f"{name}.{key}")
                sums.append(t.detach().double().sum())
        mine = torch.stack(sums).to(self.device) if sums else torch.zeros(0, device=self.device)
        lo, hi = mine.clone(), mine.clone()
        _collective(lambda: tdist.all_reduce(lo, op=tdist.ReduceOp.MIN), "all_reduce")
        _collective(lambda: tdist.all_reduce(hi, op=tdist.ReduceOp.MAX), "all_reduce")
        bad = (hi - lo).abs() > 1e-9 * (1 + hi.abs())
        if bool(bad.any()):
            first = names[int(bad.nonzero()[0, 0])]
            raise DistributedError(f"the ranks' copies of the networks differ ({first}); stopping")

    def checkpoint_rng(self, state: dict[str, Any]) -> dict[str, Any]:
        """A checkpoint's RNG states with the shared noise stream as the torch (CPU) or CUDA state, so
        a resumed run, with any number of processes, continues the same latents."""
        if not self.sharded or self.latents is None:
            return state
        gen_state = self.latents.generator.get_state()
        if self.device.type == "cuda":
            return {**state, "cuda": [gen_state]}
        return {**state, "torch": gen_state}


def no_sync(module: nn.Module, skip: bool):
    """``module.no_sync()`` when ``skip`` and ``module`` is DDP, else nothing. DDP decides at forward
    time whether the backward of that forward all-reduces, so the forward alone needs to be inside:
    the backward of an accumulated micro-batch then only adds to ``.grad`` locally, and the last
    micro-batch's backward averages the accumulated sums over ranks."""
    if skip and hasattr(module, "no_sync"):
        return module.no_sync()
    return contextlib.nullcontext()


def is_collective_error(exc: BaseException) -> bool:
    """Whether ``exc`` comes from a failed or timed-out collective (gloo, NCCL, the store)."""
    if isinstance(exc, getattr(tdist, "DistError", ())):
        return True
    text = str(exc)
    return any(w in text for w in ("gloo", "Gloo", "NCCL", "nccl", "Connection closed", "Timed out", "timed out"))


def collective_error(exc: BaseException, what: str) -> DistributedError:
    """A one-line :class:`DistributedError` for a collective that failed in ``what``."""
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return DistributedError(
        f"rank {_env_int('RANK')}: {what} failed ({first}); another process died, failed or hung "
        f"(collective timeout {timeout_minutes():g} min, ${TIMEOUT_ENV}); stopping"
    )


def _collective(fn: Callable[[], Any], what: str) -> Any:
    try:
        return fn()
    except RuntimeError as exc:  # DistBackendError, DistNetworkError, gloo/NCCL timeouts
        raise collective_error(exc, what) from None


def _env_int(name: str, default: int = 0) -> int:
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        raise GanzooError(f"${name}: '{os.environ.get(name)}' is not an integer (set by torchrun)") from None


# ----------------------------------------------------------------------------- setup
def _device_for_rank(device: torch.device, local_rank: int, world: int) -> torch.device:
    if device.type != "cuda":
        return device
    if device.index is not None and device.index != local_rank and world > 1:
        raise GanzooError(
            f"--device {device}: under torchrun each process uses cuda:LOCAL_RANK; pass --device cuda (or auto)"
        )
    index = device.index if device.index is not None else local_rank
    if index >= torch.cuda.device_count():
        raise GanzooError(
            f"rank with LOCAL_RANK {local_rank} needs cuda:{index} but this host has "
            f"{torch.cuda.device_count()} GPU(s); use --nproc_per_node <= the number of GPUs"
        )
    return torch.device("cuda", index)


def world() -> tuple[int, bool]:
    """(number of processes, launched by torchrun) from torchrun's environment, before joining."""
    if not launched():
        return 1, False
    return _env_int("WORLD_SIZE", 1), True


def setup(device: torch.device) -> Dist:
    """Join torchrun's process group (once per process) and return this rank's :class:`Dist`;
    without torchrun an inactive one on ``device``. The batch's split over processes is a rule of
    the run's plan (:class:`~ganzoo.training.plan.Plan`), checked before this is called."""
    if not launched():
        return Dist(device)
    rank, world, local_rank = _env_int("RANK"), _env_int("WORLD_SIZE", 1), _env_int("LOCAL_RANK")
    device = _device_for_rank(device, local_rank, world)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    timeout = datetime.timedelta(minutes=timeout_minutes())
    if not tdist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        kwargs: dict[str, Any] = {"device_id": device} if device.type == "cuda" else {}
        try:
            tdist.init_process_group(backend, timeout=timeout, **kwargs)
        except (RuntimeError, ValueError) as exc:
            raise DistributedError(f"rank {rank}: cannot join the process group ({exc})") from None
    ctrl = None
    if tdist.get_backend() != "gloo":
        global _CTRL_GROUP
        if _CTRL_GROUP is None:
            _CTRL_GROUP = tdist.new_group(backend="gloo", timeout=timeout)
        ctrl = _CTRL_GROUP
    return Dist(device, rank, tdist.get_world_size(), local_rank, True, ctrl)


_CTRL_GROUP = None


def teardown() -> None:
    """Leave the process group (end of ``ganzoo run`` under torchrun)."""
    global _CTRL_GROUP
    if tdist.is_available() and tdist.is_initialized():
        with contextlib.suppress(Exception):
            tdist.destroy_process_group()
    _CTRL_GROUP = None


def is_main_process() -> bool:
    """Rank 0 under torchrun, or any process without it."""
    return not launched() or _env_int("RANK") == 0


# ----------------------------------------------------------------------------- noise
class Latents:
    """G's noise for one global micro-batch at a time; this rank keeps its slice.

    Not sharded: ``torch.randn``/``torch.randint`` on the global RNG, exactly as a plain run.
    Sharded: a dedicated generator, identical on every rank (rank 0's state of the global stream
    when the session started), draws ``n`` values and rank r keeps the r-th of ``world`` equal
    contiguous slices, the slice its data shard has.
    """

    def __init__(self, device: torch.device, rank: int = 0, world: int = 1,
                 generator: torch.Generator | None = None) -> None:
        self.device, self.rank, self.world, self.generator = device, rank, world, generator

    def _slice(self, t: torch.Tensor) -> torch.Tensor:
        return t if self.world == 1 else t.chunk(self.world)[self.rank]

    def randn(self, n: int, dim: int) -> torch.Tensor:
        if self.generator is None:
            return torch.randn(n, dim, device=self.device)
        return self._slice(torch.randn(n, dim, device=self.device, generator=self.generator))

    def randint(self, high: int, n: int) -> torch.Tensor:
        if self.generator is None:
            return torch.randint(0, high, (n,), device=self.device)
        return self._slice(torch.randint(0, high, (n,), device=self.device, generator=self.generator))


def make_latents(d: Dist, seed: int, step: int) -> Latents:
    """The noise source of a session. Sharded: the shared stream starts from rank 0's current global
    state (fresh: after network init; resumed: the checkpoint's), then each rank's global RNGs are
    reseeded with :func:`rank_seed` for everything else random."""
    if not d.sharded:
        d.latents = Latents(d.device)
        return d.latents
    if d.device.type == "cuda":
        state = torch.cuda.get_rng_state(d.device)
    else:
        state = torch.get_rng_state()
    state = d.broadcast(state.cpu())
    gen = torch.Generator(device=d.device)
    gen.set_state(state)
    seed_everything(rank_seed(seed, d.rank, step))
    d.latents = Latents(d.device, d.rank, d.world_size, gen)
    return d.latents


# ----------------------------------------------------------------------------- the strategy
@dataclass
class Parallel:
    """How a :class:`~ganzoo.training.step.TrainStep` runs over processes, given to it at construction:
    the modules whose forward's backward updates G and D (DDP wrappers under torchrun, else G and D
    themselves) and G's noise source (:class:`Latents`)."""

    G_train: nn.Module
    D_train: nn.Module
    latents: Latents


def single(G: nn.Module, D: nn.Module, device: torch.device) -> Parallel:
    """One process: the networks themselves and the global RNG."""
    return Parallel(G, D, Latents(device))


def strategy(d: Dist, plan: Plan, G: nn.Module, D: nn.Module, data: Any, seed: int, step: int) -> Parallel:
    """The strategy of a session, after any checkpoint was loaded (``step``: G steps done). Under
    torchrun: data and noise shards, per-rank seeds, synchronised batch norm in G
    (``train.sync_batchnorm``, with more than one process), DDP wrappers for G and D."""
    if not d.active:
        return single(G, D, d.device)
    data.shard(d.rank, d.world_size)
    if plan.sync_batchnorm:
        convert_sync_batchnorm(G, d.device)
    G_train, D_train = d.wrap(G), d.wrap(D)
    return Parallel(G_train, D_train, make_latents(d, seed, step))


# ----------------------------------------------------------------------------- sync batch norm
class _AllReduceSum(torch.autograd.Function):
    """Sum over ranks; its gradient is the sum over ranks of the incoming gradients (every rank's
    loss depends on the sum)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # noqa: ARG004
        x = x.clone()
        _collective(lambda: tdist.all_reduce(x), "all_reduce (sync batch norm)")
        return x

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # noqa: ARG004
        grad = grad.clone()
        _collective(lambda: tdist.all_reduce(grad), "all_reduce (sync batch norm)")
        return grad


class SyncBatchNorm(nn.modules.batchnorm._BatchNorm):
    """Batch norm whose training statistics are taken over every rank's batch (any backend, CPU
    included): two differentiable all-reduces per call (sum and count, then squared deviations),
    the same two-pass arithmetic as a single process on the whole batch. Eval mode, or a single
    process, is plain batch norm. Same parameters, buffers and state-dict keys as ``BatchNorm2d``."""

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:  # noqa: ARG002
        """``y`` (class labels, as ganzoo norms are called) is ignored, like ganzoo's ``batch`` norm."""
        self._check_input_dim(x)
        if not (self.training and tdist.is_available() and tdist.is_initialized() and tdist.get_world_size() > 1):
            return super().forward(x)
        all_reduce = _AllReduceSum.apply
        c = x.shape[1]
        dims = [0, *range(2, x.dim())]
        shape = [1, c] + [1] * (x.dim() - 2)
        xf = x.float()
        count = torch.full((1,), float(x.numel() // c), device=x.device)
        first = all_reduce(torch.cat([xf.sum(dims), count]))
        n = first[c]
        mean = first[:c] / n
        centered = xf - mean.view(shape)
        var = all_reduce((centered * centered).sum(dims)) / n
        out = centered * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = (1.0 / float(self.num_batches_tracked)) if self.momentum is None else self.momentum
                unbiased = var * (n / (n - 1).clamp_min(1))
                self.running_mean.lerp_(mean.to(self.running_mean.dtype), m)
                self.running_var.lerp_(unbiased.to(self.running_var.dtype), m)
        return out.to(x.dtype)


def _plain_batchnorm_types() -> tuple[type, ...]:
    """Batch norms whose forward is exactly BatchNorm's: torch's, and ganzoo's ``batch`` norm (whose
    ``forward(x, y)`` ignores the labels). Other subclasses may change forward and are left alone."""
    from ..norms.batch import BatchNorm

    return (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, BatchNorm)


def convert_sync_batchnorm(module: nn.Module, device: torch.device) -> int:
    """Replace every plain batch norm inside ``module`` (in place; conditional BN's inner one
    included) by a :class:`SyncBatchNorm` reusing the same parameter and buffer tensors, so
    optimisers, EMA copies and checkpoints are unaffected. Returns how many were replaced."""
    plain = _plain_batchnorm_types()
    count = 0
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if type(child) not in plain:
                continue
            new = SyncBatchNorm(child.num_features, child.eps, child.momentum, child.affine,
                                child.track_running_stats, device=device)
            if child.affine:
                new.weight, new.bias = child.weight, child.bias
            if child.track_running_stats:
                new.running_mean, new.running_var = child.running_mean, child.running_var
                new.num_batches_tracked = child.num_batches_tracked
            new.train(child.training)
            setattr(parent, name, new)
            count += 1
    return count


class NullLog:
    """What ranks other than 0 log to: nothing."""

    def write(self, *args: Any, **kwargs: Any) -> None:
        pass

    def image(self, *args: Any, **kwargs: Any) -> None:
        pass

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


__all__ = [
    "Dist", "DistributedError", "EXIT_DISTRIBUTED", "Latents", "NullLog", "SyncBatchNorm", "TIMEOUT_ENV",
    "collective_error", "convert_sync_batchnorm", "is_collective_error", "is_main_process", "launched",
    "Parallel", "make_latents", "no_sync", "rank_seed", "setup", "single", "strategy", "teardown",
    "timeout_minutes", "world",
]
