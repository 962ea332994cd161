"""``relativistic_non_saturating``: RaSGAN, the relativistic average standard GAN loss
(Jolicoeur-Martineau 2019, "The relativistic discriminator: a key element missing from standard GAN").

The standard GAN's cross-entropy on the relativistic average logits: with ``C`` D's logits,
``r~ = C(x_r) - mean C(x_f)`` and ``f~ = C(x_f) - mean C(x_r)`` (``-log sigmoid(t) = softplus(-t)``)::

    D:  ( mean softplus(-r~) + mean softplus(f~) ) / 2     = -(E log sigmoid(r~) + E log(1 - sigmoid(f~))) / 2
    G:  ( mean softplus(r~) + mean softplus(-f~) ) / 2     = -(E log(1 - sigmoid(r~)) + E log sigmoid(f~)) / 2

G's loss is D's with the roles swapped (non-saturating in f~), so it reads the real logits
(``g_needs_real``); in G's update they are constants (D on augmented real images without autograd).
The halving follows the paper's reference code (RaSGAN, ``loss_D == 6``), whose corrected form
compares fakes with the mean real logit as here.
"""
from __future__ import annotations

from typing import ClassVar, Literal

import torch
import torch.nn.functional as F

from ..config import BlockConfig
from ..registry import LOSS
from ._fp32 import no_autocast, relativistic_average


class RelativisticNonSaturatingLossConfig(BlockConfig):
    """RaSGAN: D (softplus(-r~) + softplus(f~))/2, G (softplus(r~) + softplus(-f~))/2, r~ = C(x_r) - mean C(x_f)."""

    type: Literal["relativistic_non_saturating"] = "relativistic_non_saturating"


@LOSS.register(RelativisticNonSaturatingLossConfig)
class RelativisticNonSaturatingLoss:
    """Relativistic average standard GAN (RaSGAN, Jolicoeur-Martineau 2019): BCE on real - mean fake, fake - mean real."""

    g_needs_real: ClassVar[bool] = True  # G's loss compares with the mean real logit

    def __init__(self, cfg: RelativisticNonSaturatingLossConfig | None = None) -> None:
        self.cfg = cfg or RelativisticNonSaturatingLossConfig()

    def d_loss(self, real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
        with no_autocast(fake_logits):
            r, f = relativistic_average(real_logits, fake_logits, "relativistic_non_saturating.d_loss")
            return 0.5 * (F.softplus(-r).mean() + F.softplus(f).mean())

    def g_loss(self, real_logits: torch.Tensor | None, fake_logits: torch.Tensor) -> torch.Tensor:
        with no_autocast(fake_logits):
            r, f = relativistic_average(real_logits, fake_logits, "relativistic_non_saturating.g_loss")
            return 0.5 * (F.softplus(r).mean() + F.softplus(-f).mean())
