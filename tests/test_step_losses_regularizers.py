"""The training step with relativistic losses (G's loss reads real logits) and with the regularizers that
take D's logits (LeCam, bCR), issue 20; CPU, tiny networks.

G's update runs D on real images only for a loss that sets ``g_needs_real``, on a fresh real micro-batch
through the recipe's augment, without autograd (no backward through the real half; G's gradient is the
one with the real logits as constants), with and without ``train.d_concat`` and accumulation. A
``uses_logits`` regularizer is handed exactly the images D's loss saw and its logits. The plan's rules on
``cuda_graph``, ``compile`` and several processes follow the regularizer's flags. Resume stays
bit-identical with LeCam's state and the relativistic loss's data draws; a checkpoint without the
state is refused in one line. Recipes with the new blocks train end to end through ``ganzoo run``.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import ClassVar, Literal

import pytest
import torch
import yaml

from conftest import REPO, tiny_recipe
from ganzoo.config import BlockConfig
from ganzoo.errors import GanzooError, RecipeError
from ganzoo.recipe import validate
from ganzoo.registry import REGULARIZER
from ganzoo.training import CheckpointError, list_checkpoints, load_checkpoint, train
from ganzoo.training.build import build_dataset
from ganzoo.training.checkpoint import save_checkpoint
from ganzoo.training.data import DataSampler
from ganzoo.training.plan import Plan
from ganzoo.training.step import build_train_step

pytestmark = pytest.mark.usefixtures("one_cpu_thread")  # see conftest.py

NO_SN = {"discriminator": {"weight_norm": "none", "attention": {"type": "sagan", "spectral_norm": False}}}


def _recipe(loss="hinge", regularizer="none", augment=("translation",), **train):
    raw = tiny_recipe(loss=loss, regularizer=regularizer, augment=list(augment),
                      train={"steps": 4, "batch_size": 4, "precision": "fp32", **train})
    return validate(raw, "test")


def _step(recipe):
    cpu = torch.device("cpu")
    ds = build_dataset(recipe)
    return build_train_step(recipe, DataSampler(ds.images, ds.labels, recipe.seed, cpu), cpu)


def _watch(step):
    """Record every forward of D (batch, autograd on?) and every call of the augment chain."""
    calls = {"D": [], "aug": 0}
    step.D.register_forward_hook(lambda m, args, out: calls["D"].append((len(args[0]), torch.is_grad_enabled())))

    def count(m, args):
        calls["aug"] += 1

    step.aug.register_forward_pre_hook(count)
    return calls


# ----------------------------------------------------------------------------- G's update
@pytest.mark.parametrize("d_concat", [False, True])
@pytest.mark.parametrize("accumulate", [1, 2])
@pytest.mark.parametrize("loss", ["hinge", "relativistic_hinge"])
def test_g_update_runs_d_on_augmented_reals_only_when_the_loss_reads_them(loss, accumulate, d_concat):
    step = _step(_recipe(loss, accumulate=accumulate, d_concat=d_concat))
    needs = loss.startswith("relativistic")
    assert step.plan.g_real is needs
    calls = _watch(step)
    pos = step.data.state_dict()["pos"]
    g = step.g_backward()
    micro = step.micro
    # per micro-batch: (relativistic) D on the augmented reals without autograd, then D on the fakes
    per = [(micro, False), (micro, True)] if needs else [(micro, True)]
    assert calls["D"] == per * accumulate
    assert calls["aug"] == len(per) * accumulate  # the reals go through the recipe's augment too
    assert step.data.state_dict()["pos"] - pos == (micro * accumulate if needs else 0)  # fresh reals
    assert torch.isfinite(g) and all(p.grad is not None for p in step.G.parameters() if p.requires_grad)
    assert all(p.grad is None for p in step.D.parameters())  # D frozen: no backward into it


def test_relativistic_g_gradient_treats_the_real_logits_as_constants():
    """The step's G gradients equal those of g_loss(D(aug(real)).detach(), D(aug(G(z)))) written out by
    hand with the same draws (no spectral norm, whose power iteration would move between the two)."""
    recipe = validate(tiny_recipe(loss="relativistic_non_saturating", augment=["translation", "cutout"],
                                  train={"steps": 2, "batch_size": 4, "precision": "fp32"}, **NO_SN), "t")
    step = _step(recipe)
    z, y, real, y_real = step.draw_g_inputs()
    assert real is not None and real.shape == (4, 3, 32, 32)
    state = {k: v.clone() for k, v in step.G.state_dict().items()}
    torch.manual_seed(7)
    step.g_backward(lambda i: (z, y, real, y_real))
    got = {n: p.grad.clone() for n, p in step.G.named_parameters()}

    step.G.load_state_dict(state)
    step.G.zero_grad(set_to_none=True)
    torch.manual_seed(7)
    with torch.no_grad():
        r = step.D(step.aug(real), y_real)
    f = step.D(step.aug(step.G(z, y)), y)
    step.loss.g_loss(r, f).backward()
    for n, p in step.G.named_parameters():
        torch.testing.assert_close(got[n], p.grad, rtol=1e-5, atol=1e-7, msg=n)
    assert any(float(v.abs().sum()) > 0 for v in got.values())


def test_graph_inputs_carry_g_reals_in_the_eager_order():
    from ganzoo.training.graph import CudaGraphRunner

    # no augment: its draws share the global RNG with the noise, so drawing inputs up front reorders them
    eager = _step(_recipe("relativistic_hinge", augment=(), accumulate=2, d_steps=2))
    a = eager.updates()
    given = _step(_recipe("relativistic_hinge", augment=(), accumulate=2, d_steps=2))
    d_in, g_in = CudaGraphRunner(given).draw_inputs()
    assert all(mb[2] is not None and mb[2].shape[0] == given.micro for mb in g_in)
    b = given.updates(lambda k, i: d_in[k][i], lambda i: g_in[i])
    assert torch.equal(a, b)
    assert eager.data.state_dict()["pos"] == given.data.state_dict()["pos"]


# ----------------------------------------------------------------------------- D's penalty
@pytest.mark.parametrize("d_concat", [False, True])
@pytest.mark.parametrize("name", ["lecam", "bcr"])
def test_logits_regularizer_gets_the_images_and_logits_of_ds_loss(name, d_concat):
    step = _step(_recipe(regularizer=name, augment=("translation", "cutout"), d_concat=d_concat, accumulate=2))
    assert step.plan.reg_logits and step.use_reg
    seen_inputs, given = [], []
    step.D.register_forward_hook(lambda m, args, out: seen_inputs.append((args[0].detach(), out.detach())))
    penalty = step.reg.penalty

    def record(D, real, fake, y=None, **logits):
        given.append((real.detach(), fake.detach(), logits["real_logits"].detach(), logits["fake_logits"].detach()))
        return penalty(D, real, fake, y, **logits)

    step.reg.penalty = record  # the real block's penalty, called through; records what the step hands it
    stats = step.d_backward()
    assert len(given) == 2 and torch.isfinite(stats).all() and float(stats[3]) > 0
    loss_forwards = 1 if d_concat else 2
    per_mb = loss_forwards + (1 if name == "bcr" else 0)  # D's loss forward(s), then bCR's one over T
    for k, (real, fake, rl, fl) in enumerate(given):
        first = k * per_mb
        if d_concat:
            x, out = seen_inputs[first]
            n = len(real)
            assert torch.equal(x[:n], real) and torch.equal(x[n:], fake)
            assert torch.equal(out[:n].float(), rl) and torch.equal(out[n:].float(), fl)
        else:
            (xr, outr), (xf, outf) = seen_inputs[first], seen_inputs[first + 1]
            assert torch.equal(xr, real) and torch.equal(xf, fake)
            assert torch.equal(outr.float(), rl) and torch.equal(outf.float(), fl)
    assert len(seen_inputs) == 2 * per_mb


def test_lecam_state_moves_with_d_updates():
    step = _step(_recipe(regularizer="lecam", d_steps=2, accumulate=2))
    before = {k: v.clone() for k, v in step.reg.state_dict().items()}
    step.updates()
    after = step.reg.state_dict()
    assert after["decay_power"].item() == pytest.approx(0.99 ** 4)  # one update per D micro-batch
    assert not torch.equal(before["ema_real"], after["ema_real"])


# ----------------------------------------------------------------------------- the plan's rules
@pytest.mark.parametrize("regularizer, graph_ok, compiled_d", [
    ("lecam", True, True), ("bcr", True, False), ("r1", False, False), ("gradient_penalty", False, False),
    ("none", True, True),
])
def test_regularizer_flags_decide_cuda_graph_and_compile(regularizer, graph_ok, compiled_d):
    raw = tiny_recipe(regularizer=regularizer, train={"steps": 2, "cuda_graph": True, "compile": True, "d_concat": True})
    if not graph_ok:
        with pytest.raises(RecipeError) as info:
            validate(raw, "r.yaml")
        assert info.value.lines() == [f"r.yaml: train.cuda_graph: cannot be combined with regularizer {regularizer} "
                                      "(not graph_safe: its penalty's double backward or host reads are not captured): "
                                      "set train.cuda_graph: false or use a graph_safe regularizer"]
        raw["train"]["cuda_graph"] = False
    recipe = validate(raw, "r.yaml")
    plan = Plan.resolve(recipe, torch.device("cpu"))
    assert plan.compile_d is compiled_d
    assert plan.reg_logits is (regularizer in ("lecam", "bcr"))
    if not compiled_d and regularizer != "none":
        assert f"regularizer {regularizer} runs D itself" in plan.eager_d


class _PlainConfig(BlockConfig):
    type: Literal["plain_reg_test"] = "plain_reg_test"


class PlainPenalty:
    """A regularizer declaring only what the old contract asked for: the conservative defaults apply."""

    needs_real_grad: ClassVar[bool] = False

    def __init__(self, cfg=None) -> None:
        pass

    def penalty(self, D, real, fake, y=None):
        return D(real, y).float().square().mean() * 0.0 + 1e-3


def test_a_regularizer_without_flags_keeps_the_old_rules():
    REGULARIZER.register(_PlainConfig, PlainPenalty)
    try:
        raw = tiny_recipe(regularizer="plain_reg_test", train={"steps": 2, "compile": True, "d_concat": True})
        plan = Plan.resolve(validate(raw, "r"), torch.device("cpu"))
        assert not plan.compile_d and not plan.reg_logits  # runs_d defaults to True, uses_logits to False
        raw["train"]["cuda_graph"] = True
        with pytest.raises(RecipeError, match="cannot be combined with regularizer plain_reg_test"):
            validate(raw, "r")
    finally:
        REGULARIZER.unregister("plain_reg_test")


def test_stateful_regularizer_is_refused_with_several_processes():
    recipe = validate(tiny_recipe(regularizer="lecam", train={"steps": 2, "batch_size": 4}), "r")
    with pytest.raises(GanzooError) as info:
        Plan.resolve(recipe, torch.device("cpu"), world_size=2, parallel=True)
    msg = str(info.value)
    assert msg.startswith("recipe: regularizer: lecam keeps state of its own") and "\n" not in msg
    assert Plan.resolve(recipe, torch.device("cpu"), world_size=1, parallel=True).penalty  # one process: fine
    bcr = validate(tiny_recipe(regularizer="bcr", train={"steps": 2, "batch_size": 4}), "r")
    assert Plan.resolve(bcr, torch.device("cpu"), world_size=2, parallel=True).reg_logits


# ----------------------------------------------------------------------------- resume
def _tiny_train(loss, regularizer, **train):
    raw = tiny_recipe(loss=loss, regularizer=regularizer, augment=["translation"],
                      data={"type": "synthetic", "num_images": 12, "num_test_images": 8},
                      train={"steps": 5, "batch_size": 4, "d_steps": 2, "accumulate": 2, "log_every": 1,
                             "sample_every": 0, "checkpoint_every": 2, "keep_last": 5, **train})
    return validate(raw, "tiny")


def test_resume_is_bit_identical_with_lecam_state_and_relativistic_real_draws(tmp_path):
    recipe = _tiny_train("relativistic_hinge", "lecam")
    full = train(recipe, tmp_path / "full", "cpu", progress=False)
    first = train(recipe, tmp_path / "split", "cpu", stop_after=3, progress=False)
    assert first.step == 3
    second = train(None, tmp_path / "split", "cpu", resume=True, progress=False)
    assert full.status == second.status == "finished"
    a, b = load_checkpoint(full.checkpoint), load_checkpoint(second.checkpoint)
    for key in ("generator", "discriminator", "ema", "regularizer"):
        assert a[key].keys() == b[key].keys()
        for k in a[key]:
            assert torch.equal(a[key][k], b[key][k]), f"{key}.{k}"
    assert torch.equal(a["data"]["generator"], b["data"]["generator"])
    assert [a["data"][k] for k in ("epoch", "pos", "n")] == [b["data"][k] for k in ("epoch", "pos", "n")]
    assert set(a["regularizer"]) == {"ema_real", "ema_fake", "decay_power"}
    assert a["regularizer"]["decay_power"].item() == pytest.approx(0.99 ** (5 * 2 * 2), rel=1e-5)
    rows = lambda run: [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    losses = lambda run: [(r["step"], r.get("loss/g"), r.get("loss/reg")) for r in rows(run) if "loss/g" in r]
    assert losses(tmp_path / "full") == losses(tmp_path / "split")


def test_a_checkpoint_without_the_regularizers_state_is_refused_in_one_line(tmp_path):
    recipe = _tiny_train("hinge", "lecam", steps=2, checkpoint_every=1)
    run = train(recipe, tmp_path / "r", "cpu", progress=False).run_dir
    plain = train(_tiny_train("hinge", "none", steps=2, checkpoint_every=1), tmp_path / "p", "cpu", progress=False)
    assert "regularizer" not in load_checkpoint(plain.checkpoint)  # only a stateful regularizer adds the entry
    (step, path), = [c for c in list_checkpoints(run) if c[0] == 2]
    ckpt = load_checkpoint(path)
    del ckpt["regularizer"]
    save_checkpoint(path, {k: v for k, v in ckpt.items() if k not in ("format", "version", "ganzoo_version")})
    with pytest.raises(CheckpointError) as info:
        train(None, run, "cpu", resume=True, progress=False)
    assert str(info.value) == f"{path}: regularizer: missing (regularizer lecam keeps state that the checkpoint must hold)"


# ----------------------------------------------------------------------------- end to end, `ganzoo run`
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
ENV.pop("GANZOO_INCEPTION_WEIGHTS", None)
TINY_SETS = ["generator.ch=4", "discriminator.ch=4", "generator.z_dim=16", "train.steps=3", "train.batch_size=4",
             "train.d_steps=2", "train.log_every=1", "train.sample_every=0", "train.checkpoint_every=3",
             "eval.metrics=[]", "data={type: synthetic, num_images: 24, num_test_images: 8}"]


def _ganzoo_run(recipe: Path, out: Path, *sets: str) -> subprocess.CompletedProcess:
    args = [sys.executable, "-m", "ganzoo", "run", str(recipe), "--out", str(out), "--device", "cpu",
            "--no-progress"]
    for s in sets:
        args += ["--set", s]
    return subprocess.run(args, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300)


def _finite_rows(run: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if "loss/g" in r]
    assert [r["step"] for r in train_rows] == [1, 2, 3]
    assert all(torch.isfinite(torch.tensor([r["loss/d"], r["loss/g"]])).all() for r in train_rows)
    return train_rows


@pytest.mark.parametrize("variant", ["relativistic", "lecam", "bcr"])
def test_variant_recipes_train_end_to_end_through_ganzoo_run(tmp_path, variant):
    recipe = REPO / "recipes" / "variants" / f"{variant}.yaml"
    out = _ganzoo_run(recipe, tmp_path / "runs", *TINY_SETS)
    assert out.returncode == 0, out.stderr
    run = tmp_path / "runs" / yaml.safe_load(recipe.read_text())["name"]
    rows = _finite_rows(run)
    ckpt = load_checkpoint(run / "checkpoints" / "step-00000003.pt")
    assert validate(ckpt["recipe"]).loss.type == ("relativistic_hinge" if variant == "relativistic" else "hinge")
    if variant == "relativistic":
        assert "regularizer" not in ckpt
    else:
        assert all(r["loss/reg"] > 0 for r in rows)  # the penalty is on and logged
        assert ("regularizer" in ckpt) is (variant == "lecam")


def test_a_tiny_relativistic_non_saturating_recipe_with_bcr_trains_end_to_end(tmp_path):
    raw = tiny_recipe(loss="relativistic_non_saturating", regularizer={"type": "bcr", "weight_real": 1.0},
                      augment=["flip", "translation"],
                      data={"num_images": 24, "num_test_images": 8}, generator={"z_dim": 16},
                      train={"steps": 3, "batch_size": 4, "accumulate": 2, "d_concat": True, "log_every": 1,
                             "sample_every": 0, "checkpoint_every": 3})
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(raw))
    out = _ganzoo_run(path, tmp_path / "runs")
    assert out.returncode == 0, out.stderr
    rows = _finite_rows(tmp_path / "runs" / "tiny")
    assert all(r["loss/reg"] > 0 for r in rows)
