"""Shared test fixtures and options.

GPU tests are marked ``gpu`` and skipped where CUDA is absent; run them on a GPU machine with
``pytest -m gpu``.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import settings as _hypothesis_settings

# every hypothesis test sees the same examples on every run (CI is not a lottery: random examples
# once found a dead ReLU bottleneck at batch 1); a test's own settings() inherit this
_hypothesis_settings.register_profile("ganzoo", derandomize=True, database=None)
_hypothesis_settings.load_profile("ganzoo")

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


def pytest_collection_modifyitems(config, items):
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except Exception:  # pragma: no cover
        has_cuda = False
    if has_cuda:
        return
    skip = pytest.mark.skip(reason="needs CUDA (run with the device tool: pytest -m gpu)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="module")
def one_cpu_thread():
    """One intra-op thread for a module of tiny-tensor tests: extra threads only spin against each
    other on the shared 2-core machines (pytest -n 2 already fills both cores), and one thread keeps
    CPU results bit-identical between runs. Use with ``pytestmark = pytest.mark.usefixtures(...)``."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def kit_cases(*kinds: str) -> list:
    """The conformance kit's checks of ``kinds`` (``ganzoo.testing.conformance``: exactly what ``ganzoo
    check`` runs) on CPU and CUDA (marked ``gpu``), as pytest params with ids ``<kind>-<name>-<precision>``."""
    from ganzoo.testing.conformance import iter_checks

    return [pytest.param(c.run, id=f"{c.kind}-{c.name}-{c.precision}", marks=[pytest.mark.gpu] if dev == "cuda" else [])
            for dev in ("cpu", "cuda") for c in iter_checks(kinds=kinds, device=dev)]


def tiny_recipe(**overrides) -> dict:
    """A tiny class-conditional SAGAN recipe (synthetic data, widths 4) as a plain mapping, for fast CPU
    runs; ``overrides`` are deep-merged into it (``tiny_recipe(seed=5, train={"steps": 4})``)."""
    from ganzoo.recipe import deep_merge

    base = {
        "name": "tiny",
        "seed": 3,
        "resolution": 32,
        "num_classes": 10,
        "data": {"type": "synthetic", "num_images": 40, "num_test_images": 16},
        "generator": {"type": "resnet", "ch": 4, "z_dim": 16, "attention": "sagan", "attention_resolutions": [16]},
        "discriminator": {"type": "resnet", "ch": 4, "attention": "sagan", "attention_resolutions": [16]},
        "loss": "hinge",
    }
    return deep_merge(base, overrides)


def run_ganzoo(*args: str, cwd: Path | str = REPO, env: dict | None = None, timeout: float = 600):
    """Run ``python -m ganzoo ARGS`` in a subprocess; returns CompletedProcess (text)."""
    full_env = {**os.environ, "PYTHONWARNINGS": "default", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "ganzoo", *args], cwd=cwd, env=full_env, capture_output=True, text=True,
        timeout=timeout,
    )


@pytest.fixture
def ganzoo_cli():
    return run_ganzoo


def assert_matches_float64(out, ref, leaves) -> None:
    """``out`` (a block's output) equals ``ref`` (its float64 reference) to 1e-5, and after backward of the
    same random weighting through both, each ``(fast, ref)`` leaf pair in ``leaves`` has equal gradients
    to 1e-4."""
    import torch

    assert ref.dtype == torch.float64
    torch.testing.assert_close(out.double(), ref, rtol=1e-5, atol=1e-5)
    r = torch.randn(out.shape, dtype=torch.float64)
    (out.double() * r).sum().backward()
    (ref * r).sum().backward()
    for fast, slow in leaves:
        torch.testing.assert_close(fast.grad.double(), slow.grad, rtol=1e-4, atol=1e-4)
