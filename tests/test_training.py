"""The training loop and its checkpoints, through the Python API (CPU, tiny networks).

Resume is exact (bit-identical weights to an uninterrupted run), checkpoint writes are atomic,
checkpoints load with weights_only and refuse pickled code, NaN stops the run at the right step
keeping the last good checkpoint, the time limit stops cleanly, samples and exports are right.
"""
from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import pytest
import torch

from ganzoo.recipe import load_recipe, validate
from ganzoo.training import (
    CheckpointError,
    TrainingDiverged,
    export_generator,
    generator_from_checkpoint,
    list_checkpoints,
    load_checkpoint,
    load_generator,
    train,
)
from ganzoo import atomic as atomic_mod
from ganzoo.training import step as step_mod
from ganzoo.training.checkpoint import FORMAT, FORMAT_VERSION, save_checkpoint
from ganzoo.training.checkpoint import prune_checkpoints, resolve_checkpoint
from ganzoo.training.logs import read_metrics

from conftest import SHARED, tiny_recipe

WEIGHTS = SHARED / "weights" / "fid-inception-2015-12-05.pth"

TINY = tiny_recipe(train={"steps": 6, "batch_size": 4, "log_every": 2, "sample_every": 3, "checkpoint_every": 2,
                          "keep_last": 2, "ema": {"decay": 0.9, "start": 2}})


pytestmark = pytest.mark.usefixtures("one_cpu_thread")  # see conftest.py


def tiny(**train) -> "Recipe":  # noqa: F821
    data = json.loads(json.dumps(TINY))
    extra = train.pop("top", {})
    data["train"].update(train)
    data.update(extra)
    return validate(data, "tiny")


def assert_same_state(a: dict, b: dict, what: str) -> None:
    assert a.keys() == b.keys(), what
    for k in a:
        assert torch.equal(a[k], b[k]), f"{what}.{k} differs"


def assert_same_optim(a: dict, b: dict, what: str) -> None:
    assert a["param_groups"] == b["param_groups"], what
    assert a["state"].keys() == b["state"].keys(), what
    for i in a["state"]:
        for k, v in a["state"][i].items():
            assert torch.equal(v, b["state"][i][k]), f"{what}.state.{i}.{k} differs"


# ----------------------------------------------------------------------------- resume
def test_resumed_run_is_bit_identical_to_an_uninterrupted_one(tmp_path):
    # d_steps, accumulation, an RNG-consuming regularizer, EMA start and epoch boundaries
    # (12 images, 4 * 2 D steps per G step) all cross the interruption.
    data = dict(TINY["data"], num_images=12)
    recipe = tiny(steps=5, d_steps=2, accumulate=2, top={"regularizer": "gradient_penalty", "data": data})
    full = train(recipe, tmp_path / "full", "cpu", progress=False)
    assert full.status == "finished" and full.step == 5

    first = train(recipe, tmp_path / "split", "cpu", stop_after=3, progress=False)
    assert first.status == "stopped" and first.step == 3
    assert [s for s, _ in list_checkpoints(tmp_path / "split")] == [2, 3]
    second = train(None, tmp_path / "split", "cpu", resume=True, progress=False)
    assert second.status == "finished" and second.step == 5

    a, b = load_checkpoint(full.checkpoint), load_checkpoint(second.checkpoint)
    for key in ("generator", "discriminator", "ema"):
        assert_same_state(a[key], b[key], key)
    assert_same_optim(a["g_optim"], b["g_optim"], "g_optim")
    assert_same_optim(a["d_optim"], b["d_optim"], "d_optim")
    assert torch.equal(a["rng"]["torch"], b["rng"]["torch"])
    assert a["data"]["epoch"] == b["data"]["epoch"] >= 1 and a["data"]["pos"] == b["data"]["pos"]

    # the log continues where it stopped (the interruption adds a line for its partial window; each
    # session logs its first step); windows that did not straddle it have the same averages
    def losses(run):
        return {r["step"]: (r["loss/d"], r["loss/g"]) for r in read_metrics(run) if "loss/d" in r}

    full_log, split_log = losses(tmp_path / "full"), losses(tmp_path / "split")
    assert list(full_log) == [1, 2, 4, 5] and list(split_log) == [1, 2, 3, 4, 5]
    assert full_log[1] == split_log[1] and full_log[2] == split_log[2] and full_log[5] == split_log[5]


def test_resume_refuses_a_different_recipe_but_accepts_more_steps(tmp_path):
    run = tmp_path / "r"
    train(tiny(steps=2, sample_every=0), run, "cpu", progress=False)
    other = tiny(steps=2, top={"seed": 4})
    with pytest.raises(Exception) as err:
        train(other, run, "cpu", resume=True, progress=False)
    assert "seed" in str(err.value) and "recipe.yaml" in str(err.value)
    longer = train(tiny(steps=3, sample_every=0), run, "cpu", resume=True, progress=False)
    assert longer.step == 3 and longer.status == "finished"
    assert load_recipe(run / "recipe.yaml").train.steps == 3


# ----------------------------------------------------------------------------- checkpoint files
def _payload(value: float) -> dict:
    return {"step": int(value), "w": torch.full((1000,), value)}


def test_interrupted_checkpoint_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.pt"
    save_checkpoint(path, _payload(1.0))

    # crash after the data is written, before the rename
    def no_rename(src, dst):
        raise KeyboardInterrupt("killed before rename")

    monkeypatch.setattr(atomic_mod.os, "replace", no_rename)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, _payload(2.0))
    monkeypatch.undo()
    assert torch.equal(load_checkpoint(path)["w"], torch.full((1000,), 1.0))

    # crash in the middle of writing the bytes
    real_save = torch.save

    def half_save(obj, f):
        real_save(obj, f)
        f.truncate(f.tell() // 2)
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", half_save)
    with pytest.raises(CheckpointError, match="disk full.*the previous one is intact"):
        save_checkpoint(path, _payload(3.0))
    monkeypatch.undo()
    assert torch.equal(load_checkpoint(path)["w"], torch.full((1000,), 1.0))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.pt"]  # no temp files left


def test_a_truncated_checkpoint_is_reported_not_loaded(tmp_path):
    path = tmp_path / "bad.pt"
    save_checkpoint(path, _payload(1.0))
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="unreadable checkpoint"):
        load_checkpoint(path)


class _RunsCode:
    """Unpickling this would create a file: a checkpoint must never be able to do that."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_checkpoints_are_loaded_weights_only_and_pickled_code_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    torch.save({"format": FORMAT, "version": FORMAT_VERSION, "step": 1, "x": _RunsCode(marker)}, evil)
    # the payload really runs code when unpickled without weights_only
    torch.load(evil, weights_only=False)
    assert marker.exists()
    marker.unlink()

    with pytest.raises(CheckpointError, match="refused: not a weights-only checkpoint"):
        load_checkpoint(evil)
    assert not marker.exists()

    # a real checkpoint (all RNG states included) loads with plain weights_only=True
    run = train(tiny(steps=1, sample_every=0), tmp_path / "run", "cpu", progress=False)
    ckpt = torch.load(run.checkpoint, weights_only=True)
    assert {"generator", "discriminator", "ema", "g_optim", "d_optim", "rng", "data", "recipe", "step"} <= set(ckpt)
    assert {"torch", "numpy", "python", "cuda"} <= set(ckpt["rng"])
    assert validate(ckpt["recipe"]) == tiny(steps=1, sample_every=0)


def test_a_plain_pickle_is_not_a_checkpoint(tmp_path):
    path = tmp_path / "plain.pkl"
    path.write_bytes(pickle.dumps({"format": FORMAT}, protocol=2))
    with pytest.raises(CheckpointError):
        load_checkpoint(path)


# ----------------------------------------------------------------------------- stopping
class _NanAfter:
    """The real loss, made to return NaN from its n-th D loss on (fault injection)."""

    def __init__(self, inner, n: int) -> None:
        self.inner, self.n, self.calls = inner, n, 0

    def d_loss(self, real, fake):
        self.calls += 1
        out = self.inner.d_loss(real, fake)
        return out * float("nan") if self.calls >= self.n else out

    def g_loss(self, real, fake):
        return self.inner.g_loss(real, fake)


def test_non_finite_loss_stops_naming_step_and_quantity_keeping_last_good_checkpoint(tmp_path, monkeypatch):
    from ganzoo.registry import LOSS

    class Injecting:
        def build(self, spec):
            return _NanAfter(LOSS.build(spec), n=4)  # one D loss per step: NaN at step 4

    monkeypatch.setattr(step_mod, "LOSS", Injecting())  # the step (ganzoo/training/step.py) builds the loss
    run = tmp_path / "nan"
    with pytest.raises(TrainingDiverged) as err:
        train(tiny(steps=6, checkpoint_every=1, keep_last=10), run, "cpu", progress=False)
    msg = str(err.value)
    assert "step 4" in msg and "loss/d" in msg and "step-00000003.pt" in msg
    assert [s for s, _ in list_checkpoints(run)] == [1, 2, 3]
    last = load_checkpoint(run / "checkpoints" / "step-00000003.pt")
    assert all(torch.isfinite(v).all() for v in last["generator"].values() if v.is_floating_point())
    assert err.value.exit_code != 0


def test_time_limit_stops_cleanly_with_a_checkpoint(tmp_path):
    result = train(tiny(steps=1000, time_limit_minutes=1e-6, sample_every=0), tmp_path / "t", "cpu", progress=False)
    assert result.status == "time_limit" and result.step == 1
    assert load_checkpoint(result.checkpoint)["step"] == 1


def test_keep_last_prunes_old_checkpoints(tmp_path):
    result = train(tiny(steps=5, checkpoint_every=1, keep_last=2, sample_every=0), tmp_path / "k", "cpu",
                   progress=False)
    assert [s for s, _ in list_checkpoints(result.run_dir)] == [4, 5]


# ----------------------------------------------------------------------------- samples, export
def test_sample_grids_have_one_row_per_class(tmp_path):
    from PIL import Image

    result = train(tiny(steps=3, sample_every=2), tmp_path / "s", "cpu", progress=False)
    grids = sorted(p.name for p in (result.run_dir / "samples").iterdir())
    assert grids == ["step-00000002.png", "step-00000003.png"]
    img = Image.open(result.run_dir / "samples" / grids[-1])
    assert img.size == (8 * 34 + 2, 10 * 34 + 2) and img.mode == "RGB"  # 8 columns, 10 classes, 32 px + pad 2


def test_export_round_trip_gives_the_same_images(tmp_path):
    result = train(tiny(steps=2, sample_every=0), tmp_path / "e", "cpu", progress=False)
    out = export_generator(result.run_dir, tmp_path / "export")
    assert sorted(p.name for p in out.iterdir()) == ["generator.safetensors", "recipe.yaml"]
    loaded = load_generator(out)
    reference, _ = generator_from_checkpoint(load_checkpoint(result.checkpoint), "ckpt")
    assert_same_state(reference.state_dict(), loaded.state_dict(), "G")
    z, y = torch.randn(6, loaded.z_dim), torch.arange(6)
    with torch.no_grad():
        assert torch.equal(loaded(z, y), reference(z, y))
    assert not loaded.training and loaded.recipe.name == "tiny"


# ----------------------------------------------------------------------------- evaluation
def test_pruning_keeps_the_last_checkpoints_and_the_best(tmp_path):
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    for step in (1, 2, 3, 4, 5):
        (folder / f"step-{step:08d}.pt").write_bytes(b"x")
    (folder / ".step-00000006.pt.abc.tmp").write_bytes(b"half")  # left by a killed writer
    prune_checkpoints(tmp_path, keep_last=2, keep={2})
    assert sorted(p.name for p in folder.iterdir()) == ["step-00000002.pt", "step-00000004.pt", "step-00000005.pt"]


@pytest.mark.skipif(not WEIGHTS.is_file(), reason=f"needs the FID Inception weights at {WEIGHTS}")
def test_evaluation_during_training_logs_metrics_and_keeps_the_best_checkpoint(tmp_path, monkeypatch):
    monkeypatch.setenv("GANZOO_CACHE", str(tmp_path / "cache"))
    data = dict(TINY["data"], num_test_images=6)
    evals = {"metrics": ["fid", "kid"], "every": 1, "num_samples": 6, "batch_size": 6, "inception_weights": str(WEIGHTS)}
    recipe = tiny(steps=3, checkpoint_every=100, keep_last=1, sample_every=0, top={"eval": evals, "data": data})
    result = train(recipe, tmp_path / "ev", "cpu", progress=False)
    rows = [r for r in read_metrics(result.run_dir) if "eval/fid" in r]
    assert [r["step"] for r in rows] == [1, 2, 3] and all("eval/kid" in r for r in rows)
    fids = {r["step"]: r["eval/fid"] for r in rows}
    best = json.loads((result.run_dir / "checkpoints" / "best.json").read_text())
    assert best["step"] == min(fids, key=fids.get) and best["fid"] == fids[best["step"]]
    # the best checkpoint is written even off the checkpoint schedule, and survives keep_last=1
    assert {s for s, _ in list_checkpoints(result.run_dir)} == {best["step"], 3}
    assert load_checkpoint(resolve_checkpoint(result.run_dir, best=True))["step"] == best["step"]
    assert result.eval["fid"] == fids[3]


# ----------------------------------------------------------------------------- CUDA (pytest -m gpu)
def _sync_warnings(tmp_path: Path, steps: int) -> int:
    """Host syncs CUDA reports during a whole run of ``steps`` steps (logs/checkpoints only at the end)."""
    import warnings

    recipe = tiny(steps=steps, log_every=1000, checkpoint_every=1000, sample_every=0,
                  top={"data": dict(TINY["data"], num_images=64)})  # one epoch: no per-epoch transfer
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            train(recipe, tmp_path / f"sync{steps}", "cuda", progress=False)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message) for w in caught)


@pytest.mark.gpu
def test_cuda_steps_never_wait_for_the_host(tmp_path):
    # set-up and the end of the run sync; the steps in between must not, so 2 and 6 steps sync as often
    assert _sync_warnings(tmp_path, 2) == _sync_warnings(tmp_path, 6)


@pytest.mark.gpu
def test_cuda_bf16_channels_last_run_and_resume(tmp_path):
    recipe = tiny(steps=4, channels_last=True, top={"regularizer": "r1"})
    assert recipe.train.precision == "auto"  # -> bf16 autocast on CUDA
    first = train(recipe, tmp_path / "gpu", "cuda", stop_after=2, progress=False)
    second = train(None, tmp_path / "gpu", "cuda", resume=True, progress=False)
    assert (first.step, second.step, second.status) == (2, 4, "finished")
    ckpt = load_checkpoint(second.checkpoint)
    assert len(ckpt["rng"]["cuda"]) == torch.cuda.device_count()
    assert all(torch.isfinite(v).all() for v in ckpt["ema"].values() if v.is_floating_point())
    rows = [r for r in read_metrics(tmp_path / "gpu") if "loss/d" in r]
    # log_every 2, plus each session's first step (1, and 3 after the resume): a slow start says it is alive
    assert [r["step"] for r in rows] == [1, 2, 3, 4] and all(r["speed/img_per_s"] > 0 for r in rows)
