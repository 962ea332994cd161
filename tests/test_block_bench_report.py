"""`ganzoo report --block-bench attention.json` (issue 20): each variant's attention block, timed and measured
by benchmarks/attention.py's variants table, beside the variant's FID."""
from __future__ import annotations

import json
import runpy

import pytest

from conftest import REPO, run_ganzoo

RUNS = REPO / "docs" / "ablations" / "runs"


@pytest.fixture(scope="module")
def bench_json(tmp_path_factory):
    """A real variants table, measured on the CPU at a tiny shape (8x8, C16, batch 2)."""
    out = tmp_path_factory.mktemp("bench")
    main = runpy.run_path(str(REPO / "benchmarks" / "attention.py"), run_name="_bench_attention")["main"]
    assert main(["--variants-only", "--device", "cpu", "--variant-shapes", "8:16", "--batch", "2",
                 "--rep-ms", "5", "--out", str(out)]) == 0
    return out / "attention.json"


def test_report_puts_each_variants_block_time_beside_its_fid(bench_json, tmp_path):
    rows = {r["name"]: r for r in json.loads(bench_json.read_text())["variants"] if r["dtype"] == "bfloat16"}
    out = tmp_path / "r.md"
    res = run_ganzoo("report", str(RUNS / "ablation-none-s0"), str(RUNS / "ablation-feat16-s0"), "--out", str(out),
                     "--no-paper-table", "--block-bench", str(bench_json))
    assert res.returncode == 0, res.stderr
    section = out.read_text().split("## Attention blocks: speed and memory", 1)[1].split("\n## ", 1)[0]
    assert "| variant | block | final FID | 8x8, C16 |" in section and "bf16 autocast, batch 2" in section
    table = {line.split("|")[1].strip(): line for line in section.splitlines() if line.startswith("| ablation-")}
    assert "| `none` |" in table["ablation-none"] and f"{rows['none']['ms']:.2f} ms |" in table["ablation-none"]
    assert "| `sagan` |" in table["ablation-feat16"] and f"{rows['sagan']['ms']:.2f} ms |" in table["ablation-feat16"]
    fid = json.loads([line for line in (RUNS / "ablation-feat16-s0" / "metrics.jsonl").read_text().splitlines()
                      if "eval/fid" in line][-1])["eval/fid"]
    assert f"| {fid:.2f} |" in table["ablation-feat16"]  # the run's final FID, one seed


def test_a_bad_block_bench_file_is_one_line(tmp_path):
    bad = tmp_path / "x.json"
    for text, message in (("not json", "cannot read --block-bench"), ('{"blocks": []}', "no 'variants' table"),
                          ('{"variants": [{"name": "sagan"}]}', "variants[0] lacks size, C, dtype")):
        bad.write_text(text)
        res = run_ganzoo("report", str(RUNS / "ablation-none-s0"), "--out", str(tmp_path / "r.md"),
                         "--block-bench", str(bad))
        assert res.returncode == 2 and message in res.stderr and "Traceback" not in res.stderr, res.stderr
        assert len(res.stderr.strip().splitlines()) == 1 and not (tmp_path / "r.md").exists()
