"""train.hflip: random horizontal flips of the real images, drawn with the data order (resumable)."""
from __future__ import annotations

import pytest
import torch

from ganzoo.training.data import DataSampler

pytestmark = pytest.mark.usefixtures("one_cpu_thread")  # see conftest.py


def _images(n=40):
    # every image different and not mirror-symmetric: image i holds i in its left half's first column
    x = torch.zeros(n, 3, 4, 4, dtype=torch.uint8)
    x[:, :, :, 0] = torch.arange(n, dtype=torch.uint8)[:, None, None]
    return x, torch.arange(n) % 10


def _decode(batch):
    """(image id, flipped?) of each image in a [-1, 1] batch made from _images."""
    u8 = ((batch + 1) * 127.5).round().to(torch.int64)
    left, right = u8[:, 0, 0, 0], u8[:, 0, 0, -1]
    flipped = right > 0
    return torch.where(flipped, right, left), flipped


def test_flips_about_half_of_the_images_and_only_mirrors_them():
    x, y = _images(40)
    data = DataSampler(x, y, seed=3, device=torch.device("cpu"), hflip=True)
    ids, flips = [], []
    for _ in range(10):  # 10 epochs
        batch, labels = data.next(40)
        i, f = _decode(batch)
        assert torch.equal(labels, i % 10)  # labels follow their images
        assert torch.equal(batch[f], torch.flip(((x[i[f]].float() / 127.5) - 1), dims=[-1]))
        ids.append(i)
        flips.append(f)
    flips = torch.cat(flips).float()
    assert 0.4 < flips.mean() < 0.6
    # each image is flipped in some epochs and not in others (independent coins per epoch)
    per_image = torch.zeros(40)
    per_image.index_add_(0, torch.cat(ids), flips)
    assert ((per_image > 0) & (per_image < 10)).float().mean() > 0.9


def test_without_hflip_the_order_is_unchanged_and_nothing_is_flipped():
    x, y = _images(40)
    plain = DataSampler(x, y, seed=5, device=torch.device("cpu"))
    flip = DataSampler(x, y, seed=5, device=torch.device("cpu"), hflip=True)
    expected = torch.randperm(40, generator=torch.Generator().manual_seed(5))
    a, fa = _decode(plain.next(40)[0])
    b, _ = _decode(flip.next(40)[0])
    assert torch.equal(a, expected) and not fa.any()
    assert torch.equal(b, expected)  # the coins are drawn after the permutation


def test_resume_sees_the_same_images_and_flips():
    x, y = _images(40)
    a = DataSampler(x, y, seed=1, device=torch.device("cpu"), hflip=True)
    for _ in range(3):
        a.next(17)  # ends inside the second epoch
    state = a.state_dict()
    expected = [a.next(17)[0] for _ in range(4)]
    b = DataSampler(x, y, seed=1, device=torch.device("cpu"), hflip=True)
    b.load_state_dict(state)
    assert all(torch.equal(e, b.next(17)[0]) for e in expected)


def test_resume_with_another_hflip_setting_is_refused():
    x, y = _images(40)
    state = DataSampler(x, y, seed=1, device=torch.device("cpu"), hflip=True).state_dict()
    with pytest.raises(ValueError, match="train.hflip"):
        DataSampler(x, y, seed=1, device=torch.device("cpu")).load_state_dict(state)


def test_sharded_ranks_together_see_the_single_process_batch():
    x, y = _images(40)
    whole = DataSampler(x, y, seed=2, device=torch.device("cpu"), hflip=True).next(20)[0]
    parts = []
    for rank in range(2):
        s = DataSampler(x, y, seed=2, device=torch.device("cpu"), hflip=True)
        s.shard(rank, 2)
        parts.append(s.next(20)[0])
    assert torch.equal(torch.cat(parts), whole)
