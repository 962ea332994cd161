"""Option values a command cannot use (an audit of the CLI): a seed too large for torch, a negative or zero
--columns, export into a run folder or over a user's files, ablate with duplicate seeds or run names, --minutes
nan, --seeds -1, --out a file. Each is one line on stderr naming the option (or file), exit 2, no traceback,
nothing written; every refusal test here failed on the code before the fix."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from conftest import REPO, run_ganzoo, tiny_recipe

QUICKSTART = REPO / "recipes" / "quickstart.yaml"
ENV = {"OMP_NUM_THREADS": "1", "GANZOO_DISABLE_PLUGINS": "1"}
HUGE = str(10**23)  # torch: "Overflow when unpacking long long"


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")}


def one_error(out, start: str) -> str:
    """Exit 2, exactly one line on stderr that starts with ``start``, no traceback; returns the line."""
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2, out.stdout + out.stderr
    assert "Traceback" not in out.stderr and len(lines) == 1, out.stderr
    assert lines[0].startswith(start), lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A finished 1-step CPU run of the suite's tiny recipe (no evaluation): seconds."""
    tmp = tmp_path_factory.mktemp("args")
    recipe = tmp / "tiny.yaml"
    recipe.write_text(yaml.safe_dump(tiny_recipe(
        data={"num_images": 8, "num_test_images": 4}, generator={"z_dim": 8}, eval={"metrics": []},
        train={"steps": 1, "batch_size": 4, "log_every": 1, "sample_every": 0, "checkpoint_every": 1})))
    out = run_ganzoo("run", str(recipe), "--out", str(tmp / "runs"), "--device", "cpu", "--no-progress",
                     cwd=tmp, env=ENV)
    assert out.returncode == 0, out.stderr
    return tmp / "runs" / "tiny"


def _recipe(path: Path, name: str) -> str:
    path.write_text(f"base: {QUICKSTART}\nname: {name}\n")
    return str(path)


# (argv with RUN, OUT and TMP placeholders, the start of the one error line)
REFUSED = {
    "sample-seed-huge": (["sample", "RUN", "--out", "OUT/g.png", "--seed", HUGE], "sample: --seed must be"),
    "sample-seed-2**63": (["sample", "RUN", "--out", "OUT/g.png", "--seed", str(2**63)], "sample: --seed must be"),
    "eval-seed-huge": (["eval", "RUN", "--metrics", "kid", "--seed", HUGE], "eval: --seed must be"),
    "attention-maps-seed-huge": (["attention-maps", "RUN", "--out", "OUT/a.png", "--seed", HUGE],
                                 "attention-maps: --seed must be"),
    "sample-columns-negative": (["sample", "RUN", "--out", "OUT/g.png", "--columns", "-3"],
                                "sample: --columns must be at least 1"),
    "sample-columns-0": (["sample", "RUN", "--out", "OUT/g.png", "--columns", "0"],
                         "sample: --columns must be at least 1"),
    "export-into-the-run": (["export", "RUN", "--out", "RUN"], "export: --out RUN: is a run folder"),
    "export-over-user-files": (["export", "RUN", "--out", "TMP/mine"],
                               "export: --out TMP/mine: holds files ganzoo export did not write (recipe.yaml)"),
    "ablate-seeds-twice": (["ablate", "QUICK", "--seeds", "0", "0"], "ablate: --seeds: 0 given more than once"),
    "ablate-recipe-twice": (["ablate", "QUICK", "QUICK", "--seeds", "0"], "ablate: QUICK: given twice"),
    "ablate-same-names": (["ablate", "TMP/a.yaml", "TMP/b.yaml", "--seeds", "0"],
                          "ablate: TMP/a.yaml and TMP/b.yaml both name their runs 'same'"),
    "ablate-seeds-negative": (["ablate", "QUICK", "--seeds", "-1"], "ablate: --seeds must be"),
    "ablate-seeds-huge": (["ablate", "QUICK", "--seeds", str(2**32)], "ablate: --seeds must be"),
    "ablate-minutes-nan": (["ablate", "QUICK", "--minutes", "nan"], "ablate: --minutes must be a positive number"),
    "ablate-out-a-file": (["ablate", "QUICK", "--out", "TMP/file.txt"], "ablate: --out TMP/file.txt: exists and is"),
    "ablate-out-under-a-file": (["ablate", "QUICK", "--out", "TMP/file.txt/x"], "ablate: --out TMP/file.txt/x:"),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_option_values_a_command_cannot_use_are_one_line_errors_and_nothing_is_written(run, tmp_path, case):
    argv, start = REFUSED[case]
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "recipe.yaml").write_text("name: mine  # the user's own\n")
    (tmp_path / "file.txt").write_text("data")
    _recipe(tmp_path / "a.yaml", "same")
    _recipe(tmp_path / "b.yaml", "same")
    (tmp_path / "out").mkdir()
    places = {"RUN": str(run), "OUT": str(tmp_path / "out"), "TMP": str(tmp_path), "QUICK": str(QUICKSTART)}

    def fill(text: str) -> str:
        for key, value in places.items():
            text = text.replace(key, value)
        return text

    if argv[0] == "ablate":
        argv = [*argv, *(["--out", "TMP/ablate"] if "--out" not in argv else []), "--device", "cpu"]
        argv += ["--steps", "1"] if "--minutes" not in argv else []
    before, run_before = snapshot(tmp_path), snapshot(run)
    out = run_ganzoo(*map(fill, argv), cwd=tmp_path, env=ENV)
    one_error(out, fill(start))
    assert snapshot(tmp_path) == before and snapshot(run) == run_before  # nothing written, nothing replaced
    assert (tmp_path / "mine" / "recipe.yaml").read_text() == "name: mine  # the user's own\n"


def test_the_largest_seed_and_wide_grids_work_and_an_earlier_export_is_replaced(run, tmp_path):
    out = run_ganzoo("sample", str(run), "--out", str(tmp_path / "g.png"), "--n", "3", "--columns", "100",
                     "--seed", str(2**63 - 1), "--device", "cpu", cwd=tmp_path, env=ENV)
    assert out.returncode == 0, out.stderr
    from PIL import Image

    assert Image.open(tmp_path / "g.png").size == (3 * 34 + 2, 34 + 2)  # more columns than samples: one row
    (tmp_path / "empty").mkdir()
    for folder in ("empty", "empty"):  # an empty folder, then the export it now holds, replaced
        out = run_ganzoo("export", str(run), "--out", str(tmp_path / folder), cwd=tmp_path, env=ENV)
        assert out.returncode == 0, out.stderr
    assert sorted(p.name for p in (tmp_path / "empty").iterdir()) == ["generator.safetensors", "recipe.yaml"]


def test_run_name_empty_and_resume_of_a_file_are_one_line(tmp_path):
    """``--name ""`` is refused as a name (it fell back to the recipe's name), and ``--resume`` given a file
    says so (it said "no such run folder" of a file that exists)."""
    one_error(run_ganzoo("run", str(QUICKSTART), "--name", "", "--out", str(tmp_path / "runs"), env=ENV), "--name: ''")
    assert not (tmp_path / "runs").exists()
    (tmp_path / "ckpt.pt").write_bytes(b"x")
    one_error(run_ganzoo("run", "--resume", str(tmp_path / "ckpt.pt"), env=ENV), f"{tmp_path / 'ckpt.pt'}: is a file")
