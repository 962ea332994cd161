"""Training batches from a dataset's uint8 image array, in a seeded order that can be resumed.

Each epoch visits the images in a fresh permutation drawn from a dedicated ``torch.Generator``
(seeded from the recipe), so the data order depends on nothing else. With ``hflip`` (the recipe's
``train.hflip``) each position of the epoch also gets a coin, drawn from the same generator right
after the permutation, and the image served there is mirrored left-right when it comes up heads. The state saved in a
checkpoint is the generator state *before* the current epoch's permutation, the epoch number and
the position inside it: restoring it redraws the same permutation and continues at the same image.

The images stay uint8 and live on the training device when they fit (a quarter of the free GPU
memory at most); otherwise in pinned host memory, gathered per batch and copied asynchronously.
Batches are converted to float in [-1, 1] on the device.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

DEVICE_FRACTION = 0.25


def _as_tensor(a: Any, dtype: torch.dtype) -> torch.Tensor:
    if isinstance(a, torch.Tensor):
        return a.to(dtype)
    return torch.as_tensor(np.asarray(a)).to(dtype)


class DataSampler:
    """Endless stream of ``(images[-1,1] float, labels int64)`` batches in a resumable seeded order."""

    def __init__(
        self, images: Any, labels: Any, seed: int, device: torch.device, channels_last: bool = False,
        hflip: bool = False,
    ) -> None:
        images = _as_tensor(images, torch.uint8)
        if images.ndim != 4:
            raise ValueError(f"dataset images must be [N, C, H, W] uint8, got shape {tuple(images.shape)}")
        n = images.shape[0]
        labels = _as_tensor(labels, torch.int64) if labels is not None else torch.zeros(n, dtype=torch.int64)
        if labels.shape != (n,):
            raise ValueError(f"dataset labels must have shape [{n}], got {tuple(labels.shape)}")
        if n == 0:
            raise ValueError("dataset has no images")
        self.n = n
        self.device = device
        self.channels_last = channels_last
        self.hflip = bool(hflip)
        self.on_device = device.type == "cpu" or self._fits(images, device)
        if self.on_device:
            self.images = images.to(device)
            self.labels = labels.to(device)
        else:
            self.images = images.contiguous().pin_memory()
            self.labels = labels.pin_memory()
        self.generator = torch.Generator().manual_seed(int(seed))
        self.rank, self.world = 0, 1  # see shard()
        self.epoch = -1
        self.pos = 0
        self._gen_state = self.generator.get_state()
        self._perm = torch.empty(0, dtype=torch.int64)
        self._flips = torch.empty(0, dtype=torch.bool)
        self._new_epoch()

    @staticmethod
    def _fits(images: torch.Tensor, device: torch.device) -> bool:
        if device.type != "cuda":
            return False
        free, _ = torch.cuda.mem_get_info(device)
        return images.numel() * images.element_size() <= DEVICE_FRACTION * free

    def _new_epoch(self) -> None:
        self._gen_state = self.generator.get_state()
        perm = torch.randperm(self.n, generator=self.generator)
        self._perm = perm.to(self.device) if self.on_device else perm
        if self.hflip:  # drawn after the permutation: without hflip the order is what it always was
            self._flips = (torch.rand(self.n, generator=self.generator) < 0.5).to(self.device)
        self.epoch += 1
        self.pos = 0

    def _indices(self, count: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The next ``count`` image indices of the order, and their flip coins (None without hflip)."""
        parts, flips = [], []
        while count > 0:
            if self.pos >= self.n:
                self._new_epoch()
            take = min(count, self.n - self.pos)
            parts.append(self._perm[self.pos : self.pos + take])
            if self.hflip:
                flips.append(self._flips[self.pos : self.pos + take])
            self.pos += take
            count -= take
        cat = lambda ts: ts[0] if len(ts) == 1 else torch.cat(ts)  # noqa: E731
        return cat(parts), (cat(flips) if self.hflip else None)

    def shard(self, rank: int, world: int) -> None:
        """Data-parallel training: :meth:`next` still advances the global order by ``batch_size``
        images but returns only the ``rank``-th of ``world`` equal contiguous slices of them, so the
        ranks' batches together are the single-process batch and the saved state stays global."""
        self.rank, self.world = int(rank), int(world)

    def next(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The next ``batch_size`` images of the order (this rank's slice of them when sharded)."""
        idx, flips = self._indices(batch_size)
        if self.world > 1:
            idx = idx.chunk(self.world)[self.rank]
            flips = None if flips is None else flips.chunk(self.world)[self.rank]
        x, y = self.images[idx], self.labels[idx]
        if not self.on_device:
            x = x.pin_memory().to(self.device, non_blocking=True)
            y = y.pin_memory().to(self.device, non_blocking=True)
        if flips is not None:
            x = torch.where(flips.to(x.device)[:, None, None, None], x.flip(-1), x)
        x = x.float().div_(127.5).sub_(1.0)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, y

    # --------------------------------------------------------------- checkpointing
    def state_dict(self) -> dict[str, Any]:
        state = {"generator": self._gen_state.clone(), "epoch": self.epoch, "pos": self.pos, "n": self.n}
        if self.hflip:
            state["hflip"] = True
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if int(state["n"]) != self.n:
            raise ValueError(f"the checkpoint's data order is for {state['n']} images, the dataset has {self.n}")
        if bool(state.get("hflip", False)) != self.hflip:
            raise ValueError(f"the checkpoint's data order was drawn with train.hflip={bool(state.get('hflip'))}, "
                             f"this run has train.hflip={self.hflip}")
        self.generator.set_state(state["generator"].to(torch.uint8))
        self._new_epoch()  # redraws the same permutation and re-saves the pre-epoch state
        self.epoch = int(state["epoch"])
        self.pos = int(state["pos"])
