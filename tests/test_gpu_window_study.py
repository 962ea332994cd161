"""The multi-window study (benchmarks/device/gpu_window.sh job ``study``, benchmarks/device/keep_study.sh),
run on the CPU with ``cpu`` standing in for the GPUs: the first window's finished runs are kept as small
files, a cut run is left out, and the next window skips what was kept and trains only the rest."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import REPO, tiny_recipe

pytestmark = pytest.mark.skipif(shutil.which("tar") is None, reason="needs tar")
SCRIPT = REPO / "benchmarks" / "device" / "gpu_window.sh"
KEEP = REPO / "benchmarks" / "device" / "keep_study.sh"


def jobs_env(tmp_path: Path, work: str, **extra: str) -> dict[str, str]:
    """The environment of the `jobs` phase on a fresh 'machine' ``tmp_path/work`` (``extra``: the jobs and more)."""
    return {**os.environ, "OMP_NUM_THREADS": "1", "GANZOO_DISABLE_PLUGINS": "1",
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",  # python3: this interpreter
            "GPU_WINDOW_WORK": str(tmp_path / work), "OUT": str(tmp_path / work / "out"), **extra}


def study_env(tmp_path: Path, work: str, recipes: list[Path], kept: Path, **extra: str) -> dict[str, str]:
    """The environment of the `jobs` phase with JOBS=study on a fresh 'machine' ``tmp_path/work`` (``extra``: more)."""
    env = jobs_env(tmp_path, work, **{
        "GANZOO_CACHE": str(tmp_path / "cache"), "GPU_WINDOW_ROOT": str(tmp_path / work / "assets"),
        "JOBS": "study", "STUDY_DEVICES": "cpu cpu", "STUDY_SEEDS": "0", "STUDY_STEPS": "2", "STUDY_EVAL": "2",
        "STUDY_SET": "", "STUDY_RECIPES": " ".join(map(str, recipes)), "STUDY_DIR": str(kept), **extra})
    env.pop("GANZOO_INCEPTION_WEIGHTS", None)
    return env


def window(tmp_path: Path, work: str, recipes: list[Path], kept: Path, exit: int = 0, **extra: str) -> tuple[str, Path]:
    """The `jobs` phase with JOBS=study on a fresh 'machine' (``extra``: more environment), then `pack`: its
    log and results.tar.gz."""
    env = study_env(tmp_path, work, recipes, kept, **extra)
    jobs = subprocess.run(["bash", str(SCRIPT), "jobs"], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert jobs.returncode == 0 and f"study exit {exit}" in jobs.stdout, jobs.stdout + jobs.stderr
    return (tmp_path / work / "study.log").read_text(), tmp_path / work


def tiny_recipes(tmp_path: Path, *variants: tuple[str, list[int]]) -> list[Path]:
    recipes = []
    for name, att in variants:
        data = tiny_recipe(name=name, generator={"attention_resolutions": att},
                           discriminator={"attention_resolutions": att},
                           train={"batch_size": 4, "log_every": 1}, eval={"metrics": []})
        recipes.append(tmp_path / f"{name}.yaml")
        recipes[-1].write_text(yaml.safe_dump(data))
    return recipes


def pack(tmp_path: Path, work: Path) -> Path:
    env = {**os.environ, "GPU_WINDOW_WORK": str(work), "OUT": str(work / "out")}
    subprocess.run(["bash", str(SCRIPT), "pack"], cwd=REPO, env=env, check=True, capture_output=True, timeout=120)
    return work / "out" / "results.tar.gz"


def test_a_study_continues_in_the_next_window_from_the_runs_kept(tmp_path):
    recipes = tiny_recipes(tmp_path, ("st-none", []), ("st-feat16", [16]))
    kept = tmp_path / "docs-runs"
    log, work = window(tmp_path, "w1", recipes, kept)
    assert "st-none-s0: new" in log and "st-feat16-s0: new" in log
    # the window ends while st-feat16-s0 still trains: it has no ablate-done.json
    (work / "study" / "st-feat16-s0" / "ablate-done.json").unlink()
    out = subprocess.run(["bash", str(KEEP), str(kept), str(pack(tmp_path, work))], capture_output=True, text=True,
                         check=True).stdout
    assert "kept 1 finished runs" in out and "st-feat16-s0" in out.splitlines()[-1]
    assert sorted(p.name for p in kept.iterdir()) == ["st-none-s0"]
    files = sorted(p.relative_to(kept / "st-none-s0").as_posix() for p in (kept / "st-none-s0").rglob("*") if p.is_file())
    assert {"recipe.yaml", "metrics.jsonl", "command.txt", "ablate-done.json", "train.log"} <= set(files)
    assert not any(f.endswith(".pt") for f in files) and any(f.startswith("samples/") for f in files)
    # the next window, on a fresh machine: the kept run is skipped, the cut one trains, the report has both
    log, work = window(tmp_path, "w2", recipes, kept)
    assert "st-none-s0: finished, skipped" in log and "st-feat16-s0: new" in log
    assert "start st-none-s0" not in log and "done  st-feat16-s0" in log
    report = (work / "study" / "report.md").read_text()
    assert "| st-none |" in report and "| st-feat16 |" in report
    assert "1 finished runs kept" in (work / "study_plan.txt").read_text()


def test_study_groups_run_in_order_into_one_folder_and_a_failed_group_stops_the_study(tmp_path):
    """STUDY_GROUPS (the default: issue 19's seven recipes, then issue 20's other five): every seed of the
    first group before the second group starts, all in one folder; a group that fails ends the job with its
    exit status and the groups after it do not start."""
    none, feat16 = tiny_recipes(tmp_path, ("st-none", []), ("st-feat16", [16]))
    groups = {"STUDY_RECIPES": "", "STUDY_GROUPS": f"{none} ; {feat16}", "STUDY_SEEDS": "0 1", "STUDY_DEVICES": "cpu"}
    # STUDY_JOBS=2: both seeds of a group at once on the one device (one run compiles while the other trains)
    log, work = window(tmp_path, "w1", [], tmp_path / "kept", STUDY_JOBS="2", **groups)
    starts = [line.split()[1].rstrip(":") for line in log.splitlines() if line.startswith("start ")]
    assert starts == ["st-none-s0", "st-none-s1", "st-feat16-s0", "st-feat16-s1"], log
    events = [line.split()[0] for line in log.splitlines() if line.startswith(("start ", "done "))]
    assert events[:2] == ["start", "start"], log  # the second run started before the first was done
    assert sorted(p.parent.name for p in (work / "study").glob("*/ablate-done.json")) == [
        "st-feat16-s0", "st-feat16-s1", "st-none-s0", "st-none-s1"]
    bad = {**groups, "STUDY_GROUPS": f"{tmp_path / 'missing.yaml'} ; {feat16}"}
    log, work = window(tmp_path, "w2", [], tmp_path / "kept", exit=2, **bad)
    assert "missing.yaml" in log and "st-feat16" not in log



def test_a_study_starts_no_run_that_would_end_after_the_window(tmp_path):
    """STUDY_DEADLINE (on the device: the minutes left until WINDOW_MINUTES after stage1): the study passes it to
    ganzoo ablate as --deadline, so that once a run has shown how long one takes, a run that would be cut by the
    window's end is not started (it waits for the next window) and the study still ends well."""
    none, feat16, feat8 = tiny_recipes(tmp_path, ("st-none", []), ("st-feat16", [16]), ("st-feat8", [8]))
    # two groups: the second would have no finished run to judge by, so it waits too
    log, work = window(tmp_path, "w1", [], tmp_path / "kept", STUDY_DEVICES="cpu", STUDY_DEADLINE="0.01",
                       STUDY_RECIPES="", STUDY_GROUPS=f"{none} {feat16} ; {feat8}")
    assert "(--deadline 0.01 minutes)" in log and "start st-feat16-s0" not in log, log
    assert "deadline: 1 run(s) not started" in log and "st-feat16-s0; rerun the same command" in log
    assert "and the groups after it" in log and "st-feat8" not in log
    assert [p.parent.name for p in (work / "study").glob("*/ablate-done.json")] == ["st-none-s0"]

def test_wait_never_outlasts_the_device_call(tmp_path):
    """`wait N` polls at most 570 s, so that with its packing it returns inside the device tool's 600-s call
    (a `wait 590` returned nothing at all on 2026-12-06); with the jobs finished it returns at once, with the
    study's log and the results."""
    work = tmp_path / "work"
    work.mkdir()
    (work / "finished.txt").write_text("done\n")
    (work / "jobs.log").write_text("start study\n")
    (work / "study.log").write_text("done  st-none-s0 (4 s)\n")
    env = {**os.environ, "GPU_WINDOW_WORK": str(work), "OUT": str(tmp_path / "out"), "PATH": os.environ["PATH"]}
    out = subprocess.run(["bash", str(SCRIPT), "wait", "590"], cwd=REPO, env=env, capture_output=True, text=True,
                         timeout=60)
    assert "waiting 570" in out.stdout and "done  st-none-s0" in out.stdout and "FINISHED" in out.stdout
    assert (tmp_path / "out" / "results.tar.gz").is_file()


def test_a_study_run_cut_by_stop_resumes_in_the_next_window_from_its_carried_checkpoint(tmp_path):
    """`stop` ends the background jobs with SIGTERM: the study run in flight writes a checkpoint, `stop` names it,
    ckpt_out/keep_parts/ckpt_in carry it to the next window, and the study job there rebuilds the run folder so
    that ganzoo ablate resumes it from that step instead of starting it again."""
    import time

    (recipe,) = tiny_recipes(tmp_path, ("st-none", []))
    w1 = study_env(tmp_path, "w1", [recipe], tmp_path / "kept", STUDY_DEVICES="cpu", STUDY_STEPS="100000",
                   STUDY_EVAL="100000", GPU_WINDOW_PART_SIZE="96K", OUT=str(tmp_path / "out1"))
    (tmp_path / "w1").mkdir()
    jobs = subprocess.Popen(["bash", str(SCRIPT), "jobs"], cwd=REPO, env=w1, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        metrics = tmp_path / "w1" / "study" / "st-none-s0" / "metrics.jsonl"
        deadline = time.time() + 180
        while time.time() < deadline and (not metrics.is_file() or len(metrics.read_text().splitlines()) < 3):
            assert jobs.poll() is None, jobs.stdout.read()
            time.sleep(0.2)
        stop = subprocess.run(["bash", str(SCRIPT), "stop"], cwd=REPO, env=w1, capture_output=True, text=True,
                              timeout=200)
        jobs.wait(timeout=60)
    finally:
        if jobs.poll() is None:
            os.killpg(jobs.pid, 9)
    assert "stop: jobs ended" in stop.stdout, stop.stdout + stop.stderr
    ckpts = sorted((tmp_path / "w1" / "study" / "st-none-s0" / "checkpoints").glob("step-*.pt"))
    assert ckpts and f"cut: st-none-s0 at {ckpts[-1].name}" in stop.stdout
    step = int(ckpts[-1].stem.split("-")[1])
    assert 1 <= step < 100000 and not (tmp_path / "w1" / "study" / "st-none-s0" / "ablate-done.json").exists()
    assert (tmp_path / "out1" / "results.tar.gz").is_file()  # the window's small files, as `wait` packs them

    calls = []
    for first in (0, 4):
        out = tmp_path / f"call{first}"
        subprocess.run(["bash", str(SCRIPT), "ckpt_out", "st-none-s0", str(first)], cwd=REPO,
                       env={**w1, "OUT": str(out)}, check=True, capture_output=True, timeout=120)
        calls.append(out)
    home = tmp_path / "home"
    home.mkdir()
    subprocess.run(["bash", str(REPO / "benchmarks" / "device" / "keep_parts.sh"), "st-none-s0", *map(str, calls)],
                   cwd=home, check=True, capture_output=True, timeout=120)
    w2 = {"GPU_WINDOW_WORK": str(tmp_path / "w2"), "GPU_WINDOW_ROOT": str(tmp_path / "w2" / "assets")}
    for folder in sorted(p.name for p in (home / ".devcache" / "ckpt" / "st-none-s0").iterdir()):
        subprocess.run(["bash", str(SCRIPT), "ckpt_in", "st-none-s0", folder], cwd=home, env={**os.environ, **w2},
                       check=True, capture_output=True, timeout=60)
    log, work = window(tmp_path, "w2", [recipe], tmp_path / "kept", STUDY_STEPS=str(step + 2))
    assert "st-none-s0: resume" in log
    assert "st-none-s0 resumes from its carried checkpoint" in (work / "study_plan.txt").read_text()
    run = work / "study" / "st-none-s0"
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines() if "loss/d" in line]
    assert steps[-2:] == [step + 1, step + 2] and (run / "ablate-done.json").is_file()


@pytest.mark.parametrize("ago, end, margin, floor, expected", [
    (120, 25.5, 0, 0.1, 23.5),   # the study's deadline: 23.5 minutes of a 25.5-minute window left
    (120, 26, 1.2, 2.0, 22.8),   # the quality job's cap: a margin of 1.2 minutes
    (1800, 25.5, 0, 0.1, 0.1),   # past the window's end: the floor
])
def test_minutes_left(tmp_path: Path, ago: int, end: float, margin: float, floor: float, expected: float) -> None:
    """gpu_window.sh's minutes_left, which the study and quality jobs size their runs by: the minutes until END
    minutes after stage1's /root/window-start, less MARGIN, at least FLOOR."""
    body = re.search(r"^minutes_left\(\) \{.*?^\}", SCRIPT.read_text(), re.S | re.M).group(0)
    start = tmp_path / "window-start"
    start.write_text(f"{int(time.time()) - ago}\n")
    script = body.replace("/root/window-start", str(start)) + f"\nminutes_left {end} {margin} {floor}\n"
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    out = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert float(out.stdout) == pytest.approx(expected, abs=0.05)


def test_study_runs_start_in_the_warm_order(tmp_path: Path) -> None:
    """The study passes ablate --order warm (STUDY_ORDER): with one place, a recipe's second seed comes right after
    its first (on the device: the compile cache is warm for it), not after every recipe's first seed. A deadline
    too short for more than the first run shows the order of the rest without training them."""
    recipes = tiny_recipes(tmp_path, ("wo-none", []), ("wo-feat16", [16]))
    log, _ = window(tmp_path, "w1", recipes, tmp_path / "kept", STUDY_DEVICES="cpu", STUDY_SEEDS="0 1",
                    STUDY_DEADLINE="0.01")
    assert "start wo-none-s0" in log and "deadline: 3 run(s) not started" in log, log
    assert "wo-none-s1, wo-feat16-s0, wo-feat16-s1; rerun" in log, log


def test_study_expect_keeps_a_short_window_from_starting_runs_it_would_cut(tmp_path: Path) -> None:
    """STUDY_EXPECT (minutes a run takes, as an earlier window measured it) reaches ablate as --expect: a window
    with less time left than one run starts none (on the device its first runs would otherwise start and be cut)."""
    recipes = tiny_recipes(tmp_path, ("ex-none", []), ("ex-feat16", [16]))
    log, work = window(tmp_path, "w1", recipes, tmp_path / "kept", STUDY_DEVICES="cpu", STUDY_DEADLINE="0.5",
                       STUDY_EXPECT="7.2")
    assert "deadline: 2 run(s) not started, as at 432 s a run (--expect)" in log, log
    assert "start ex-" not in log and not list((work / "study").glob("*/ablate-done.json"))


def test_concur_without_a_timed_count_picks_no_jobs(tmp_path: Path) -> None:
    """The `concur` job when its processes time out (as a cold compile outlasting CONCUR_TIMEOUT did for one
    process on 2026-12-07): each count says how many of its processes were timed, and no --jobs is picked, so
    the ablate job keeps its own default instead of comparing against a total of 0."""
    env = jobs_env(tmp_path, "work", JOBS="concur", MPS="0", CONCUR_MAX="2", CONCUR_TIMEOUT="1")
    jobs = subprocess.run(["bash", str(SCRIPT), "jobs"], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert jobs.returncode == 0 and "concur exit 0" in jobs.stdout, jobs.stdout + jobs.stderr
    summary = (tmp_path / "work" / "concur" / "summary.txt").read_text()
    assert "processes 1: 0 of 1 timed" in summary and "processes 2: 0 of 2 timed" in summary, summary
    assert "together" not in summary
    assert not (tmp_path / "work" / "concur" / "jobs.txt").exists()
    assert "no --jobs picked" in jobs.stdout
