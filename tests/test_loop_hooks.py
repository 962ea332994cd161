"""The loop's evaluation hooks (issues 16, 17): the collapse signal in metrics.jsonl and its opt-in early
stop, no second evaluation of (nearly) the same weights at the end, the checkpoint written before the
final evaluation, and an evaluation that a signal interrupts. Evaluation results are scripted (the
real metrics are tested in test_metrics.py); everything else is the real loop on CPU."""
from __future__ import annotations

import json

import pytest
import torch

from conftest import SHARED, tiny_recipe
from ganzoo.recipe import validate
from ganzoo.training import loop as loop_mod
from ganzoo.training import train
from ganzoo.training.checkpoint import list_checkpoints
from ganzoo.training.evaluation import EvaluationInterrupted, Evaluator
from ganzoo.training.logs import read_metrics

pytestmark = pytest.mark.usefixtures("one_cpu_thread")  # see conftest.py


def recipe(steps: int, every: int, **train_extra):
    data = tiny_recipe(train={"steps": steps, "batch_size": 4, "log_every": 2, "sample_every": 0,
                              "checkpoint_every": 1000, **train_extra},
                       eval={"metrics": ["fid"], "every": every, "num_samples": 8})
    return validate(data, "tiny")


@pytest.fixture
def scripted(monkeypatch):
    """The loop's evaluator returns the next FID of a list, and records the step it evaluated; the
    checkpoints present when it runs are recorded too."""
    calls = []

    def install(fids, run_dir, raise_at=None):
        calls.clear()

        class Scripted:
            def __init__(self, *args, **kwargs):
                pass

            def __call__(self, net, seed, interrupted=None, progress=False):
                calls.append((len(calls), [s for s, _ in list_checkpoints(run_dir)] if run_dir.exists() else []))
                if raise_at is not None and len(calls) - 1 == raise_at:
                    raise EvaluationInterrupted("evaluation interrupted by a signal")
                return {"fid": fids[len(calls) - 1]}

        monkeypatch.setattr(loop_mod, "Evaluator", Scripted)
        monkeypatch.setattr(loop_mod, "check_eval_ready", lambda recipe, source: True)
        return calls

    return install


def evals(run):
    return [(r["step"], r["eval/fid"]) for r in read_metrics(run) if "eval/fid" in r]


def test_a_rising_fid_signals_in_metrics_and_early_stop_ends_the_run(tmp_path, scripted, capsys):
    run = tmp_path / "r"
    scripted([50.0, 40.0, 60.0, 70.0, 80.0, 90.0], run)
    result = train(recipe(12, 2, collapse={"early_stop": True}), run, "cpu", progress=False)
    assert result.status == "collapsed" and result.step == 8  # 40 is the best; 60 and 70 are 2 bad in a row
    rows = [r for r in read_metrics(run) if "eval/fid" in r]
    assert [r["collapse/signal"] for r in rows] == [0.0, 0.0, 0.0, 1.0]
    assert "above the best 40.0" in rows[-1]["collapse/reason"]
    assert "collapse signal at step 8" in capsys.readouterr().err
    assert [s for s, _ in list_checkpoints(run)][-1] == 8  # the state reached is checkpointed
    best = json.loads((run / "checkpoints" / "best.json").read_text())
    assert best["step"] == 4 and best["fid"] == 40.0  # and the best one is kept


def test_without_early_stop_the_signal_is_only_logged(tmp_path, scripted):
    run = tmp_path / "r"
    scripted([50.0, 40.0, 60.0, 70.0, 80.0, 90.0], run)
    result = train(recipe(12, 2), run, "cpu", progress=False)
    assert result.status == "finished" and result.step == 12
    assert [r["collapse/signal"] for r in read_metrics(run) if "eval/fid" in r][-1] == 1.0


def test_the_collapse_watch_resumes_from_the_checkpoint(tmp_path, scripted):
    run = tmp_path / "r"
    scripted([50.0, 40.0, 60.0, 70.0], run)
    train(recipe(6, 2, checkpoint_every=2, collapse={"early_stop": True}), run, "cpu", progress=False)  # 40, 60
    ckpt = torch.load(list_checkpoints(run)[-1][1], weights_only=True)
    assert ckpt["collapse"]["best_fid"] == 40.0
    resumed = train(recipe(12, 2, checkpoint_every=2, collapse={"early_stop": True}), run, "cpu", resume=True,
                    progress=False)
    assert resumed.status == "collapsed" and resumed.step == 8  # 60 (before) and 70 (after) in a row


def test_no_second_evaluation_right_after_one(tmp_path, scripted):
    """The run's end one step after a scheduled evaluation keeps that evaluation (within a tenth of
    eval.every); further away, the end is evaluated."""
    run = tmp_path / "near"
    scripted([30.0, 31.0], run)
    result = train(recipe(21, 20), run, "cpu", progress=False)
    assert evals(run) == [(20, 30.0)] and result.eval == {"fid": 30.0}
    run = tmp_path / "far"
    scripted([30.0, 31.0], run)
    train(recipe(25, 20), run, "cpu", progress=False)
    assert evals(run) == [(20, 30.0), (25, 31.0)]


def test_the_final_checkpoint_is_written_before_the_final_evaluation(tmp_path, scripted):
    run = tmp_path / "r"
    calls = scripted([30.0], run)
    train(recipe(5, 0), run, "cpu", progress=False)
    assert calls == [(0, [5])]  # when the end's evaluation started, step 5 was already checkpointed


def test_an_interrupted_evaluation_loses_only_itself(tmp_path, scripted, capsys):
    run = tmp_path / "r"
    scripted([30.0], run, raise_at=0)
    result = train(recipe(5, 0), run, "cpu", progress=False)
    assert result.status == "finished" and [s for s, _ in list_checkpoints(run)] == [5]
    assert evals(run) == [] and "evaluation at step 5 was interrupted" in capsys.readouterr().err


@pytest.mark.skipif(not (SHARED / "weights" / "fid-inception-2015-12-05.pth").is_file(), reason="needs ../shared")
def test_the_evaluator_stops_at_the_next_batch_once_signalled(tmp_path):
    """The real evaluator polls ``interrupted`` before each generated batch."""
    r = recipe(2, 0)
    r = validate({**r.model_dump(mode="json"),
                  "eval": {**r.eval.model_dump(mode="json"), "num_samples": 40, "batch_size": 10,
                           "inception_weights": str(SHARED / "weights" / "fid-inception-2015-12-05.pth")}}, "t")
    from ganzoo.training.build import build_generator

    G = build_generator(r).eval()
    polls = []

    def interrupted():
        polls.append(1)
        return len(polls) > 2  # a signal after the second batch

    with pytest.raises(EvaluationInterrupted):
        Evaluator(r, torch.device("cpu"))(G, seed=0, interrupted=interrupted)
    assert len(polls) == 3
