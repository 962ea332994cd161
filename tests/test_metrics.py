"""Metrics through torch-fidelity's FID Inception with the shared weights (real network, CPU, few images)."""
from __future__ import annotations

import hashlib
import os
import pickle
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from ganzoo.errors import GanzooError
from ganzoo.metrics import (
    MetricError,
    as_rgb_uint8,
    classifier_is_zero,
    evaluate,
    evaluate_recipe,
    images_fn,
    inception_features,
    resolve_weights,
    to_uint8,
)
from ganzoo.metrics._inception import weights_sha256
from ganzoo.metrics.fid import frechet_distance
from ganzoo.registry import DATASET, METRIC

REPO = Path(__file__).resolve().parents[1]
WEIGHTS = REPO.parent / "shared" / "weights" / "fid-inception-2015-12-05.pth"
CIFAR = REPO.parent / "shared" / "data" / "cifar10-jpeg.tar.gz"
N = 10  # images per set in the fast tests: the Inception net costs ~0.1-0.4 s per image on 2 CPU cores

needs_weights = pytest.mark.skipif(not WEIGHTS.is_file(), reason=f"shared FID Inception weights not found at {WEIGHTS}")
needs_cifar = pytest.mark.skipif(not CIFAR.is_file(), reason=f"shared CIFAR-10 JPEG archive not found at {CIFAR}")


@pytest.fixture(autouse=True)
def _env(tmp_path, monkeypatch):
    monkeypatch.setenv("GANZOO_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("GANZOO_INCEPTION_WEIGHTS", raising=False)


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    """Real CIFAR-10 test images (A) and synthetic shapes (B), and FID/KID of A and B against A."""
    if not (WEIGHTS.is_file() and CIFAR.is_file()):
        pytest.skip(f"needs {WEIGHTS} and {CIFAR}")
    mp = pytest.MonkeyPatch()
    mp.setenv("GANZOO_CACHE", str(tmp_path_factory.mktemp("data-cache")))
    a = DATASET.build({"type": "cifar10", "root": str(CIFAR), "max_images": N}, 32, split="test")
    b = DATASET.build({"type": "synthetic", "num_images": N}, 32)
    mp.undo()
    cache = tmp_path_factory.mktemp("metric-cache")
    kw = dict(num_samples=N, batch_size=N, weights=str(WEIGHTS), cache_dir=cache)
    t = time.perf_counter()
    aa = evaluate(["fid", "kid"], images_fn(a.images), a, **kw)
    ba = evaluate(["fid", "kid"], images_fn(b.images), a, **kw)
    seconds = time.perf_counter() - t
    return SimpleNamespace(a=a, b=b, aa=aa, ba=ba, cache=cache, kw=kw, seconds=seconds)


# ----------------------------------------------------------------------------- values
@needs_weights
def test_fid_and_kid_of_a_set_against_itself_are_near_zero(sets):
    assert abs(sets.aa["fid"]) < 1e-3
    assert sets.ba["fid"] > 100  # CIFAR photos vs coloured shapes
    assert sets.ba["kid"] > 0.05
    # On an identical set torch-fidelity's unbiased MMD^2 is not 0 but ~ -2 (mean k(x,x) - mean k(x,y)) / m
    # (the cross term keeps the diagonal): recompute it from the features with KID's kernel
    # (x.y / 2048 + 1)^3 and check evaluate() wired the kernel and the adapted subset size (m = N) right.
    f = inception_features(sets.a.images, weights=str(WEIGHTS))["pool"].double()
    k = (f @ f.T / f.shape[1] + 1) ** 3
    m, diag, off = N, k.diagonal().sum(), k.sum() - k.diagonal().sum()
    expected = float(2 * off / (m * (m - 1)) - 2 * (off + diag) / m**2)
    assert sets.aa["kid"] == pytest.approx(expected, rel=1e-3)
    assert sets.aa["kid_std"] < 1e-5  # every subset is the whole set
    assert abs(sets.aa["kid"]) <= 2 * float(k.diagonal().mean()) / m  # -> 0 as the set grows
    # the subset size adapted to the 10 samples instead of failing on torch-fidelity's default of 1000
    assert set(sets.aa) == {"fid", "kid", "kid_std"}


@needs_weights
def test_reference_stats_are_cached_and_keyed_by_content(sets):
    files = sorted(p.name.split("-")[0] for p in (sets.cache / "reference").iterdir())
    assert files == ["fid", "kid"]
    # same content hash, different pixels: a cache hit must not look at the pixels again
    blank = SimpleNamespace(images=torch.zeros_like(sets.a.images), content_hash=sets.a.content_hash)
    again = evaluate(["fid", "kid"], images_fn(sets.a.images), blank, **sets.kw)
    assert again["fid"] == pytest.approx(sets.aa["fid"], abs=1e-6) and again["kid"] == pytest.approx(sets.aa["kid"])
    # a different content hash misses the cache: the blank images are really extracted
    other = SimpleNamespace(images=blank.images, content_hash="0" * 64)
    assert evaluate(["fid"], images_fn(sets.a.images), other, **sets.kw)["fid"] > 100


@needs_weights
def test_evaluate_recipe_uses_the_eval_section(sets, monkeypatch):
    cfg = DATASET.get("cifar10").config(root=str(CIFAR), max_images=N)
    recipe = SimpleNamespace(
        data=cfg, resolution=32, channels=3, num_classes=10,
        eval=SimpleNamespace(metrics=["fid"], num_samples=N, batch_size=6, inception_weights=None, reference=None),
    )
    monkeypatch.setenv("GANZOO_INCEPTION_WEIGHTS", str(WEIGHTS))  # env is used when the field is unset
    out = evaluate_recipe(recipe, images_fn(sets.b.images), cache_dir=sets.cache)
    assert out["fid"] == pytest.approx(sets.ba["fid"], rel=1e-4)  # batch size does not change the value


# ----------------------------------------------------------------------------- refusals
@needs_weights
def test_inception_score_refused_with_zero_classifier():
    assert classifier_is_zero(WEIGHTS)
    calls = []

    def generate(n):
        calls.append(n)
        return torch.zeros(n, 3, 32, 32, dtype=torch.uint8)

    with pytest.raises(MetricError) as e:
        evaluate(["fid", "is"], generate, None, num_samples=4, weights=str(WEIGHTS))
    msg = str(e.value)
    assert msg.startswith("eval.metrics: Inception Score needs the Inception classifier")
    assert str(WEIGHTS) in msg and "all zeros" in msg and "\n" not in msg
    assert calls == []  # refused before generating anything
    cfg = METRIC.get("is").config()
    problems = cfg.recipe_problems(SimpleNamespace(eval=SimpleNamespace(inception_weights=str(WEIGHTS))))
    assert problems and "all zeros" in problems[0][1]


@needs_weights
def test_inception_score_with_a_real_classifier(tmp_path, sets):
    sd = torch.load(WEIGHTS, map_location="cpu", weights_only=True)
    g = torch.Generator().manual_seed(0)
    sd["fc.weight"] = torch.randn(sd["fc.weight"].shape, generator=g) * 0.05
    path = tmp_path / "with-fc.pth"
    torch.save(sd, path)
    assert not classifier_is_zero(path)
    out = evaluate([{"type": "is", "splits": 10}], images_fn(sets.b.images[:6]), None, num_samples=6,
                   batch_size=6, weights=str(path))
    assert out["is"] > 1.001 and out["is_std"] >= 0  # 3 splits of 2 (not 6 splits of 1, where IS == 1)


def test_missing_weights_error_names_both_options(tmp_path, monkeypatch):
    with pytest.raises(MetricError) as e:
        evaluate(["fid"], lambda n: None, None, num_samples=4)
    msg = str(e.value)
    assert msg.startswith("eval.inception_weights: Inception weights not set")
    assert "GANZOO_INCEPTION_WEIGHTS" in msg and "nothing is downloaded" in msg and isinstance(e.value, GanzooError)
    with pytest.raises(MetricError, match=rf"^eval\.inception_weights: {tmp_path}/nope\.pth: not found"):
        resolve_weights(str(tmp_path / "nope.pth"))
    monkeypatch.setenv("GANZOO_INCEPTION_WEIGHTS", str(tmp_path / "env.pth"))
    with pytest.raises(MetricError, match=r"^GANZOO_INCEPTION_WEIGHTS: .*env\.pth: not found"):
        resolve_weights(None)
    (tmp_path / "env.pth").write_bytes(b"garbage")
    with pytest.raises(MetricError, match="cannot load as a weights-only state dict"):
        evaluate(["is"], lambda n: None, None, num_samples=4)


def test_unsafe_weights_file_is_not_unpickled(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "evil.pth"
    torch.save({"fc.weight": Evil()}, path, pickle_protocol=2)
    with pytest.raises(MetricError, match="cannot load as a weights-only state dict"):
        classifier_is_zero(path)
    assert not marker.exists()


def test_reference_required_for_fid(tmp_path):
    (tmp_path / "w.pth").write_bytes(b"x")
    with pytest.raises(MetricError, match=r"^eval\.reference: fid, kid need reference images"):
        evaluate(["fid", "kid"], lambda n: None, None, num_samples=4, weights=str(tmp_path / "w.pth"))


# ----------------------------------------------------------------------------- pieces
def test_frechet_distance_matches_torch_fidelity():
    from torch_fidelity.metric_fid import fid_statistics_to_metric

    rng = np.random.default_rng(0)
    d = 64
    for n1, n2 in ((200, 30), (200, 300)):  # generated side smaller and larger than the feature dim
        x1 = rng.normal(size=(n1, d)) @ rng.normal(size=(d, d)) * 0.3
        x2 = rng.normal(size=(n2, d)) * 0.8 + 0.5
        s1 = {"mu": x1.mean(0), "sigma": np.cov(x1, rowvar=False)}
        s2 = {"mu": x2.mean(0), "sigma": np.cov(x2, rowvar=False)}
        ours = frechet_distance(s1["mu"], s1["sigma"], s2["mu"], s2["sigma"], x2)
        theirs = fid_statistics_to_metric(s1, s2, verbose=False)["frechet_inception_distance"]
        assert ours == pytest.approx(theirs, rel=1e-6)
        assert frechet_distance(s1["mu"], s1["sigma"], s1["mu"], s1["sigma"], x1) == pytest.approx(0, abs=1e-8)


def test_kid_matches_torch_fidelity():
    """Same subsets, same unbiased estimator as torch-fidelity's NumPy loop (which it replaces for
    speed); subset sizes below and at the sample count, default and explicit kernel settings."""
    from torch_fidelity.metric_kid import kid_features_to_metric

    from ganzoo.metrics.kid import subset_mmds

    g = torch.Generator().manual_seed(0)
    x = torch.randn(300, 48, generator=g) @ torch.randn(48, 48, generator=g) * 0.3
    y = torch.randn(250, 48, generator=g) * 0.8 + 0.2
    for size, degree, gamma, coef0, subsets in ((40, 3, None, 1.0, 7), (250, 2, 0.05, 0.5, 3)):
        theirs = kid_features_to_metric(x, y, kid_subsets=subsets, kid_subset_size=size, kid_kernel="poly",
                                        kid_kernel_poly_degree=degree, kid_kernel_poly_gamma=gamma,
                                        kid_kernel_poly_coef0=coef0, rng_seed=11, verbose=False)
        for max_elements in (1, 1 << 25):  # one subset per matmul, and all of them in one
            mmds = subset_mmds(x, y, subsets=subsets, subset_size=size, degree=degree, gamma=gamma,
                               coef0=coef0, seed=11, max_elements=max_elements)
            assert mmds.shape == (subsets,)
            assert mmds.mean() == pytest.approx(theirs["kernel_inception_distance_mean"], rel=1e-4, abs=1e-7)
            assert mmds.std() == pytest.approx(theirs["kernel_inception_distance_std"], rel=1e-3, abs=1e-7)
    # different distributions give a clearly positive KID; a set against itself about zero
    a, b = torch.randn(2, 400, 48, generator=g)
    same = subset_mmds(a, b, subsets=5, subset_size=100, degree=3, gamma=None, coef0=1.0, seed=0)
    other = subset_mmds(a, b * 1.5 + 0.5, subsets=5, subset_size=100, degree=3, gamma=None, coef0=1.0, seed=0)
    assert abs(same.mean()) < other.mean() / 20


def test_fid_statistics_match_numpy():
    from ganzoo.metrics.fid import feature_statistics

    x = torch.randn(40, 6, generator=torch.Generator().manual_seed(1)) * 3 + 1
    mu, sigma = feature_statistics(x)
    assert mu.dtype == sigma.dtype == torch.float64
    np.testing.assert_allclose(mu.numpy(), x.double().numpy().mean(0), rtol=1e-12)
    np.testing.assert_allclose(sigma.numpy(), np.cov(x.double().numpy(), rowvar=False), rtol=1e-10, atol=1e-12)


def test_images_are_converted_for_inception():
    grey = torch.arange(16, dtype=torch.uint8).reshape(1, 1, 4, 4)
    rgb = as_rgb_uint8(grey)
    assert rgb.shape == (1, 3, 4, 4) and torch.equal(rgb[:, 0], rgb[:, 2]) and torch.equal(rgb[:, 1], grey[:, 0])
    assert as_rgb_uint8(torch.zeros(2, 4, 4, 4, dtype=torch.uint8)).shape == (2, 3, 4, 4)
    assert to_uint8(torch.tensor([-1.0, 0.0, 1.0, 3.0])).tolist() == [0, 128, 255, 255]
    assert as_rgb_uint8(torch.full((1, 3, 2, 2), -1.0)).max() == 0
    with pytest.raises(MetricError, match="1, 3 or 4 channels"):
        as_rgb_uint8(torch.zeros(1, 2, 4, 4, dtype=torch.uint8))


def test_kid_subset_size_adapts():
    kid = METRIC.build({"type": "kid", "subset_size": 50})
    assert kid.subset_size(1000, 1000) == 50 and kid.subset_size(20, 1000) == 20 and kid.subset_size(900, 7) == 7
    assert METRIC.build("kid").subset_size(10000, 10000) == 1000


def test_weights_hash_is_cached_by_identity(tmp_path):
    f = tmp_path / "w.bin"
    f.write_bytes(b"abc" * 1000)
    assert weights_sha256(f, tmp_path / "c") == hashlib.sha256(b"abc" * 1000).hexdigest()
    assert len(list((tmp_path / "c" / "hashes").iterdir())) == 1
    f.write_bytes(b"xyz" * 1001)  # new size and mtime -> new key, new hash
    assert weights_sha256(f, tmp_path / "c") == hashlib.sha256(b"xyz" * 1001).hexdigest()


def test_duplicate_metrics_are_an_error():
    with pytest.raises(MetricError, match="fid listed more than once"):
        evaluate(["fid", "fid"], lambda n: None, None, num_samples=4)


# ----------------------------------------------------------------------------- real splits
@pytest.mark.slow
@needs_weights
@needs_cifar
def test_cifar_train_vs_test_fid_is_small_and_stable(tmp_path):
    n = 250
    train = DATASET.build({"type": "cifar10", "root": str(CIFAR), "max_images": n}, 32, split="train")
    test = DATASET.build({"type": "cifar10", "root": str(CIFAR), "max_images": n}, 32, split="test")
    kw = dict(num_samples=n, batch_size=50, weights=str(WEIGHTS), cache_dir=tmp_path / "m")
    t = time.perf_counter()
    first = evaluate(["fid", "kid"], images_fn(test.images), train, **kw)
    t1 = time.perf_counter() - t
    second = evaluate(["fid", "kid"], images_fn(test.images), train, **kw)  # reference from the cache
    t2 = time.perf_counter() - t - t1
    print(f"\nCIFAR-10 train vs test, {n} images each: {first} ({t1:.1f}s, then {t2:.1f}s with cached reference)")
    assert first["fid"] == pytest.approx(second["fid"], rel=1e-6)
    assert first["kid"] == pytest.approx(second["kid"], rel=1e-6)
    # FID of 250 vs 250 samples is dominated by small-sample bias; same-distribution splits stay well
    # below the ~300+ of CIFAR against anything else (the synthetic shapes give ~500)
    assert 0 < first["fid"] < 130  # measured: 114.3
    assert abs(first["kid"]) < 0.02
