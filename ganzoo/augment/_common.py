"""The augmentation contract shared by every ``augment`` block, and the chain a recipe builds."""
from __future__ import annotations

from abc import abstractmethod
from typing import Sequence

import torch
from torch import nn

from ..registry import AUGMENT

Params = dict[str, torch.Tensor]


class Augment(nn.Module):
    """Base class of augment blocks: ``forward(x) = apply(x, sample_params(x.shape, x.device))``."""

    @abstractmethod  # marks the placeholder: a subclass without its own is refused at registration
    def sample_params(self, shape: Sequence[int], device: torch.device | str,
                      generator: torch.Generator | None = None) -> Params:
        """One set of random parameters per image of a batch of ``shape`` ``[N, C, H, W]``, drawn on
        ``device`` (from ``generator`` if given). Never reads anything back to the host."""
        raise NotImplementedError

    @abstractmethod
    def apply(self, x: torch.Tensor, params: Params) -> torch.Tensor:
        raise NotImplementedError

    @abstractmethod
    def reference(self, x: torch.Tensor, params: Params) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.apply(x, self.sample_params(x.shape, x.device))


def uniform(n: int, device, generator: torch.Generator | None) -> torch.Tensor:
    """``n`` draws from U[0, 1) as a float32 ``[n]`` tensor on ``device``."""
    return torch.rand(n, device=device, generator=generator)


def integers(low: int, high: int, n: int, device, generator: torch.Generator | None) -> torch.Tensor:
    """``n`` integers in ``[low, high)`` (int64) on ``device``."""
    return torch.randint(low, high, (n,), device=device, generator=generator)


class AugmentChain(nn.Module):
    """The recipe's ``augment`` list as one callable, applied in order (identity when empty)."""

    def __init__(self, specs: Sequence) -> None:
        super().__init__()
        self.blocks = nn.ModuleList([AUGMENT.build(s) for s in specs])

    def __len__(self) -> int:
        return len(self.blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return x
