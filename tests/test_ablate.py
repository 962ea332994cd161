"""`ganzoo ablate` end to end on two tiny quickstart-sized variants x two seeds, then `ganzoo report`."""
from __future__ import annotations

import json
import os
import shutil

import pytest

from conftest import REPO, SHARED, run_ganzoo

WEIGHTS = SHARED / "weights" / "fid-inception-2015-12-05.pth"
pytestmark = pytest.mark.skipif(not WEIGHTS.is_file(), reason=f"FID Inception weights not found at {WEIGHTS}")

TINY = """\
base: {quickstart}
name: {name}
data: {{num_images: 64, num_test_images: 24}}
generator: {{ch: 4, z_dim: 16, attention_resolutions: {att}}}
discriminator: {{ch: 4, attention_resolutions: {att}}}
train: {{batch_size: 8, log_every: 2, sample_every: 3, checkpoint_every: 3, ema: {{start: 0}}, time_limit_minutes: null}}
eval: {{metrics: [fid, kid], every: 3, num_samples: 24, batch_size: 24, inception_weights: {weights}}}
"""


@pytest.fixture(scope="module")
def ablation(tmp_path_factory):
    root = tmp_path_factory.mktemp("ablate")
    recipes = []
    for name, att in (("tiny-none", "[]"), ("tiny-feat16", "[16]")):
        path = root / f"{name}.yaml"
        path.write_text(TINY.format(quickstart=REPO / "recipes" / "quickstart.yaml", name=name, att=att, weights=WEIGHTS))
        recipes.append(str(path))
    env = {"GANZOO_CACHE": str(root / "cache"), "OMP_NUM_THREADS": "1", "GANZOO_DISABLE_PLUGINS": "1"}
    out = run_ganzoo("ablate", *recipes, "--seeds", "0", "1", "--steps", "6", "--out", str(root / "runs"),
                     "--report", str(root / "report" / "tiny.md"), "--device", "cpu", env=env, timeout=900)
    return root, recipes, env, out


def test_ablate_runs_every_variant_and_seed_and_writes_the_report(ablation):
    root, _, _, out = ablation
    assert out.returncode == 0, out.stdout + out.stderr
    runs = sorted(p.name for p in (root / "runs").iterdir() if (p / "recipe.yaml").is_file())
    assert runs == ["tiny-feat16-s0", "tiny-feat16-s1", "tiny-none-s0", "tiny-none-s1"]
    # seed by seed: a study cut short has every variant at its first seed
    starts = [line.split()[1].rstrip(":") for line in out.stdout.splitlines() if line.startswith("start ")]
    assert starts == ["tiny-none-s0", "tiny-feat16-s0", "tiny-none-s1", "tiny-feat16-s1"]
    for run in runs:
        done = root / "runs" / run / "ablate-done.json"
        assert json.loads(done.read_text())["seconds"] > 0
        assert (root / "runs" / run / "command.txt").read_text().startswith("ganzoo run ")
    report = (root / "report" / "tiny.md").read_text()
    table = report.split("\n\n## ", 1)[0]  # the main table (the paired differences follow it)
    rows = [line for line in table.splitlines() if line.startswith("| tiny-")]
    assert len(rows) == 2, report
    none_row = next(r for r in rows if r.startswith("| tiny-none "))
    feat_row = next(r for r in rows if r.startswith("| tiny-feat16 "))
    assert "| - | - |" in none_row and "sagan @ 16" in feat_row
    cells = [c.strip() for c in feat_row.strip("|").split("|")]
    assert cells[5] == "6" and "±" in cells[6] and cells[9] == "2"  # steps, FID mean ± std, seeds (then gates)
    assets = root / "report" / "tiny"
    for png in ("fid_vs_step.png", "kid_vs_step.png", "final_fid.png", "samples-tiny-none.png", "samples-tiny-feat16.png"):
        assert (assets / png).stat().st_size > 1000, png
        assert f"(tiny/{png})" in report
    # issue 19: the gates of each run (gammas.json, left in the run folders) and the paired differences
    assert "G: blocks.1.1 " in feat_row and "G: -; D: -" in none_row
    assert json.loads((root / "runs" / "tiny-feat16-s1" / "gammas.json").read_text())["step"] == 6
    paired = report.split("## Paired differences against tiny-none", 1)[1].split("\n## ", 1)[0]
    assert "| tiny-feat16 | 2 | s0: " in paired and "95% CI" in paired
    assert "Table 1" in report and "22.96" in report
    assert "ganzoo ablate" in report and "--seeds 0 1" in report


def test_ablate_skips_finished_runs_and_resumes_interrupted_ones(ablation):
    root, recipes, env, first = ablation
    assert first.returncode == 0
    # pretend one run was interrupted before it finished: it is resumed, the others are skipped
    os.remove(root / "runs" / "tiny-none-s1" / "ablate-done.json")
    out = run_ganzoo("ablate", *recipes, "--seeds", "0", "1", "--steps", "6", "--out", str(root / "runs"),
                     "--report", str(root / "report" / "tiny.md"), "--device", "cpu", env=env, timeout=900)
    assert out.returncode == 0, out.stdout + out.stderr
    lines = out.stdout.splitlines()
    assert "tiny-none-s1: resume" in lines
    assert sum(line.endswith("finished, skipped") for line in lines) == 3
    assert (root / "runs" / "tiny-none-s1" / "ablate-done.json").is_file()


def test_report_from_run_folders_alone(ablation, tmp_path):
    root, _, env, _ = ablation
    copies = []
    for run in ("tiny-none-s0", "tiny-feat16-s0"):
        shutil.copytree(root / "runs" / run, tmp_path / run, ignore=shutil.ignore_patterns("checkpoints"))
        copies.append(str(tmp_path / run))
    out = run_ganzoo("report", *copies, "--out", str(tmp_path / "r.md"), "--no-paper-table", env=env)
    assert out.returncode == 0, out.stderr
    text = (tmp_path / "r.md").read_text()
    assert "Table 1" not in text and "| tiny-none |" in text
    bad = run_ganzoo("report", str(tmp_path), "--out", str(tmp_path / "x.md"), env=env)
    assert bad.returncode == 2 and "not a ganzoo run folder" in bad.stderr and "Traceback" not in bad.stderr


def test_ablate_spreads_runs_over_several_devices(tmp_path):
    """``--device cpu cpu``: two places, so both runs start before either ends, each with its device on its
    command line; a device the machine lacks is refused before anything runs."""
    from ganzoo.commands.ablate import slots

    assert slots(["cuda:0", "cuda:1"], 2) == ["cuda:0", "cuda:1", "cuda:0", "cuda:1"]
    recipes = []
    for name, att in (("two-none", "[]"), ("two-feat16", "[16]")):
        path = tmp_path / f"{name}.yaml"
        path.write_text(TINY.format(quickstart=REPO / "recipes" / "quickstart.yaml", name=name, att=att, weights=WEIGHTS)
                        + "\n")
        recipes.append(str(path))
    env = {"GANZOO_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1", "GANZOO_DISABLE_PLUGINS": "1"}
    common = [*recipes, "--seeds", "0", "--steps", "2", "--set", "eval.metrics=[]", "--out", str(tmp_path / "runs")]
    out = run_ganzoo("ablate", *common, "--device", "cpu", "cpu", env=env, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    events = [line.split()[0] for line in out.stdout.splitlines() if line.startswith(("start ", "done "))]
    assert events[:3] == ["start", "start", "done"]
    dones = [line for line in out.stdout.splitlines() if line.startswith("done ")]
    assert "1 of 2 done, about" in dones[0] and "left at this pace" in dones[0] and "2 of 2 done)" in dones[1]
    for name in ("two-none-s0", "two-feat16-s0"):
        assert (tmp_path / "runs" / name / "command.txt").read_text().rstrip().endswith("--device cpu")
    bad = run_ganzoo("ablate", *common, "--device", "cpu", "nonsense", env=env)
    assert bad.returncode == 2 and "unknown device 'nonsense'" in bad.stderr and "Traceback" not in bad.stderr


def test_pace_says_how_many_runs_are_done_and_about_how_long_the_rest_takes():
    from ganzoo.commands.ablate import pace

    # 600 s and 660 s a run: mean 630 s; 5 runs left on 2 places: ceil(5 / 2) = 3 rounds of 630 s = 31.5 min
    assert pace([600.0, 660.0], 9, 16, 5, 2) == "9 of 16 done, about 32 min left at this pace"
    # 12 runs left on one GPU at 12.5 minutes a run: 150 minutes
    assert pace([750.0], 36, 48, 12, 1) == "36 of 48 done, about 2 h 30 min left at this pace"
    assert pace([750.0], 48, 48, 0, 1) == "48 of 48 done"


def test_a_larger_step_budget_continues_finished_runs_instead_of_skipping_them(tmp_path):
    """A study found too short (issue 19: "until the baseline's FID curve flattens") is extended with the same
    command and a larger --steps: each finished run resumes from its last checkpoint up to the new budget,
    rather than being reported at the old one as "finished"; the same or a smaller budget skips it."""
    path = tmp_path / "ext-none.yaml"
    path.write_text(TINY.format(quickstart=REPO / "recipes" / "quickstart.yaml", name="ext-none", att="[]",
                                weights=WEIGHTS) + "\n")
    env = {"GANZOO_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1", "GANZOO_DISABLE_PLUGINS": "1"}

    def ablate(steps: int):
        out = run_ganzoo("ablate", str(path), "--seeds", "0", "--steps", str(steps), "--set", "eval.metrics=[]",
                         "--out", str(tmp_path / "runs"), "--device", "cpu", env=env, timeout=600)
        assert out.returncode == 0, out.stdout + out.stderr
        return out.stdout.splitlines()

    run = tmp_path / "runs" / "ext-none-s0"
    ablate(3)
    assert json.loads((run / "ablate-done.json").read_text())["steps"] == 3
    lines = ablate(6)
    assert "ext-none-s0: finished at 3 steps, continues to 6 (--resume)" in lines
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines() if "loss/d" in line]
    assert steps == [1, 2, 3, 4, 6]  # (log_every 2, and each end) continued from step 3, not trained again from 0
    assert json.loads((run / "ablate-done.json").read_text())["steps"] == 6
    assert "ext-none-s0: finished, skipped" in ablate(6) and "ext-none-s0: finished, skipped" in ablate(4)
    # a run marked finished by an older ganzoo (no steps recorded): its recipe.yaml's train.steps counts
    (run / "ablate-done.json").write_text(json.dumps({"seconds": 1.0}) + "\n")
    assert "ext-none-s0: finished, skipped" in ablate(6)
    assert "ext-none-s0: finished at 6 steps, continues to 8 (--resume)" in ablate(8)


def test_fits_starts_a_run_only_if_it_would_end_before_the_deadline():
    from ganzoo.commands.ablate import fits

    assert fits(1000.0, None, [500.0])  # no deadline
    assert fits(1000.0, 1001.0, [])  # nothing finished yet: nothing says it would not end in time
    assert fits(1000.0, 1600.0, [500.0, 700.0]) and not fits(1000.0, 1599.0, [500.0, 700.0])  # mean 600 s
    # --expect judges the first runs, before this call has finished one; then the runs' own mean takes over
    assert fits(1000.0, 1300.0, [], expect=300.0) and not fits(1000.0, 1299.0, [], expect=300.0)
    assert fits(1000.0, 1300.0, [200.0], expect=900.0) and not fits(1000.0, 1300.0, [400.0], expect=100.0)
    assert fits(1000.0, None, [], expect=900.0)


def test_a_deadline_leaves_the_runs_that_would_not_end_in_time_to_the_next_call(tmp_path):
    """``--deadline``: the first run starts; once it has ended, the next one would end after the deadline at its
    pace, so it is not started, the call says so and exits 0 with a report of what finished; the same command
    without the deadline then skips the finished run and trains the other."""
    recipes = []
    for name in ("dl-none", "dl-feat16"):
        path = tmp_path / f"{name}.yaml"
        path.write_text(TINY.format(quickstart=REPO / "recipes" / "quickstart.yaml", name=name,
                                    att="[]" if name == "dl-none" else "[16]", weights=WEIGHTS))
        recipes.append(str(path))
    env = {"GANZOO_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1", "GANZOO_DISABLE_PLUGINS": "1"}
    common = [*recipes, "--seeds", "0", "--steps", "2", "--set", "eval.metrics=[]", "--out", str(tmp_path / "runs"),
              "--device", "cpu"]
    out = run_ganzoo("ablate", *common, "--deadline", "0.01", env=env, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    assert [line.split()[1] for line in out.stdout.splitlines() if line.startswith("start ")] == ["dl-none-s0:"]
    assert "deadline: 1 run(s) not started" in out.stdout and "dl-feat16-s0; rerun the same command" in out.stdout
    assert (tmp_path / "runs" / "dl-none-s0" / "ablate-done.json").is_file()
    assert not (tmp_path / "runs" / "dl-feat16-s0").exists()
    assert "| dl-none |" in (tmp_path / "runs" / "report.md").read_text()
    again = run_ganzoo("ablate", *common, env=env, timeout=600)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "dl-none-s0: finished, skipped" in again.stdout
    assert (tmp_path / "runs" / "dl-feat16-s0" / "ablate-done.json").is_file()
    bad = run_ganzoo("ablate", *common, "--deadline", "0", env=env)
    assert bad.returncode == 2 and "--deadline must be a positive number" in bad.stderr and "Traceback" not in bad.stderr


def test_expect_keeps_even_the_first_runs_from_starting_when_they_would_not_end_in_time(tmp_path):
    """``--deadline 0.5 --expect 2``: a run is expected to take 2 minutes, so none starts (a short window whose
    first runs would be cut wastes it); the call says so, exits 0 and writes no run folder. --expect needs a
    deadline."""
    path = tmp_path / "ex-none.yaml"
    path.write_text(TINY.format(quickstart=REPO / "recipes" / "quickstart.yaml", name="ex-none", att="[]",
                                weights=WEIGHTS))
    env = {"GANZOO_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1", "GANZOO_DISABLE_PLUGINS": "1"}
    common = [str(path), "--seeds", "0", "1", "--steps", "2", "--set", "eval.metrics=[]",
              "--out", str(tmp_path / "runs"), "--device", "cpu"]
    out = run_ganzoo("ablate", *common, "--deadline", "0.5", "--expect", "2", env=env, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "deadline: 2 run(s) not started, as at 120 s a run (--expect)" in out.stdout
    assert not any(line.startswith("start ") for line in out.stdout.splitlines())
    assert not (tmp_path / "runs" / "ex-none-s0").exists()
    for extra, said in ((["--expect", "2"], "--expect needs --deadline"),
                        (["--deadline", "1", "--expect", "0"], "--expect must be a positive number of minutes")):
        bad = run_ganzoo("ablate", *common, *extra, env=env)
        assert bad.returncode == 2 and said in bad.stderr and "Traceback" not in bad.stderr


def test_run_order_seeds_first_or_warm_chunks():
    """--order seeds: every recipe at seed 0, then at seed 1; --order warm: as many recipes as run at once,
    seed by seed, then the next as many (one place: recipe by recipe)."""
    from ganzoo.commands.ablate import run_order

    recipes, seeds = ["a", "b", "c"], [0, 1]
    assert run_order(recipes, seeds, "seeds", 2) == [("a", 0), ("b", 0), ("c", 0), ("a", 1), ("b", 1), ("c", 1)]
    assert run_order(recipes, seeds, "warm", 2) == [("a", 0), ("b", 0), ("a", 1), ("b", 1), ("c", 0), ("c", 1)]
    assert run_order(recipes, seeds, "warm", 1) == [("a", 0), ("a", 1), ("b", 0), ("b", 1), ("c", 0), ("c", 1)]
    assert run_order(recipes, seeds, "warm", 8) == run_order(recipes, seeds, "seeds", 8)


def test_plan_follows_the_order_over_the_places(tmp_path):
    """The jobs ablate starts, in --order warm over two places (--device cpu --jobs 2): the second seed of each
    of the first two recipes before the third recipe."""
    import argparse

    from ganzoo.commands.ablate import _budget, add_arguments, plan, slots

    recipes = []
    for name in ("o-a", "o-b", "o-c"):
        path = tmp_path / f"{name}.yaml"
        path.write_text(TINY.format(quickstart=REPO / "recipes" / "quickstart.yaml", name=name, att="[]", weights=WEIGHTS))
        recipes.append(str(path))
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args([*recipes, "--seeds", "0", "1", "--steps", "2", "--out", str(tmp_path / "runs"),
                              "--device", "cpu", "--jobs", "2", "--order", "warm"])
    names = [j["name"] for j in plan(args, _budget(args), places=len(slots(args.device, args.jobs)))]
    assert names == ["o-a-s0", "o-b-s0", "o-a-s1", "o-b-s1", "o-c-s0", "o-c-s1"]
    assert parser.parse_args(recipes).order == "seeds"
