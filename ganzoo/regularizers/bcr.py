"""``bcr``: balanced consistency regularization (Zhao et al. 2021, "Improved Consistency
Regularization for GANs", bCR).

D should give an image and a transformed copy the same output, for real and for generated images::

    penalty = weight_real * mean (D(x) - D(T(x)))^2 + weight_fake * mean (D(G(z)) - D(T(G(z))))^2

``T`` is a chain of ``augment`` blocks (``transforms``, drawn afresh per image on every call; the
paper's CIFAR-10 transform is a horizontal flip and a shift by a few pixels: ``[flip, translation]``
here, translation's default 1/8 of the side), and both weights are 10 as in the paper. Both terms
are differentiated through both outputs (no stop-gradient), as in Algorithm 1.

``x`` and ``G(z)`` are the images D's loss saw (after the recipe's ``augment``) and ``D(x)``,
``D(G(z))`` its logits from that forward (``uses_logits``), so the penalty adds one forward of D over
``T`` of both halves at once. It has no state and reads nothing back (``graph_safe``: it runs under
``train.cuda_graph``); its extra forward keeps D eager under ``train.compile`` (``runs_d``).
"""
from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch
from pydantic import Field

from ..augment._common import AugmentChain
from ..blockref import Block
from ..config import BlockConfig
from ..losses._fp32 import fp32, no_autocast
from ..registry import REGULARIZER


class BCRConfig(BlockConfig):
    """bCR: weight_real * (D(x) - D(T(x)))^2 + weight_fake * (D(G(z)) - D(T(G(z))))^2, T from augment blocks."""

    type: Literal["bcr"] = "bcr"
    weight_real: float = Field(10.0, ge=0, le=1e6, description="lambda_real, on real images (the paper: 10)")
    weight_fake: float = Field(10.0, ge=0, le=1e6, description="lambda_fake, on generated images (the paper: 10)")
    transforms: list[Block("augment")] = Field(
        default_factory=lambda: ["flip", "translation"], min_length=1, max_length=16,
        description="the transform T: augment blocks applied in this order (the paper, CIFAR-10: a flip and a "
        "shift of a few pixels)")


@REGULARIZER.register(BCRConfig)
class BalancedConsistency:
    """Balanced consistency regularization (bCR, Zhao et al. 2021): D(x) ~ D(T(x)) for reals and fakes."""

    needs_real_grad: ClassVar[bool] = False
    uses_logits: ClassVar[bool] = True  # D(x), D(G(z)) are the loss's logits: one extra forward, of T(x)
    runs_d: ClassVar[bool] = True
    graph_safe: ClassVar[bool] = True  # device-side draws, a plain forward and backward

    def __init__(self, cfg: BCRConfig | None = None) -> None:
        self.cfg = cfg or BCRConfig()
        self.transform = AugmentChain(self.cfg.transforms)

    def penalty(self, D: Any, real: torch.Tensor, fake: torch.Tensor, y: torch.Tensor | None = None, *,
                real_logits: torch.Tensor | None = None, fake_logits: torch.Tensor | None = None) -> torch.Tensor:
        if real.shape != fake.shape:
            raise ValueError(f"real {tuple(real.shape)} and fake {tuple(fake.shape)} must have the same shape")
        n = len(real)
        both = torch.cat([real, fake.to(real.dtype)])
        images = self.transform(both)  # T(x), T(G(z)), each image its own draw
        given = real_logits is not None and fake_logits is not None
        if not given:  # D(x), D(G(z)) in the same forward
            images = torch.cat([both, images])
        out = D(images, None if y is None else y.repeat(len(images) // n))
        if given:
            r, f, r_t, f_t = real_logits, fake_logits, out[:n], out[n:]
        else:
            r, f, r_t, f_t = out.split(n)
        with no_autocast(out):
            real_term = (fp32(r) - fp32(r_t)).square().mean()
            fake_term = (fp32(f) - fp32(f_t)).square().mean()
            return self.cfg.weight_real * real_term + self.cfg.weight_fake * fake_term
