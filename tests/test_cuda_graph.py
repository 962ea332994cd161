"""``train.cuda_graph`` (issue 8): the iteration replayed as a CUDA graph computes what the eager step does.

CPU: the recipe refuses what the graph cannot capture (a regularizer that is not graph_safe), and on the
CPU the option is ignored (bit-identical to the eager step). GPU (``pytest -m gpu``): eager and graphed
steps built from the same seed (fp32, TF32 off, deterministic kernels) agree in their stats and
weights over warm-up, capture and replays, and after ``invalidate_graph()`` with new learning rates;
also with a relativistic loss (G's reals are graph inputs) and LeCam (its averages are updated in
place by the replays); bCR is captured and trains.
"""
from __future__ import annotations

import pytest
import torch

from conftest import tiny_recipe
from ganzoo.errors import RecipeError
from ganzoo.recipe import validate
from ganzoo.training.data import DataSampler
from ganzoo.training.build import build_dataset
from ganzoo.training.graph import GRAPH_WARMUP, CudaGraphRunner
from ganzoo.training.plan import Plan
from ganzoo.training.step import build_train_step


def _recipe(top=None, **train):
    return validate(tiny_recipe(**(top or {}), train={"steps": 10, "batch_size": 8, "d_steps": 2, "precision": "fp32",
                                                      "tf32": False, "deterministic": True, **train}), "test")


def _step(recipe, device):
    ds = build_dataset(recipe)
    data = DataSampler(ds.images, ds.labels, recipe.seed, device, recipe.train.channels_last)
    return build_train_step(recipe, data, device)


def _run(step, start: int, n: int) -> torch.Tensor:
    return torch.stack([step(i) for i in range(start, start + n)]).cpu()


def _weights(step) -> dict[str, torch.Tensor]:
    out = {}
    for name, m in (("G", step.G), ("D", step.D), ("G_ema", step.G_ema)):
        out.update({f"{name}.{k}": v.detach().float().cpu().clone() for k, v in m.state_dict().items()})
    return out


def _assert_close(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], rtol=1e-4, atol=1e-5):
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=rtol, atol=atol, msg=lambda m, k=k: f"{k}: {m}")


# ----------------------------------------------------------------------------- CPU
def test_recipe_refuses_what_a_graph_cannot_capture():
    raw = tiny_recipe(regularizer="r1", train={"steps": 2, "cuda_graph": True})
    with pytest.raises(RecipeError) as info:
        validate(raw, "r.yaml")
    msg = str(info.value)
    assert "train.cuda_graph" in msg and "regularizer" in msg
    raw["train"]["cuda_graph"] = False
    validate(raw, "r.yaml")  # each alone is fine


@pytest.mark.parametrize("train, regularizer, compiled_d", [
    ({"compile": True, "d_concat": True, "cuda_graph": True}, "none", True),  # graph + compile: accepted
    ({"compile": True, "d_concat": False}, "none", False),  # two D forwards before one backward
    ({"compile": True, "d_concat": True}, "r1", False),  # double backward through D
    ({"compile": False, "d_concat": True}, "none", False),
])
def test_which_recipes_compile_d(train, regularizer, compiled_d):
    recipe = validate(tiny_recipe(regularizer=regularizer, train={"steps": 2, **train}), "r.yaml")
    assert Plan.resolve(recipe, torch.device("cpu")).compile_d is compiled_d


def test_cuda_graph_is_ignored_on_the_cpu(one_cpu_thread):
    # each step is built (reseeding every RNG) and run before the next: they share the global RNGs
    cpu = torch.device("cpu")
    plain = _step(_recipe(), cpu)
    a, wa = _run(plain, 0, GRAPH_WARMUP + 2), _weights(plain)
    graphed = _step(_recipe(cuda_graph=True), cpu)
    assert not graphed.graphed
    b, wb = _run(graphed, 0, GRAPH_WARMUP + 2), _weights(graphed)
    assert torch.equal(a, b)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_inputs_can_be_passed_to_the_shared_updates(one_cpu_thread):
    """The graph body is ``updates`` reading given inputs; drawn up front in the eager order they give
    the eager step's numbers exactly (CPU)."""
    cpu = torch.device("cpu")
    eager = _step(_recipe(accumulate=2), cpu)
    a, wa = eager.updates(), _weights(eager)
    given = _step(_recipe(accumulate=2), cpu)
    d_in, g_in = CudaGraphRunner(given).draw_inputs()  # the graph's draws, in the eager order
    b, wb = given.updates(lambda k, i: d_in[k][i], lambda i: g_in[i]), _weights(given)
    assert torch.equal(a, b)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


# ----------------------------------------------------------------------------- GPU
@pytest.mark.gpu
@pytest.mark.parametrize("accumulate, channels_last, d_concat, compile", [
    (1, False, False, False), (2, True, False, False), (2, True, True, False),
    (2, True, True, True),  # G and D compiled, their kernels captured (compared with the same compiled eager)
])
def test_graph_replay_equals_eager(accumulate, channels_last, d_concat, compile):
    dev = torch.device("cuda")
    extra = {"accumulate": accumulate, "channels_last": channels_last, "d_concat": d_concat, "compile": compile}
    n = GRAPH_WARMUP + 4  # warm-up, the capture's replay, three more replays
    eager = _step(_recipe(**extra), dev)  # built (reseeding every RNG) and run before the other
    a, wa = _run(eager, 0, n), _weights(eager)
    graphed = _step(_recipe(cuda_graph=True, **extra), dev)
    assert graphed.graphed
    b, wb = _run(graphed, 0, n), _weights(graphed)
    assert graphed.graph.graph is not None
    torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5)
    _assert_close(wb, wa)
    assert graphed.data.state_dict()["pos"] == eager.data.state_dict()["pos"]


@pytest.mark.gpu
@pytest.mark.parametrize("d_concat", [False, True])
def test_graph_replay_equals_eager_with_a_relativistic_loss_and_lecam(d_concat):
    """G's real micro-batch (a graph input) and LeCam's averages (buffers updated in place by the
    replays) give the eager step's stats, weights and averages."""
    dev = torch.device("cuda")
    top = {"loss": "relativistic_hinge", "regularizer": "lecam"}
    n = GRAPH_WARMUP + 4
    eager = _step(_recipe(top, accumulate=2, d_concat=d_concat), dev)
    a, wa = _run(eager, 0, n), _weights(eager)
    graphed = _step(_recipe(top, cuda_graph=True, accumulate=2, d_concat=d_concat), dev)
    assert graphed.graphed and graphed.plan.g_real and graphed.plan.reg_logits
    b, wb = _run(graphed, 0, n), _weights(graphed)
    assert graphed.graph.graph is not None
    torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5)
    _assert_close(wb, wa)
    ra, rb = eager.reg.state_dict(), graphed.reg.state_dict()
    assert rb["decay_power"].item() == pytest.approx(ra["decay_power"].item()) == pytest.approx(0.99 ** (n * 2 * 2))
    _assert_close({k: v.cpu() for k, v in rb.items()}, {k: v.cpu() for k, v in ra.items()})
    assert graphed.data.state_dict()["pos"] == eager.data.state_dict()["pos"]


@pytest.mark.gpu
def test_bcr_is_captured_and_replayed():
    """bCR's transform draws run inside the graph (their values then differ from an eager run's, which
    interleaves them with the noise draws): the replays train, with a positive, finite penalty."""
    dev = torch.device("cuda")
    step = _step(_recipe({"regularizer": "bcr", "augment": ["translation"]}, cuda_graph=True, d_concat=True), dev)
    before = {k: v.clone() for k, v in _weights(step).items()}
    rows = _run(step, 0, GRAPH_WARMUP + 3)
    assert step.graph.graph is not None and torch.isfinite(rows).all()
    assert (rows[:, 3] > 0).all()  # loss/reg
    assert not torch.equal(rows[-1], rows[-2])  # replays draw fresh transforms and data
    after = _weights(step)
    assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith("D."))


@pytest.mark.gpu
def test_rng_and_data_draws_match_eager():
    """Same number of data and noise draws as eager: after the same iterations both leave the global
    CUDA stream and the data order at the same place."""
    dev = torch.device("cuda")
    states = []
    for graph in (False, True):
        step = _step(_recipe(cuda_graph=graph), dev)
        _run(step, 0, GRAPH_WARMUP + 3)
        torch.cuda.synchronize()
        states.append((torch.cuda.get_rng_state().clone(), step.data.state_dict()))
    assert torch.equal(states[0][0], states[1][0])
    assert states[0][1]["pos"] == states[1][1]["pos"] and states[0][1]["epoch"] == states[1][1]["epoch"]


@pytest.mark.gpu
def test_invalidate_and_new_learning_rate_continue_correctly():
    """A new learning rate, and optimiser state reloaded (as resume and rollback do), each followed
    by ``invalidate_graph()``: the graphed run goes on like the eager one."""
    dev = torch.device("cuda")
    n = GRAPH_WARMUP + 2
    out = []
    for graph in (False, True):  # one after the other: both use the global CUDA RNG
        s = _step(_recipe(cuda_graph=graph), dev)
        rows = [_run(s, 0, n)]
        for opt in (s.g_opt, s.d_opt):
            for group in opt.param_groups:
                group["lr"] *= 0.5
        s.invalidate_graph()
        assert s.graph is None or s.graph.graph is None
        rows.append(_run(s, n, n))
        assert not graph or s.graph.graph is not None
        for opt in (s.g_opt, s.d_opt):
            opt.load_state_dict(opt.state_dict())  # new state tensors: the old graph would miss them
        s.invalidate_graph()
        rows.append(_run(s, 2 * n, n))
        out.append((torch.cat(rows), _weights(s)))
    (a, wa), (b, wb) = out
    torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5)
    _assert_close(wb, wa)
