"""``none``: no attention (identity), the ablation baseline."""
from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from ..config import BlockConfig
from ..registry import ATTENTION


class NoAttentionConfig(BlockConfig):
    """No attention: the block is the identity."""

    type: Literal["none"] = "none"


@ATTENTION.register(NoAttentionConfig)
class NoAttention(nn.Identity):
    """Identity: no attention (the paper's 'no attention' ablation)."""

    parameter_free = True  # nothing to check against a reference (ganzoo.contracts)

    def __init__(self, cfg: NoAttentionConfig | None = None, channels: int = 0, **_: object) -> None:
        super().__init__()
        self.cfg = cfg or NoAttentionConfig()
        self.channels = channels
