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
