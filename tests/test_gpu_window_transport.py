"""The long run's checkpoint crosses GPU windows in parts (benchmarks/device/gpu_window.sh ``ckpt_out``,
``ckpt_in``, ``rebuild``; benchmarks/device/keep_parts.sh): run here on the CPU with small parts, the
phases rebuild a run folder that ``ganzoo run --resume`` continues from the step it reached, and a
missing or foreign part is refused before anything is filed."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import REPO, tiny_recipe

pytestmark = pytest.mark.skipif(shutil.which("split") is None or shutil.which("sha256sum") is None,
                                reason="needs coreutils (split, sha256sum)")
SCRIPT = REPO / "benchmarks" / "device" / "gpu_window.sh"
KEEP = REPO / "benchmarks" / "device" / "keep_parts.sh"
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
ENV.pop("GANZOO_INCEPTION_WEIGHTS", None)


def sh(*args, cwd, env=None, check=True) -> subprocess.CompletedProcess:
    out = subprocess.run(["bash", *map(str, args)], cwd=cwd, env={**ENV, **(env or {})},
                         capture_output=True, text=True, timeout=120)
    if check:
        assert out.returncode == 0, out.stdout + out.stderr
    return out


def ganzoo(*args, cwd) -> subprocess.CompletedProcess:
    out = subprocess.run([sys.executable, "-m", "ganzoo", *map(str, args)], cwd=cwd, env=ENV,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    return out


@pytest.fixture
def sent(tmp_path):
    """A 4-step CPU run ``long-s0`` on the 'device', and its last checkpoint sent back in two ckpt_out calls
    (parts of 96 KiB: 7 of them, so the second call is needed)."""
    device = tmp_path / "device"
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(yaml.safe_dump(tiny_recipe(train={"steps": 4, "batch_size": 4, "log_every": 1, "sample_every": 0,
                                                        "checkpoint_every": 2})))
    ganzoo("run", recipe, "--out", device / "work" / "runs", "--name", "long-s0", "--device", "cpu", cwd=tmp_path)
    env = {"GPU_WINDOW_WORK": str(device / "work"), "GPU_WINDOW_ROOT": str(device / "assets"),
           "GPU_WINDOW_PART_SIZE": "96K"}
    calls = []
    for first in (0, 4):
        out = tmp_path / f"call{first}"
        sh(SCRIPT, "ckpt_out", "long-s0", first, cwd=REPO, env={**env, "OUT": str(out)})
        calls.append(out)
    return tmp_path, calls


def test_a_checkpoint_sent_in_parts_resumes_in_the_next_window(sent):
    tmp_path, calls = sent
    parts = sorted(p.name for c in calls for p in c.glob("*.part-*"))
    assert len(parts) > 4 and len(list(calls[0].glob("*.part-*"))) == 4  # four a call: 64 MiB back at 15 MiB each
    assert (calls[0] / "long-s0.small.tar.gz").exists() and not list(calls[1].glob("*.tar.gz"))
    # here: check and file the parts, three a folder
    home = tmp_path / "home"
    home.mkdir()
    out = sh(KEEP, "long-s0", *calls, cwd=home).stdout
    kept = home / ".devcache" / "ckpt" / "long-s0"
    folders = sorted(p.name for p in kept.iterdir())
    assert folders[0] == "a" and all(len(list((kept / f).glob("*.part-*"))) <= 3 for f in folders)
    assert out.count("ckpt_in long-s0") == len(folders)
    # the next window: a fresh device, each folder carried in by its own call, then the run rebuilt
    window = {"GPU_WINDOW_WORK": str(tmp_path / "device2" / "work"), "GPU_WINDOW_ROOT": str(tmp_path / "device2" / "assets")}
    for f in folders:
        sh(SCRIPT, "ckpt_in", "long-s0", f, cwd=home, env=window)
    sh(SCRIPT, "rebuild", "long-s0", cwd=REPO, env=window)
    run = tmp_path / "device2" / "work" / "runs" / "long-s0"
    assert sorted(p.name for p in (run / "checkpoints").glob("*.pt")) == ["step-00000004.pt"]
    assert (run / "metrics.jsonl").exists() and (run / "recipe.yaml").exists()
    ganzoo("run", "--resume", run, "--set", "train.steps=6", "--device", "cpu", cwd=tmp_path)
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()
             if "loss/d" in line]
    assert steps[:4] == [1, 2, 3, 4] and steps[-1] == 6 and 5 in steps  # continued from step 4, not from 0


def test_a_missing_or_foreign_part_is_refused(sent):
    tmp_path, calls = sent
    home = tmp_path / "home"
    home.mkdir()
    out = sh(KEEP, "long-s0", calls[0], cwd=home, check=False)  # the second call's parts never fetched
    assert out.returncode == 1 and "part-04 of its 7 parts is missing" in out.stderr and "ckpt_out long-s0 4" in out.stderr
    assert not (home / ".devcache").exists()
    second = calls[1]
    first_of_second = sorted(second.glob("*.part-*"))[0]
    moved = tmp_path / first_of_second.name
    first_of_second.rename(moved)
    out = sh(KEEP, "long-s0", *calls, cwd=home, check=False)
    assert out.returncode == 1 and f"{moved.name.rsplit('.', 1)[1]} of its 7 parts is missing" in out.stderr
    assert not (home / ".devcache").exists()
    moved.write_bytes(b"\0" * moved.stat().st_size)  # same size, other bytes
    moved.rename(first_of_second)
    out = sh(KEEP, "long-s0", *calls, cwd=home, check=False)
    assert out.returncode == 1 and "do not match the checkpoint's sha256" in out.stderr
    assert not (home / ".devcache").exists()


def test_a_run_resumed_on_the_same_machine_is_cut_again_from_its_newer_checkpoint(sent):
    """ckpt_out cuts parts once per checkpoint: after the run continues on the same device, the next
    ckpt_out sends the newer checkpoint, not the parts of the old one (on 2026-12-06 they had to be
    deleted by hand)."""
    tmp_path, calls = sent
    assert sorted(p.name for p in calls[0].glob("*.part-*"))[0].startswith("long-s0.step-00000004.pt.")
    device = tmp_path / "device" / "work"
    ganzoo("run", "--resume", device / "runs" / "long-s0", "--set", "train.steps=6", "--device", "cpu", cwd=tmp_path)
    env = {"GPU_WINDOW_WORK": str(device), "GPU_WINDOW_ROOT": str(tmp_path / "device" / "assets"),
           "GPU_WINDOW_PART_SIZE": "96K"}
    out = tmp_path / "again"
    sh(SCRIPT, "ckpt_out", "long-s0", 0, cwd=REPO, env={**env, "OUT": str(out)})
    names = {p.name.split(".part-")[0] for p in out.glob("*.part-*")}
    assert names == {"long-s0.step-00000006.pt"}
    listed = sorted((device / "parts" / "long-s0").glob("*.part-*"))
    assert listed and all("step-00000006" in p.name for p in listed)  # the old checkpoint's parts are gone


def test_parked_parts_outlive_the_session_in_the_history_alone(sent):
    """park_parts.sh: the parts go into git's history and out of the working tree (one device call carries at
    most 64 MiB), and a fresh clone, which has none of the ignored .devcache, restores them, checked, for ckpt_in."""
    tmp_path, calls = sent
    park = REPO / "benchmarks" / "device" / "park_parts.sh"
    home = tmp_path / "home"
    home.mkdir()
    git = lambda *a, cwd=home: subprocess.run(["git", *a], cwd=cwd, check=True, capture_output=True, text=True).stdout
    git("init", "-q")
    git("config", "user.email", "t@example.com")
    git("config", "user.name", "t")
    (home / ".gitignore").write_text(".devcache/\n*.pt*\n")
    git("add", ".gitignore")
    git("commit", "-q", "-m", "start")
    sh(KEEP, "long-s0", *calls, cwd=home)
    kept = sorted(str(p.relative_to(home / ".devcache")) for p in (home / ".devcache").rglob("*") if p.is_file())
    out = sh(park, "park", "long-s0", cwd=home).stdout
    assert "restore with" in out
    assert git("ls-files") == ".gitignore\n"  # out of the tree again
    assert "parked/long-s0" in git("log", "--stat", "-2")
    fresh = tmp_path / "fresh"
    git("clone", "-q", str(home), str(fresh), cwd=tmp_path)
    assert not (fresh / ".devcache").exists()
    sh(park, "restore", "long-s0", cwd=fresh)
    assert sorted(str(p.relative_to(fresh / ".devcache")) for p in (fresh / ".devcache").rglob("*") if p.is_file()) == kept
    window = {"GPU_WINDOW_WORK": str(tmp_path / "device3" / "work"), "GPU_WINDOW_ROOT": str(tmp_path / "device3" / "assets")}
    for f in sorted(p.name for p in (fresh / ".devcache" / "ckpt" / "long-s0").iterdir()):
        sh(SCRIPT, "ckpt_in", "long-s0", f, cwd=fresh, env=window)
    sh(SCRIPT, "rebuild", "long-s0", cwd=REPO, env=window)
    assert (tmp_path / "device3" / "work" / "runs" / "long-s0" / "checkpoints" / "step-00000004.pt").exists()
    # a clone with nothing parked says so
    empty = tmp_path / "empty"
    git("clone", "-q", str(home), str(empty), cwd=tmp_path)
    out = sh(park, "restore", "long-s1", cwd=empty, check=False)
    assert out.returncode == 1 and "no parked parts of long-s1" in out.stderr


def test_wait_streams_the_newest_checkpoint_and_keep_parts_keeps_the_newest_complete_one(sent):
    """`wait` with SEND_CKPT brings back 4 parts of the run's newest checkpoint a call, finishing one checkpoint
    before it cuts a newer one, so that a machine lost mid-window (long2-s0's, 2026-12-06) loses minutes, not the
    run; keep_parts.sh, given every call's folder, keeps the newest checkpoint whose parts all came back."""
    tmp_path, _ = sent
    device = tmp_path / "device" / "work"
    (device / "finished.txt").write_text("done\n")  # `wait` returns at once
    shutil.rmtree(device / "parts")  # (the fixture's ckpt_out calls sent this checkpoint already)
    env = {"GPU_WINDOW_WORK": str(device), "GPU_WINDOW_ROOT": str(tmp_path / "device" / "assets"),
           "GPU_WINDOW_PART_SIZE": "96K", "SEND_CKPT": "long-s0"}

    def wait(k: int) -> Path:
        out = tmp_path / f"wait{k}"
        sh(SCRIPT, "wait", 1, cwd=REPO, env={**env, "OUT": str(out)})
        return out

    def sent_names(out: Path) -> set[str]:
        return {p.name.split(".part-")[0] for p in out.glob("*.part-*")}

    w1, w2, w3 = wait(1), wait(2), wait(3)
    assert (w1 / "results.tar.gz").exists() and (w1 / "long-s0.sha256").exists()
    assert len(list(w1.glob("*.part-*"))) == 3 and len(list(w2.glob("*.part-*"))) == 4  # 3 beside the small files
    assert sent_names(w1) == sent_names(w2) == {"long-s0.step-00000004.pt"} and not list(w3.glob("*.part-*"))
    # the run goes on: the next calls send its newer checkpoint, whole, in two calls again
    ganzoo("run", "--resume", device / "runs" / "long-s0", "--set", "train.steps=6", "--device", "cpu", cwd=tmp_path)
    w4, w5 = wait(4), wait(5)
    assert sent_names(w4) == sent_names(w5) == {"long-s0.step-00000006.pt"}
    home = tmp_path / "home"
    home.mkdir()
    out = sh(KEEP, "long-s0", w1, w2, w3, w4, w5, cwd=home)
    assert "step-00000006.pt" in out.stdout
    kept = home / ".devcache" / "ckpt" / "long-s0"
    assert {p.name.split(".part-")[0] for p in kept.rglob("*.part-*")} == {"long-s0.step-00000006.pt"}
    # the machine lost before the newer checkpoint's second call: the older, complete one is kept
    out = sh(KEEP, "long-s0", w1, w2, w3, w4, cwd=home)
    assert "step-00000004.pt" in out.stdout and "part-03 of its 7 parts is missing" in out.stderr
    assert {p.name.split(".part-")[0] for p in kept.rglob("*.part-*")} == {"long-s0.step-00000004.pt"}


def test_assets_unpack_from_the_three_parts_once_and_a_warm_machine_keeps_them(tmp_path):
    """stage3's first step (``assets``): the data and weights from the parts stage1-3 carried, unpacked into the
    assets folder with no part left; on a machine that has them (a warm machine's second stage3) no part is needed;
    parts that do not make the whole tar fail the call."""
    src = tmp_path / "src"
    src.mkdir()
    payload = {"cifar10-jpeg.tar.gz": os.urandom(70_000), "fid-inception-2015-12-05.pth": os.urandom(50_000)}
    for name, data in payload.items():
        (src / name).write_bytes(data)
    subprocess.run(["tar", "cf", str(tmp_path / "all.tar"), *payload], cwd=src, check=True)
    subprocess.run(["split", "-n", "3", "-d", str(tmp_path / "all.tar"), str(tmp_path / "part-")], check=True)
    checkout, root = tmp_path / "checkout", tmp_path / "device" / "assets"
    root.mkdir(parents=True)
    for i in range(3):
        (checkout / ".devcache" / f"p{i + 1}").mkdir(parents=True)
        shutil.copy(tmp_path / f"part-0{i}", checkout / ".devcache" / f"p{i + 1}")
    env = {"GPU_WINDOW_WORK": str(tmp_path / "device" / "work"), "GPU_WINDOW_ROOT": str(root)}
    broken = sh(SCRIPT, "assets", cwd=checkout, env=env, check=False)  # stage1 and stage2 have not run: one part
    assert broken.returncode != 0 and not (root / "fid-inception-2015-12-05.pth").exists()
    for i in range(2):  # what stage1 and stage2 copy
        shutil.copy(tmp_path / f"part-0{i}", root)
    sh(SCRIPT, "assets", cwd=checkout, env=env)
    assert {p.name: p.read_bytes() for p in root.iterdir()} == payload  # no part left beside them
    shutil.rmtree(checkout / ".devcache")  # a second stage3 on the warm machine carries no part
    again = sh(SCRIPT, "assets", cwd=checkout, env=env)
    assert "in " + str(root) + " already" in again.stdout
    assert {p.name: p.read_bytes() for p in root.iterdir()} == payload
