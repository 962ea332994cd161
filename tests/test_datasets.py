"""Datasets: shapes, dtypes, labels, deterministic content hashes, the decode cache, error messages."""
from __future__ import annotations

import gzip
import io
import os
import pickle
import tarfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from ganzoo.datasets import (
    DatasetError,
    MissingSplitError,
    build_reference,
    sample_batch,
    to_device,
    to_float,
)
from ganzoo.datasets import _cache
from ganzoo.errors import GanzooError
from ganzoo.registry import DATASET

REPO = Path(__file__).resolve().parents[1]
SHARED_CIFAR = REPO.parent / "shared" / "data" / "cifar10-jpeg.tar.gz"


@pytest.fixture(autouse=True)
def cache_dir(tmp_path, monkeypatch):
    d = tmp_path / "cache"
    monkeypatch.setenv("GANZOO_CACHE", str(d))
    return d


def check_common(ds, n, c, res, num_classes):
    assert ds.images.dtype == torch.uint8 and ds.images.shape == (n, c, res, res)
    assert ds.labels.dtype == torch.int64 and ds.labels.shape == (n,)
    assert int(ds.labels.min()) >= 0 and int(ds.labels.max()) < num_classes
    assert ds.num_classes == num_classes == len(ds.class_names)
    assert isinstance(ds.content_hash, str) and len(ds.content_hash) == 64
    x, y = ds[0]
    assert x.shape == (c, res, res) and isinstance(y, int)


# ----------------------------------------------------------------------------- synthetic
def test_synthetic_shape_scale_draws_the_same_shapes_larger():
    """``shape_scale`` (the quickstart's 1.6) keeps every random draw, so labels are the same and the
    default scale gives the pixels it always gave; larger shapes cover more of each image."""
    from ganzoo.datasets.synthetic import generate

    cfg = {"type": "synthetic", "num_images": 64, "num_test_images": 8, "seed": 3, "cache": False}
    a, big = DATASET.build(cfg, 32), DATASET.build({**cfg, "shape_scale": 1.6}, 32)
    assert torch.equal(a.images, DATASET.build({**cfg, "shape_scale": 1.0}, 32).images)
    assert torch.equal(a.labels, big.labels) and a.content_hash != big.content_hash
    x, y = generate(64, 32, 10, 3, shape_scale=1.0)
    assert torch.equal(a.images, torch.from_numpy(x))
    # a shape is saturated and bright against a dark, greyish background: count its pixels
    def coverage(images):
        rgb = images.float() / 255
        sat = rgb.amax(1) - rgb.amin(1)
        return ((sat > 0.3) & (rgb.amax(1) > 0.6)).float().mean().item()
    assert coverage(big.images) > 1.8 * coverage(a.images)
    with pytest.raises(Exception, match="shape_scale"):
        DATASET.build({**cfg, "shape_scale": 3.0}, 32)


def test_synthetic_shapes_determinism_and_splits():
    cfg = {"type": "synthetic", "num_images": 300, "num_test_images": 50, "seed": 3, "cache": False}
    a = DATASET.build(cfg, 32)
    check_common(a, 300, 3, 32, 10)
    assert set(a.labels.tolist()) == set(range(10))
    b = DATASET.build(cfg, 32)
    assert a.content_hash == b.content_hash and torch.equal(a.images, b.images)
    assert DATASET.build({**cfg, "seed": 4}, 32).content_hash != a.content_hash
    t = DATASET.build(cfg, 32, split="test")
    check_common(t, 50, 3, 32, 10)
    assert t.content_hash != a.content_hash
    assert DATASET.build(cfg, 48).images.shape[-1] == 48
    g = DATASET.build({**cfg, "channels": 1, "num_classes": 4}, 16)
    check_common(g, 300, 1, 16, 4)
    with pytest.raises(DatasetError, match="synthetic has splits"):
        DATASET.build(cfg, 32, split="val")


def test_synthetic_classes_differ_in_shape_not_colour():
    """Learnable: the shape's silhouette (brighter-than-background mask) separates the classes."""
    ds = DATASET.build({"type": "synthetic", "num_images": 600, "cache": False}, 32)
    lum = ds.images.float().mean(1)
    mask = (lum > lum.flatten(1).median(1).values[:, None, None] + 40).float()
    area = mask.flatten(1).mean(1)
    per_class = torch.stack([area[ds.labels == k].mean() for k in range(10)])
    # filled shapes (square) cover much more than thin ones (cross/star/bars)
    assert per_class[2] > 1.5 * per_class[7]
    # the pixels differ between images (position/colour jitter)
    assert ds.images.float().std(0).mean() > 20


def test_synthetic_cache_round_trip(cache_dir):
    cfg = {"type": "synthetic", "num_images": 64, "num_test_images": 8}
    a = DATASET.build(cfg, 32)
    assert not a.cache_hit and a.cache_path is not None and a.cache_path.is_file()
    assert a.cache_path.is_relative_to(cache_dir)
    b = DATASET.build(cfg, 32)
    assert b.cache_hit and b.content_hash == a.content_hash and torch.equal(a.images, b.images)
    assert torch.equal(a.labels, b.labels) and b.class_names == a.class_names
    assert not [p for p in a.cache_path.parent.iterdir() if p.name.endswith(".tmp")]
    with np.load(a.cache_path, allow_pickle=False) as z:  # plain arrays, no pickles
        assert z["images"].dtype == np.uint8


def test_corrupt_cache_file_is_rebuilt():
    cfg = {"type": "synthetic", "num_images": 16, "num_test_images": 4}
    a = DATASET.build(cfg, 16)
    a.cache_path.write_bytes(b"not a zip")
    b = DATASET.build(cfg, 16)
    assert not b.cache_hit and b.content_hash == a.content_hash
    assert DATASET.build(cfg, 16).cache_hit


# ----------------------------------------------------------------------------- cifar10
def write_batches(folder: Path, n_train: int = 12, n_test: int = 6, seed: int = 0) -> dict[str, np.ndarray]:
    """Tiny batches in the original format (pickled dicts with bytes keys, protocol 2)."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    out = {}
    names = [*(f"data_batch_{i}" for i in range(1, 6))]
    for name, n in [*((m, n_train) for m in names), ("test_batch", n_test)]:
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, n).tolist()
        (folder / name).write_bytes(pickle.dumps(
            {b"batch_label": name.encode(), b"labels": labels, b"data": data, b"filenames": [b"x.png"] * n},
            protocol=2,
        ))
        out[name] = data
    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": []}, protocol=2))
    return out


def test_cifar10_python_batches(tmp_path):
    data = write_batches(tmp_path / "c" / "cifar-10-batches-py")
    ds = DATASET.build({"type": "cifar10", "root": str(tmp_path / "c")}, 32)
    check_common(ds, 60, 3, 32, 10)
    assert ds.class_names[0] == "airplane" and ds.class_names[9] == "truck"
    assert np.array_equal(ds.images[:12].numpy().reshape(12, -1), data["data_batch_1"])
    test = DATASET.build({"type": "cifar10", "root": str(tmp_path / "c" / "cifar-10-batches-py")}, 16, split="test")
    check_common(test, 6, 3, 16, 10)
    again = DATASET.build({"type": "cifar10", "root": str(tmp_path / "c")}, 32)
    assert again.cache_hit and again.content_hash == ds.content_hash


def test_cifar10_original_archive(tmp_path):
    write_batches(tmp_path / "src" / "cifar-10-batches-py", n_train=4, n_test=3)
    (tmp_path / "dl").mkdir()
    with tarfile.open(tmp_path / "dl" / "cifar-10-python.tar.gz", "w:gz") as tf:
        tf.add(tmp_path / "src" / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    ds = DATASET.build({"type": "cifar10", "root": str(tmp_path / "dl")}, 32, split="test")
    check_common(ds, 3, 3, 32, 10)
    direct = DATASET.build({"type": "cifar10", "root": str(tmp_path / "src"), "cache": False}, 32, split="test")
    assert direct.content_hash == ds.content_hash  # same pixels, whatever the container


def test_cifar10_refuses_malicious_pickle(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    write_batches(folder)
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    (folder / "test_batch").write_bytes(pickle.dumps({b"data": Evil(), b"labels": []}, protocol=2))
    with pytest.raises(DatasetError, match=r"test_batch: not a CIFAR-10 python batch .*not allowed"):
        DATASET.build({"type": "cifar10", "root": str(folder)}, 32, split="test")
    assert not marker.exists()


def test_cifar10_missing_root_names_field_and_options(tmp_path):
    with pytest.raises(GanzooError) as e:
        DATASET.build({"type": "cifar10"}, 32)
    msg = str(e.value)
    assert msg.startswith("data.root: not set") and "cifar10-jpeg.tar.gz" in msg and "download" in msg
    missing = tmp_path / "nothing-here"
    with pytest.raises(DatasetError) as e:
        DATASET.build({"type": "cifar10", "root": str(missing)}, 32)
    assert str(e.value).startswith(f"data.root: {missing}: not found") and "\n" not in str(e.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="holds no CIFAR-10 copy"):
        DATASET.build({"type": "cifar10", "root": str(tmp_path / "empty")}, 32, field="eval.reference")


@pytest.mark.skipif(not SHARED_CIFAR.is_file(), reason=f"shared CIFAR-10 JPEG archive not found at {SHARED_CIFAR}")
def test_cifar10_from_shared_jpeg_archive():
    cfg = {"type": "cifar10", "root": str(SHARED_CIFAR), "max_images": 200}
    ds = DATASET.build(cfg, 32, split="test")
    check_common(ds, 200, 3, 32, 10)
    assert len(set(ds.labels.tolist())) == 10  # the subset is spread over classes
    assert 80 < ds.images.float().mean() < 160
    again = DATASET.build(cfg, 32, split="test")
    assert again.cache_hit and again.content_hash == ds.content_hash
    assert DATASET.build({**cfg, "cache": False}, 32, split="test").content_hash == ds.content_hash


def test_cifar10_recipe_problems():
    cfg = DATASET.get("cifar10").config(root="x")
    assert cfg.recipe_problems(SimpleNamespace(channels=3, num_classes=10)) == []
    assert cfg.recipe_problems(SimpleNamespace(channels=3, num_classes=0)) == []
    probs = cfg.recipe_problems(SimpleNamespace(channels=1, num_classes=7))
    assert any("3-channel" in m for _, m in probs) and any("10 classes" in m for _, m in probs)


# ----------------------------------------------------------------------------- image_folder
def write_image(path: Path, size=(20, 20), color=(255, 0, 0), fmt=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path, format=fmt)


def make_tree(root: Path):
    colors = {"cat": (200, 30, 30), "dog": (30, 200, 30)}
    for split, n in (("train", 3), ("test", 2)):
        for cls, col in colors.items():
            for i in range(n):
                ext = "png" if i % 2 else "jpg"
                write_image(root / split / cls / f"{i}.{ext}", (24 + 4 * i, 16), col)


def test_image_folder_splits_classes_and_crop(tmp_path):
    make_tree(tmp_path / "imgs")
    ds = DATASET.build({"type": "image_folder", "root": str(tmp_path / "imgs")}, 8)
    check_common(ds, 6, 3, 8, 2)
    assert ds.class_names == ["cat", "dog"] and ds.labels.tolist() == [0, 0, 0, 1, 1, 1]
    red = ds.images[ds.labels == 0].float().mean((0, 2, 3))
    assert red[0] > 150 and red[1] < 80  # colours survive decode + resize + crop
    test = DATASET.build({"type": "image_folder", "root": str(tmp_path / "imgs")}, 8, split="test")
    check_common(test, 4, 3, 8, 2)
    with pytest.raises(MissingSplitError, match=r"no 'val' split folder \(found: test, train\)"):
        DATASET.build({"type": "image_folder", "root": str(tmp_path / "imgs")}, 8, split="val")
    grey = DATASET.build({"type": "image_folder", "root": str(tmp_path / "imgs"), "channels": 1}, 8)
    check_common(grey, 6, 1, 8, 2)


def test_image_folder_tar_gz_matches_folder(tmp_path):
    make_tree(tmp_path / "imgs")
    for name in ("data.tar.gz", "data.tar"):
        with tarfile.open(tmp_path / name, "w:gz" if name.endswith("gz") else "w") as tf:
            tf.add(tmp_path / "imgs", arcname="wrapped")  # one wrapping folder, as archives often have
        a = DATASET.build({"type": "image_folder", "root": str(tmp_path / name)}, 12, split="test")
        b = DATASET.build({"type": "image_folder", "root": str(tmp_path / "imgs")}, 12, split="test")
        assert a.content_hash == b.content_hash and a.class_names == ["cat", "dog"]


def test_image_folder_flat_max_images_and_reference_fallback(tmp_path):
    for i in range(10):
        write_image(tmp_path / "flat" / f"{i:02d}.png", (10, 10), (i * 20, 0, 0))
    ds = DATASET.build({"type": "image_folder", "root": str(tmp_path / "flat"), "max_images": 4}, 10)
    check_common(ds, 4, 3, 10, 1)
    again = DATASET.build({"type": "image_folder", "root": str(tmp_path / "flat"), "max_images": 4}, 10)
    assert again.content_hash == ds.content_hash and again.cache_hit
    other = DATASET.build({"type": "image_folder", "root": str(tmp_path / "flat"), "max_images": 4,
                           "subset_seed": 1}, 10)
    assert other.content_hash != ds.content_hash
    cfg = DATASET.get("image_folder").config(root=str(tmp_path / "flat"))
    recipe = SimpleNamespace(data=cfg, eval=SimpleNamespace(reference=None), resolution=10, channels=3, num_classes=0)
    with pytest.warns(UserWarning, match="no 'test' split.*using its train split"):
        ref = build_reference(recipe)
    assert len(ref) == 10
    # a new file changes the folder's identity: no stale cache
    write_image(tmp_path / "flat" / "99.png", (10, 10))
    assert len(DATASET.build({"type": "image_folder", "root": str(tmp_path / "flat")}, 10)) == 11


def test_image_folder_errors(tmp_path):
    missing = tmp_path / "missing"
    with pytest.raises(DatasetError) as e:
        DATASET.build({"type": "image_folder", "root": str(missing)}, 8)
    assert str(e.value).startswith(f"data.root: {missing}: not found")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match=r"^data\.root: .*empty: no images found"):
        DATASET.build({"type": "image_folder", "root": str(tmp_path / "empty")}, 8)
    write_image(tmp_path / "bad" / "a" / "ok.png")
    (tmp_path / "bad" / "a" / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    with pytest.raises(DatasetError, match=r"^data\.root: .*bad/a/broken\.jpg: cannot read image"):
        DATASET.build({"type": "image_folder", "root": str(tmp_path / "bad")}, 8)
    write_image(tmp_path / "mixed" / "loose.png")
    write_image(tmp_path / "mixed" / "cls" / "x.png")
    with pytest.raises(DatasetError, match="mixes loose images"):
        DATASET.build({"type": "image_folder", "root": str(tmp_path / "mixed")}, 8)
    cfg = DATASET.get("image_folder").config(root="x")
    assert cfg.recipe_problems(SimpleNamespace(channels=3, num_classes=0)) == []
    assert cfg.recipe_problems(SimpleNamespace(channels=1, num_classes=0))[0][0] == ("channels",)


# ----------------------------------------------------------------------------- fashion_mnist
def write_idx(path: Path, arr: np.ndarray) -> None:
    header = bytes([0, 0, 8, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    path.write_bytes(gzip.compress(header + arr.astype(np.uint8).tobytes()))


def test_fashion_mnist_idx(tmp_path):
    root = tmp_path / "fm"
    root.mkdir()
    rng = np.random.default_rng(0)
    x = np.full((7, 28, 28), 255, np.uint8)
    x[:, 10, 10] = rng.integers(0, 255, 7)
    write_idx(root / "train-images-idx3-ubyte.gz", x)
    write_idx(root / "train-labels-idx1-ubyte.gz", np.arange(7) % 10)
    write_idx(root / "t10k-images-idx3-ubyte.gz", x[:3])
    write_idx(root / "t10k-labels-idx1-ubyte.gz", np.array([9, 0, 1]))
    ds = DATASET.build({"type": "fashion_mnist", "root": str(root)}, 32)
    check_common(ds, 7, 1, 32, 10)
    img = ds.images[0, 0]
    assert img[:2].max() == 0 and img[:, -2:].max() == 0  # padded with a black border
    assert torch.equal(ds.images[:, 0, 2:30, 2:30], torch.from_numpy(x))  # the 28x28 content, untouched
    test = DATASET.build({"type": "fashion_mnist", "root": str(root), "channels": 3, "fit": "resize"}, 16,
                         split="test")
    check_common(test, 3, 3, 16, 10)
    assert test.labels.tolist() == [9, 0, 1]
    assert DATASET.build({"type": "fashion_mnist", "root": str(root)}, 32).cache_hit
    (root / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DatasetError, match=r"^data\.root: .*fm: missing t10k-labels-idx1-ubyte\.gz"):
        DATASET.build({"type": "fashion_mnist", "root": str(root)}, 32, split="test")
    (root / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(b"\x00\x00\x08\x01\x00\x00\x00\x05ab"))
    with pytest.raises(DatasetError, match="holds 2 bytes of data, its header says 5"):
        DATASET.build({"type": "fashion_mnist", "root": str(root)}, 32, split="test")
    with pytest.raises(DatasetError, match=r"^data\.root: .*nope: not found"):
        DATASET.build({"type": "fashion_mnist", "root": str(tmp_path / "nope")}, 32)
    cfg = DATASET.get("fashion_mnist").config()
    assert cfg.recipe_problems(SimpleNamespace(channels=1, num_classes=10)) == []
    assert cfg.recipe_problems(SimpleNamespace(channels=3, num_classes=0))


# ----------------------------------------------------------------------------- helpers
def test_device_and_batch_helpers():
    ds = DATASET.build({"type": "synthetic", "num_images": 32, "cache": False}, 16)
    assert to_device(ds, "cpu") is True
    x = to_float(ds.images)
    assert x.dtype == torch.float32 and x.min() >= -1 and x.max() <= 1
    assert to_float(torch.tensor([0, 255], dtype=torch.uint8)).tolist() == [-1.0, 1.0]
    g = torch.Generator().manual_seed(0)
    xb, yb = sample_batch(ds, 5, g)
    assert xb.shape == (5, 3, 16, 16) and yb.shape == (5,) and yb.dtype == torch.int64


def test_atomic_write_leaves_no_partial_file(tmp_path):
    target = tmp_path / "x.npz"

    def boom(f):
        f.write(b"partial")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        _cache.atomic_write(target, boom)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("content", [b"garbage\n", b"\x1f\x8b\x08\x00 truncated gzip", b""])
def test_a_file_that_is_no_tar_archive_is_one_line(tmp_path, content):
    """tarfile's own error lists every compression it tried, one line each; ganzoo's is one line."""
    from ganzoo.datasets._images import list_archive, read_archive_members

    bad = tmp_path / "bad.tar.gz"
    bad.write_bytes(content)
    for read in (list_archive, lambda p: read_archive_members(p, None)):
        with pytest.raises(DatasetError) as e:
            read(bad)
        assert str(bad) in str(e.value) and "\n" not in str(e.value), str(e.value)
