"""``lecam``: the LeCam regularizer (Tseng et al. 2021, "Regularizing Generative Adversarial Networks
under Limited Data").

D's outputs are anchored to moving averages of its own past outputs: with ``a_R``, ``a_F`` the
exponential moving averages (decay 0.99) of D's mean real and mean fake logit::

    penalty = weight * ( mean relu(D(x) - a_F)^2 + mean relu(a_R - D(G(z)))^2 )    (one_sided, default)
    penalty = weight * ( mean (D(x) - a_F)^2     + mean (a_R - D(G(z)))^2 )        (one_sided: false, Eq. 3)

The paper writes Eq. 3 without the relu; both of the authors' implementations (BigGAN and StyleGAN2)
apply it, so the penalty only pulls real outputs down towards the fake average and fake outputs up
towards the real one; ``one_sided`` picks. Each call first folds this batch's means into the
averages, then penalises, as the authors' code does. The averages are zero-debiased (their StyleGAN2
code: a moving average started at 0 divided by 1 - decay^t), so the penalty applies from the first
step; their BigGAN code instead skips it for 1000 iterations.

The defaults pair values from the authors' two code bases, which no official run used together: the
decay 0.99 is their StyleGAN2 code's (``stylegan2/lecam_loss.py``), the weight 0.3 their BigGAN CIFAR
scripts' (``--LC 0.3``), whose averages decay by 0.9 (``third_party/utils.py``'s ``ema_losses``, at
commit db6debc). ``decay: 0.9`` gives those runs' averages (about 10 D steps instead of about 100).

It uses the logits D's loss was computed from (``uses_logits``: no extra forward of D), keeps its
averages in buffers (``stateful``: saved in checkpoints, restored on resume) and updates them in place
on the device without reading anything back (``graph_safe``: it runs under ``train.cuda_graph``).
"""
from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from ..config import BlockConfig
from ..losses._fp32 import fp32, no_autocast
from ..registry import REGULARIZER


class LeCamConfig(BlockConfig):
    """LeCam: weight * (relu(D(x) - ema_fake)^2 + relu(ema_real - D(G(z)))^2), EMAs of D's mean outputs."""

    type: Literal["lecam"] = "lecam"
    weight: float = Field(0.3, ge=0, le=1e6, description="penalty weight lambda (the authors' BigGAN CIFAR scripts: 0.3)")
    decay: float = Field(0.99, ge=0, lt=1, description="decay of the moving averages of D's mean real and fake "
                         "outputs (the authors' StyleGAN2 code: 0.99; their BigGAN CIFAR code: 0.9)")
    one_sided: bool = Field(True, description="relu inside the squares, as both of the authors' implementations; "
                            "false: the paper's Eq. 3 (plain squared distances)")


@REGULARIZER.register(LeCamConfig)
class LeCam(nn.Module):
    """LeCam regularizer (Tseng et al. 2021): D's outputs anchored to moving averages of its past outputs."""

    needs_real_grad: ClassVar[bool] = False
    uses_logits: ClassVar[bool] = True  # the logits of D's loss, no extra forward
    runs_d: ClassVar[bool] = False
    graph_safe: ClassVar[bool] = True  # in-place device updates, no double backward, no host read
    stateful: ClassVar[bool] = True  # the moving averages: buffers, in checkpoints

    def __init__(self, cfg: LeCamConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg or LeCamConfig()
        # biased averages started at 0, and decay^t for their zero-debiasing (float32, on D's device)
        self.register_buffer("ema_real", torch.zeros(()))
        self.register_buffer("ema_fake", torch.zeros(()))
        self.register_buffer("decay_power", torch.ones(()))

    @torch.no_grad()
    def update(self, real_mean: torch.Tensor, fake_mean: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Fold one batch's mean logits into the averages (in place); returns the debiased averages."""
        d = self.cfg.decay
        self.ema_real.mul_(d).add_(real_mean, alpha=1 - d)
        self.ema_fake.mul_(d).add_(fake_mean, alpha=1 - d)
        self.decay_power.mul_(d)
        scale = 1.0 / (1.0 - self.decay_power)
        return self.ema_real * scale, self.ema_fake * scale

    def penalty(self, D: Any, real: torch.Tensor, fake: torch.Tensor, y: torch.Tensor | None = None, *,
                real_logits: torch.Tensor | None = None, fake_logits: torch.Tensor | None = None) -> torch.Tensor:
        if real_logits is None:
            real_logits = D(real, y)
        if fake_logits is None:
            fake_logits = D(fake, y)
        with no_autocast(real_logits):
            r, f = fp32(real_logits), fp32(fake_logits)
            anchor_real, anchor_fake = self.update(r.detach().mean(), f.detach().mean())
            above, below = r - anchor_fake, anchor_real - f
            if self.cfg.one_sided:
                above, below = F.relu(above), F.relu(below)
            return self.cfg.weight * (above.square().mean() + below.square().mean())
