"""Helper shared by the gradient-based regularizers: D's gradient with respect to its input.

``needs_real_grad`` on a regularizer means its penalty differentiates D with respect to the real
images (R1): the training loop must call ``penalty`` with autograd enabled, outside ``no_grad``,
and must not run it on a ``torch.compile``'d D that lacks double-backward support.
"""
from __future__ import annotations

from typing import Callable

import torch


def input_grad_sq_norm(D: Callable[..., torch.Tensor], x: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
    """Per-sample ``||d sum(D(x, y)) / dx_i||^2`` in float32, differentiable (``create_graph=True``).

    ``x`` must be a leaf with ``requires_grad=True``. Differentiating the *sum* of the logits gives
    each sample's own gradient because logit i depends only on image i (true for D without batch
    statistics, such as every D here: SAGAN's D has no batch norm).
    """
    out = D(x, y)
    (grad,) = torch.autograd.grad(out.float().sum(), x, create_graph=True)
    return grad.float().flatten(1).square().sum(1)


def as_leaf(x: torch.Tensor) -> torch.Tensor:
    """A detached copy of ``x`` that requires grad (keeps ``x``'s memory format and dtype)."""
    return x.detach().clone().requires_grad_(True)
