"""``relativistic_hinge``: RaHinge, the relativistic average hinge loss (Jolicoeur-Martineau 2019,
"The relativistic discriminator: a key element missing from standard GAN").

D judges whether a real image is more realistic than the average fake, and a fake than the average
real. With ``C`` D's logits, ``r~ = C(x_r) - mean C(x_f)`` and ``f~ = C(x_f) - mean C(x_r)``::

    D:  ( mean relu(m - r~) + mean relu(m + f~) ) / 2
    G:  ( mean relu(m + r~) + mean relu(m - f~) ) / 2

G's loss is D's with the roles of real and fake swapped, so it reads the real logits
(``g_needs_real``); in G's update they are constants (D on augmented real images without autograd),
and G's gradient flows through the fake logits alone. The halving and m = 1 follow the paper's
reference code (RaHingeGAN, ``loss_D == 8``).
"""
from __future__ import annotations

from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import Field

from ..config import BlockConfig
from ..registry import LOSS
from ._fp32 import no_autocast, relativistic_average


class RelativisticHingeLossConfig(BlockConfig):
    """RaHinge: D (relu(m - r~) + relu(m + f~))/2, G (relu(m + r~) + relu(m - f~))/2, r~ = C(x_r) - mean C(x_f)."""

    type: Literal["relativistic_hinge"] = "relativistic_hinge"
    margin: float = Field(1.0, gt=0, le=1e6, description="hinge margin m (the paper's code: 1)")


@LOSS.register(RelativisticHingeLossConfig)
class RelativisticHingeLoss:
    """Relativistic average hinge (RaHinge, Jolicoeur-Martineau 2019): real vs mean fake and fake vs mean real."""

    g_needs_real: ClassVar[bool] = True  # G's loss compares with the mean real logit

    def __init__(self, cfg: RelativisticHingeLossConfig | None = None) -> None:
        self.cfg = cfg or RelativisticHingeLossConfig()

    def d_loss(self, real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
        m = self.cfg.margin
        with no_autocast(fake_logits):
            r, f = relativistic_average(real_logits, fake_logits, "relativistic_hinge.d_loss")
            return 0.5 * (F.relu(m - r).mean() + F.relu(m + f).mean())

    def g_loss(self, real_logits: torch.Tensor | None, fake_logits: torch.Tensor) -> torch.Tensor:
        m = self.cfg.margin
        with no_autocast(fake_logits):
            r, f = relativistic_average(real_logits, fake_logits, "relativistic_hinge.g_loss")
            return 0.5 * (F.relu(m + r).mean() + F.relu(m - f).mean())
