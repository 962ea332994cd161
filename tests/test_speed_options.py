"""Speed options of the training step (issue 8): they change how fast, not what is computed.

CPU only (the GPU numbers come from benchmarks/train_step.py): the loop runs the step object the
benchmark times; the fused EMA equals a plain loop bit for bit; channels_last (and fused Adam, a no-op
on the CPU) give the plain fp32 losses and gradients; bf16 autocast stays within bf16 tolerance;
torch.compile is checked only with GANZOO_TEST_COMPILE=1 (minutes on the CPU); the benchmark script
runs end to end on tiny settings and reports a failing recipe as a row instead of stopping.
"""
from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

import pytest
import torch

from ganzoo.recipe import load_recipe
from ganzoo.training import load_checkpoint, train
from ganzoo.training import step as step_mod
from ganzoo.training.ema import make_ema, update_ema

ROOT = Path(__file__).resolve().parents[1]
QUICK = str(ROOT / "recipes" / "quickstart.yaml")
SAGAN = str(ROOT / "recipes" / "sagan.yaml")
TINY = ["generator.ch=8", "discriminator.ch=8", "generator.z_dim=16"]


def _bench(name: str):
    spec = importlib.util.spec_from_file_location(f"_bench_{name}", ROOT / "benchmarks" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _tiny_recipe(*extra: str):
    return load_recipe(QUICK, ["train.steps=3", "train.batch_size=8", "train.log_every=1", "train.sample_every=0",
                               "train.checkpoint_every=100", "eval.metrics=[]", "data.num_images=64", *extra])


def test_speed_option_defaults():
    tc = _tiny_recipe().train
    assert (tc.compile, tc.fused_optim, tc.tf32, tc.ema.foreach, tc.channels_last) == (False, True, True, True, False)


def test_foreach_ema_equals_a_plain_loop_exactly():
    recipe = _tiny_recipe()
    from ganzoo.training.build import build_generator

    torch.manual_seed(0)
    G = build_generator(recipe)
    a, b = make_ema(G), make_ema(G)
    for step in range(4):
        with torch.no_grad():
            for p in G.parameters():
                p.add_(torch.randn_like(p) * 0.1)
            for buf in G.buffers():
                if buf.is_floating_point():
                    buf.add_(torch.randn_like(buf))
        decay = 0.0 if step == 0 else 0.999
        update_ema(a, G, decay, foreach=True)
        # the plain loop, written here independently of update_ema: parameters averaged, buffers
        # copied except spectral norm's u, v, which take one power iteration on the EMA's own weight
        with torch.no_grad():
            for e, p in zip(b.parameters(), G.parameters()):
                e.copy_(p) if decay == 0.0 else e.lerp_(p, 1.0 - decay)
            for (name, e), buf in zip(b.named_buffers(), G.buffers()):
                if not (name.endswith(".u") or name.endswith(".v")):
                    e.copy_(buf)
            for m in b.modules():
                for plist in getattr(m, "parametrizations", {}).values():
                    sn = plist[0]
                    mat = plist.original.flatten(1) if sn.dim == 0 else plist.original.movedim(sn.dim, 0).flatten(1)
                    v = mat.t() @ sn.u
                    v = v / (v.norm() + sn.eps)
                    u = mat @ v
                    sn.u.copy_(u / (u.norm() + sn.eps))
                    sn.v.copy_(v)
        for (n, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
            torch.testing.assert_close(x, y, rtol=1e-6, atol=1e-7, msg=n)
        loop = make_ema(G)
        loop.load_state_dict(b.state_dict())
    # update_ema(foreach=False) is that loop too
    c = make_ema(G)
    c.load_state_dict(b.state_dict())
    update_ema(a, G, 0.9, foreach=True)
    update_ema(c, G, 0.9, foreach=False)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), c.state_dict().values()))
    # and it is the EMA formula (up to rounding)
    for e, p, old in zip(a.parameters(), G.parameters(), b.parameters()):
        torch.testing.assert_close(e, 0.9 * old + 0.1 * p, rtol=1e-6, atol=1e-6)


def test_the_loop_calls_the_step_object_the_benchmark_times(tmp_path, monkeypatch):
    calls = []
    real_call = step_mod.TrainStep.__call__

    def counting(self, step):
        calls.append(step)
        return real_call(self, step)

    monkeypatch.setattr(step_mod.TrainStep, "__call__", counting)
    result = train(_tiny_recipe(), tmp_path / "run", "cpu", progress=False)
    assert result.step == 3 and calls == [0, 1, 2]


def test_ema_loop_option_trains_bit_identically(tmp_path):
    a = train(_tiny_recipe(), tmp_path / "a", "cpu", progress=False)
    b = train(_tiny_recipe("train.ema.foreach=false"), tmp_path / "b", "cpu", progress=False)
    ca, cb = load_checkpoint(a.checkpoint), load_checkpoint(b.checkpoint)
    for key in ("generator", "discriminator", "ema"):
        for name, value in ca[key].items():
            assert torch.equal(value, cb[key][name]), (key, name)


def test_channels_last_and_fused_adam_give_the_plain_fp32_losses_and_gradients():
    eq = _bench("step_equivalence")
    res = eq.compare_steps(SAGAN, TINY + ["train.batch_size=8", "train.d_steps=2"],
                           ["train.channels_last=true", "train.fused_optim=true"], torch.device("cpu"))
    assert not res["bf16"]
    assert res["ok"], [c for c in res["checks"] if not c["ok"]]
    grads = [c for c in res["checks"] if "gradients" in c["check"]]
    assert len(grads) == 2 and all(c["error"] < 5e-3 for c in grads)  # fp32 reordering only


def test_bf16_step_is_within_bf16_tolerance_of_fp32():
    eq = _bench("step_equivalence")
    # one D step, as when this tolerance was set (recipes/sagan.yaml now takes 4, whose Adam updates
    # amplify bf16 rounding in the whole-iteration comparison)
    res = eq.compare_steps(SAGAN, TINY + ["train.batch_size=32", "train.d_steps=1"], eq.FAST, torch.device("cpu"))
    assert res["bf16"]
    assert res["ok"], [c for c in res["checks"] if not c["ok"]]
    # and it is not trivially equal (autocast really ran in bf16)
    assert max(c["error"] for c in res["checks"] if "gradients" in c["check"]) > 1e-4


def test_equivalence_check_notices_a_different_step():
    eq = _bench("step_equivalence")
    # a different loss is a different function: the check must fail
    res = eq.compare_steps(SAGAN, TINY + ["train.batch_size=8"], ["loss=non_saturating"], torch.device("cpu"))
    assert not res["ok"]


@pytest.mark.skipif(os.environ.get("GANZOO_TEST_COMPILE") != "1", reason="torch.compile on the CPU takes minutes: GANZOO_TEST_COMPILE=1")
@pytest.mark.parametrize("d_concat", [False, True])  # True: D is compiled too
def test_compiled_step_matches_eager_fp32(d_concat):
    eq = _bench("step_equivalence")
    res = eq.compare_steps(SAGAN, TINY + ["train.batch_size=8", "train.d_steps=1", f"train.d_concat={d_concat}"],
                           ["train.channels_last=true", "train.compile=true"], torch.device("cpu"))
    assert res["ok"], [c for c in res["checks"] if not c["ok"]]


def test_benchmark_script_end_to_end_on_cpu(tmp_path, capsys):
    bench = _bench("train_step")
    out = tmp_path / "bench"
    code = bench.main([
        "--out", str(out), "--device", "cpu", "--recipes", "cifar", "does/not/exist.yaml",
        "--variants", "fp32", "bf16-cl-fused", "ema-loop", "sync", "real", "dense-attn",
        "--iters", "2", "--warmup", "1", "--min-iters", "1",
        "--set", *TINY, "train.batch_size=4", "train.d_steps=2",
    ])
    assert code == 0
    printed = capsys.readouterr().out
    data = json.loads((out / "train_step.json").read_text())
    rows = {(r["recipe"], r["variant"]): r for r in data["rows"]}
    assert rows[("does/not/exist.yaml", "-")]["status"] == "failed"  # one line, the others still ran
    for v in ("fp32", "bf16-cl-fused", "ema-loop", "sync", "dense-attn"):
        r = rows[("cifar", v)]
        assert r["status"] == "ok", r
        assert r["iters"] >= 1 and r["s_per_iter"] > 0 and r["tflops"] > 0
        assert r["img_per_s"] == pytest.approx(2 * 4 / r["s_per_iter"])
    assert rows[("cifar", "real")]["status"] == "skipped"  # no --data-root
    assert data["meta"]["flops"]["cifar"] > 0
    md = (out / "train_step.md").read_text()
    assert "| cifar | bf16-cl-fused | ok |" in md
    assert printed.rstrip().endswith(md.rstrip().splitlines()[-1])  # the table is printed last
    assert len((out / "rows.jsonl").read_text().splitlines()) == len(data["rows"])


def test_benchmark_reports_a_failing_variant_and_runs_the_rest(tmp_path, monkeypatch):
    bench = _bench("train_step")
    real_build = bench.build_train_step

    def flaky(recipe, data, device):
        if recipe.train.ema.foreach is False:
            raise RuntimeError("boom\nsecond line")
        return real_build(recipe, data, device)

    monkeypatch.setattr(bench, "build_train_step", flaky)
    out = tmp_path / "bench"
    assert bench.main(["--out", str(out), "--device", "cpu", "--recipes", "cifar", "--no-flops",
                       "--variants", "ema-loop", "bf16", "--iters", "1", "--warmup", "0", "--min-iters", "1",
                       "--set", *TINY, "train.batch_size=4", "train.d_steps=1"]) == 0
    rows = {r["variant"]: r for r in json.loads((out / "train_step.json").read_text())["rows"]}
    assert rows["ema-loop"]["status"] == "failed" and rows["ema-loop"]["reason"] == "RuntimeError: boom"
    assert rows["bf16"]["status"] == "ok"


@pytest.mark.skipif(not (ROOT.parent / "shared" / "data" / "cifar10-jpeg.tar.gz").is_file(), reason="no CIFAR-10 tar.gz")
def test_benchmark_real_data_rows(tmp_path):
    bench = _bench("train_step")
    out = tmp_path / "bench"
    assert bench.main(["--out", str(out), "--device", "cpu", "--recipes", "cifar", "--no-flops",
                       "--variants", "real", "real-host", "--iters", "1", "--warmup", "1", "--min-iters", "1",
                       "--data-root", str(ROOT.parent / "shared" / "data" / "cifar10-jpeg.tar.gz"),
                       "--set", *TINY, "train.batch_size=4", "train.d_steps=1"]) == 0
    rows = {r["variant"]: r for r in json.loads((out / "train_step.json").read_text())["rows"]}
    assert rows["real"]["status"] == "ok", rows["real"]
    assert rows["real-host"]["status"] == "ok", rows["real-host"]


def test_d_concat_gives_the_two_forward_gradients_without_spectral_norm():
    # train.d_concat runs D once over cat(real, fake): without spectral norm (whose power iteration
    # is the one thing that runs once instead of twice; attention has its own) nothing else may change
    eq = _bench("step_equivalence")
    no_sn = ["discriminator.weight_norm=none", "discriminator.attention.spectral_norm=false"]
    # augment=[]: augmentations drawn for real and fake together differ from two separate draws
    res = eq.compare_steps(SAGAN, TINY + ["train.batch_size=8", "train.d_steps=2", "augment=[]", *no_sn],
                           ["train.d_concat=true"], torch.device("cpu"))
    assert res["ok"], [c for c in res["checks"] if not c["ok"]]
    grads = [c for c in res["checks"] if "gradients" in c["check"]]
    assert len(grads) == 2 and all(c["error"] < 1e-4 for c in grads)


@pytest.mark.parametrize("d_concat", [False, True])
def test_d_concat_runs_d_once_per_micro_batch(d_concat):
    from ganzoo.training.data import DataSampler
    from ganzoo.training.build import build_dataset

    recipe = _tiny_recipe("train.accumulate=2", f"train.d_concat={d_concat}")
    ds = build_dataset(recipe)
    step = step_mod.build_train_step(recipe, DataSampler(ds.images, ds.labels, 0, torch.device("cpu")),
                                     torch.device("cpu"))
    batches = []
    step.D.register_forward_hook(lambda m, args, out: batches.append(len(args[0])))
    stats = step.d_backward()
    assert batches == ([8, 8] if d_concat else [4, 4, 4, 4])  # 2 micro-batches of 4 real + 4 fake
    assert torch.isfinite(stats).all()
