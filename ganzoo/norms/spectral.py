"""``spectral``: spectral normalisation of a layer's weight (Miyato et al. 2018), as SAGAN uses it.

The weight ``W`` (reshaped to a matrix ``[out, -1]``; ``[in, -1]`` for transposed convs) is divided
by an estimate of its largest singular value ``sigma``, obtained by power iteration on persistent
vectors ``u`` (left) and ``v`` (right), stored as buffers so the estimate improves across steps::

    repeat n_power_iterations:  v = W^T u / (|W^T u| + eps);   u = W v / (|W v| + eps)
    sigma = u^T W v                        (u, v treated as constants: dsigma/dW = u v^T)

At construction, and after a block re-initialises a wrapped weight (:func:`refresh_spectral_norms_`),
``u`` and ``v`` are run to convergence on the final weight (:meth:`SpectralNormParametrization.converge_`),
so a freshly built layer is normalised to spectral norm 1 in eval mode too (its first training
forward only refines them).

``u`` and ``v`` are updated only in training mode (eval uses the stored pair) and always in fp32,
with autocast disabled, whatever the layer's dtype. Each iteration costs one matrix-vector pair;
the last ``W v`` is shared with ``sigma`` (``sigma = u^T W v = |W v|^2 / (|W v| + eps)``), and
nothing is read back to Python, so a forward never synchronises the device.

``eps`` is added to norms exactly as the official SAGAN code's ``l2normalize`` (``1e-12``); it also
bounds ``sigma`` from below, so an all-zero weight gives zeros rather than NaN.

Implemented as a ``torch.nn.utils.parametrize`` parametrization: ``layer.weight`` is the normalised
weight, the raw one is ``layer.parametrizations.weight.original`` and the vectors are
``layer.parametrizations.weight[0].u`` / ``.v`` (state-dict keys ``parametrizations.weight.0.u``).
"""
from __future__ import annotations

import contextlib
from typing import Literal

import torch
from pydantic import Field
from torch import nn
from torch.nn.utils import parametrize

from ..config import BlockConfig
from ..registry import WEIGHT_NORM

_AUTOCAST_DEVICES = ("cuda", "cpu", "xpu", "mps")
#: Power iterations that set u and v from a weight at construction and after a re-initialisation:
#: rounds of ``CONVERGE_ROUND`` until sigma changes by less than ``CONVERGE_TOL`` (relative) in a round
#: (an orthogonal weight: one round), at most ``CONVERGE_MAX`` iterations.
CONVERGE_ROUND, CONVERGE_TOL, CONVERGE_MAX = 10, 1e-5, 5000


def _fp32_context(device_type: str):
    """Disable autocast on ``device_type`` if it is on (power iteration must not run in bf16/fp16)."""
    if device_type in _AUTOCAST_DEVICES and torch.is_autocast_enabled(device_type):
        return torch.autocast(device_type, enabled=False)
    return contextlib.nullcontext()


def _l2normalize(x: torch.Tensor, eps: float) -> torch.Tensor:
    return x / (torch.linalg.vector_norm(x) + eps)


class SpectralNormParametrization(nn.Module):
    """Divides a weight by its largest singular value, estimated by power iteration on buffers u, v."""

    def __init__(self, weight: torch.Tensor, n_power_iterations: int = 1, eps: float = 1e-12, dim: int = 0) -> None:
        super().__init__()
        if weight.ndim < 2:
            raise ValueError(f"spectral norm needs a weight with at least 2 dimensions, got shape {tuple(weight.shape)}")
        self.n_power_iterations = int(n_power_iterations)
        self.eps = float(eps)
        self.dim = int(dim)
        with torch.no_grad():
            mat = self.matrix(weight.detach().float())
            u = _l2normalize(torch.randn(mat.shape[0], device=mat.device), self.eps)
            v = _l2normalize(torch.mv(mat.t(), u), self.eps)
        self.register_buffer("u", u)
        self.register_buffer("v", v)
        self.converge_(weight.detach())  # u, v of this weight (no RNG drawn)

    def matrix(self, weight: torch.Tensor) -> torch.Tensor:
        """The weight as the 2-D matrix whose spectral norm is taken ([out, -1], or [in, -1] for dim=1)."""
        if self.dim != 0:
            weight = weight.movedim(self.dim, 0)
        return weight.flatten(1)

    def _iterate(self, mat: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` rounds of ``v = W^T u / |.|; u = W v / |.|`` from the stored ``u`` (fp32, no buffer
        written); returns ``(u, v)`` (``v`` is the stored one when ``n`` is 0)."""
        u, v = self.u.float(), self.v.float()
        for _ in range(n):
            v = _l2normalize(torch.mv(mat.t(), u), self.eps)
            u = _l2normalize(torch.mv(mat, v), self.eps)
        return u, v

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        w32 = weight.float()
        with _fp32_context(weight.device.type):
            mat = self.matrix(w32)
            if self.training:
                with torch.no_grad():
                    u, _ = self._iterate(mat, self.n_power_iterations - 1)
                    v = _l2normalize(torch.mv(mat.t(), u), self.eps)
                wv = torch.mv(mat, v)  # the last iteration's W v, shared with sigma (carries the gradient)
                with torch.no_grad():
                    u = _l2normalize(wv, self.eps)
                    self.u.copy_(u)
                    self.v.copy_(v)
                sigma = torch.dot(u, wv)
            else:
                u, v = self.u.float(), self.v.float()
                if torch.is_grad_enabled():  # a later training step updates the buffers in place
                    u, v = u.clone(), v.clone()
                sigma = torch.dot(u, torch.mv(mat, v))
            return (w32 / sigma.clamp_min(self.eps)).to(weight.dtype)

    @torch.no_grad()
    def converge_(self, weight: torch.Tensor) -> None:
        """Power iterations on ``weight`` until its sigma estimate settles (see ``CONVERGE_TOL``),
        updating ``u`` and ``v`` in place: at construction, and after a block re-initialised the
        weight (:func:`refresh_spectral_norms_`). Reads sigma back once per round: not for training.
        Nothing on the meta device (networks built there only to count parameters have no values)."""
        if weight.is_meta:
            return
        with _fp32_context(weight.device.type):
            mat = self.matrix(weight.float())
            last = None
            for _ in range(0, CONVERGE_MAX, CONVERGE_ROUND):
                u, v = self._iterate(mat, CONVERGE_ROUND)
                self.u.copy_(u)
                self.v.copy_(v)
                sigma = float(torch.dot(u, torch.mv(mat, v)))
                if last is not None and abs(sigma - last) <= CONVERGE_TOL * abs(sigma):
                    break
                last = sigma

    @torch.no_grad()
    def refresh_(self, weight: torch.Tensor) -> None:
        """``n_power_iterations`` power iterations on ``weight``, updating ``u`` and ``v`` in place, as a
        training forward would. For a copy whose weights are set from outside (the EMA of G): its
        vectors must follow its own weights, not the trained network's (see ``training/ema.py``)."""
        with _fp32_context(weight.device.type):
            u, v = self._iterate(self.matrix(weight.float()), self.n_power_iterations)
            self.u.copy_(u)
            self.v.copy_(v)

    @torch.no_grad()
    def reference(self, weight: torch.Tensor) -> torch.Tensor:
        """What the next forward returns, computed plainly in float64 without touching u and v."""
        w = weight.to(torch.float64)
        mat = self.matrix(w)
        u, v = self.u.to(torch.float64), self.v.to(torch.float64)
        if self.training:
            for _ in range(self.n_power_iterations):
                v = mat.t() @ u
                v = v / (v.norm() + self.eps)
                u = mat @ v
                u = u / (u.norm() + self.eps)
        sigma = u @ mat @ v
        return w / max(float(sigma), self.eps)

    def extra_repr(self) -> str:
        return f"n_power_iterations={self.n_power_iterations}, eps={self.eps:g}, dim={self.dim}"


class SpectralNormConfig(BlockConfig):
    """Spectral normalisation: weight divided by its largest singular value (power iteration)."""

    type: Literal["spectral"] = "spectral"
    n_power_iterations: int = Field(
        1, ge=1, le=100, description="power iterations per training forward (official SAGAN and BigGAN: 1)"
    )
    eps: float = Field(
        1e-12, gt=0, le=1e-3,
        description="added to vector norms in the power iteration, and lower bound of sigma (official SAGAN: 1e-12)",
    )


@WEIGHT_NORM.register(SpectralNormConfig)
class SpectralNorm:
    """Spectral normalisation (Miyato et al. 2018) with persistent power-iteration vectors, fp32 always."""

    #: :mod:`ganzoo.testing` checks that a wrapped layer's weight has largest singular value 1.
    unit_spectral_norm = True

    def __init__(self, cfg: SpectralNormConfig | None = None) -> None:
        self.cfg = cfg or SpectralNormConfig()

    def __call__(self, module: nn.Module) -> nn.Module:
        return self.wrap(module)

    def wrap(self, module: nn.Module, name: str = "weight") -> nn.Module:
        """Spectrally normalise ``module.<name>`` in place and return ``module``."""
        if is_spectral(module, name):
            raise ValueError(f"{type(module).__name__}.{name} is already spectrally normalised")
        weight = getattr(module, name, None)
        stacked = parametrize.is_parametrized(module, name)  # on top of another parametrization
        if not isinstance(weight, nn.Parameter) and not stacked:
            raise TypeError(f"spectral norm needs a module with a '{name}' parameter, got {type(module).__name__}")
        dim = 1 if isinstance(module, (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)) else 0
        param = SpectralNormParametrization(weight, self.cfg.n_power_iterations, self.cfg.eps, dim)
        # unsafe=True: skip the consistency call, which would step the power iteration once
        parametrize.register_parametrization(module, name, param, unsafe=True)
        return module


def is_spectral(module: nn.Module, name: str = "weight") -> bool:
    """Whether ``module.<name>`` carries a :class:`SpectralNormParametrization`."""
    return parametrize.is_parametrized(module, name) and any(
        isinstance(p, SpectralNormParametrization) for p in module.parametrizations[name]
    )


def spectral_parametrization(module: nn.Module, name: str = "weight") -> SpectralNormParametrization:
    """The :class:`SpectralNormParametrization` on ``module.<name>`` (TypeError if there is none)."""
    if parametrize.is_parametrized(module, name):
        for p in module.parametrizations[name]:
            if isinstance(p, SpectralNormParametrization):
                return p
    raise TypeError(f"{type(module).__name__}.{name} is not spectrally normalised")


@torch.no_grad()
def refresh_spectral_norms_(module: nn.Module) -> int:
    """Run every spectral norm inside ``module`` to convergence on its current weight (in place).
    A block that initialises a weight after wrapping it (SAGAN attention's ``reset_parameters``)
    calls this: the layer would otherwise keep the vectors of its old weight, and in eval mode divide
    by a meaningless ``u^T W v`` (seen: effective norms of 2e12). Returns how many were refreshed."""
    count = 0
    for m in module.modules():
        plists = getattr(m, "parametrizations", None)
        if plists is None:
            continue
        for plist in plists.values():
            weight = plist.original
            for p in plist:  # a spectral norm stacked on another parametrization sees that one's output
                if isinstance(p, SpectralNormParametrization):
                    p.converge_(weight)
                    count += 1
                    break  # (a weight is spectrally normalised once at most)
                weight = p(weight)
    return count
