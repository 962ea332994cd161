"""benchmarks/attention.py's variants table (issue 20), on the CPU at a tiny shape.

Every registered attention block (plugins included) gets a row per dtype with a positive time and its
parameter count; a block that fails to build or to run gets a row with its one-line error and the rest
of the table is still measured. Times are never compared (no speed assertions).
"""
from __future__ import annotations

import json
import math
import runpy
from pathlib import Path
from typing import Literal

import pytest
from torch import nn

from ganzoo.config import BlockConfig
from ganzoo.registry import ATTENTION

ROOT = Path(__file__).resolve().parents[1]
FIELDS = {"table", "name", "source", "size", "C", "dtype", "autocast", "batch", "params", "peak_gib", "ms"}


@pytest.fixture(scope="module")
def bench():
    """The script's functions (``main`` among them), loaded from its file."""
    return runpy.run_path(str(ROOT / "benchmarks" / "attention.py"), run_name="_bench_attention")


def _variants(bench, out: Path, *extra: str) -> list[dict]:
    """Run the variants table alone on the CPU (8x8, C=16, batch 2); its rows from attention.json."""
    assert bench["main"](["--variants-only", "--device", "cpu", "--variant-shapes", "8:16", "--batch", "2",
                          "--rep-ms", "5", "--out", str(out), *extra]) == 0
    saved = json.loads((out / "attention.json").read_text())
    assert saved["blocks"] == [] and saved["ops"] == []
    jsonl = [json.loads(line) for line in (out / "rows.jsonl").read_text().splitlines()[1:]]
    assert jsonl == saved["variants"]  # each row is also appended as it is measured
    assert "### Attention variants" in (out / "attention.md").read_text()
    return saved["variants"]


def test_every_registered_attention_block_has_a_row_in_both_dtypes(bench, tmp_path):
    rows = _variants(bench, tmp_path)
    names = ATTENTION.names()
    assert "none" in names and "sagan" in names
    for dtype, autocast in (("float32", False), ("bfloat16", True)):
        got = {r["name"]: r for r in rows if r["dtype"] == dtype}
        assert sorted(got) == names
        for name, r in got.items():
            assert "error" not in r, r
            assert set(r) == FIELDS, r
            assert (r["table"], r["size"], r["C"], r["batch"], r["autocast"]) == ("variants", 8, 16, 2, autocast)
            assert r["source"] == ATTENTION.get(name).source
            assert math.isfinite(r["ms"]) and r["ms"] > 0, r
            assert r["peak_gib"] is None  # no memory figure off the GPU
            assert r["params"] == sum(p.numel() for p in ATTENTION.build(name, 16).parameters())
    assert got["none"]["params"] == 0 and got["sagan"]["params"] > 0


class _RunFailsConfig(BlockConfig):
    type: Literal["bench_test_fails_to_run"] = "bench_test_fails_to_run"


class _RunFails(nn.Module):
    """Builds, then raises in its forward (two-line message: the row keeps the first)."""

    parameter_free = True

    def __init__(self, cfg, channels):
        super().__init__()

    def forward(self, x):
        raise RuntimeError("deliberately broken forward\nsecond line")


class _BuildFailsConfig(BlockConfig):
    type: Literal["bench_test_fails_to_build"] = "bench_test_fails_to_build"


class _BuildFails(nn.Identity):
    """Raises when built."""

    def __init__(self, cfg, channels):
        raise ValueError(f"deliberately unbuildable at {channels} channels")


@pytest.fixture
def broken_blocks():
    ATTENTION.register(_RunFailsConfig, _RunFails)
    ATTENTION.register(_BuildFailsConfig, _BuildFails)
    try:
        yield
    finally:
        ATTENTION.unregister("bench_test_fails_to_run")
        ATTENTION.unregister("bench_test_fails_to_build")


def test_a_broken_block_gives_an_error_row_and_the_others_are_measured(bench, tmp_path, broken_blocks):
    rows = {r["name"]: r for r in _variants(bench, tmp_path, "--dtypes", "fp32")}
    assert sorted(rows) == ATTENTION.names()
    assert rows["bench_test_fails_to_run"]["error"] == "RuntimeError: deliberately broken forward"
    assert rows["bench_test_fails_to_run"]["params"] == 0  # it was built: the count is kept
    assert rows["bench_test_fails_to_build"]["error"] == "ValueError: deliberately unbuildable at 16 channels"
    assert rows["bench_test_fails_to_build"]["params"] is None
    for name, r in rows.items():
        assert "ms" not in r if name.startswith("bench_test_") else r["ms"] > 0, r
    md = (tmp_path / "attention.md").read_text()
    assert "| bench_test_fails_to_run (builtin) | 0 | RuntimeError: deliberately broken forward |" in md


def test_variant_shapes_must_be_size_colon_channels(bench):
    assert bench["_size_c"]("32:256") == (32, 256)
    with pytest.raises(SystemExit):
        bench["main"](["--variants-only", "--device", "cpu", "--variant-shapes", "32x256"])
