"""The collapse signal (ganzoo/training/collapse.py): synthetic FID and logit sequences shaped like the
collapsed run of issue 16, a healthy noisy one, and every committed run's own metrics.jsonl."""
from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from pydantic import ValidationError

from conftest import REPO
from ganzoo.training.collapse import CollapseConfig, CollapseMonitor
from ganzoo.training.logs import read_metrics

# issue 16's collapsed run: FID 33.1 at 20k, 87.7 at 40k, 228.7 at 60k; D's real logit 1.6 -> 3.6 while
# the fake one stayed near -1.7
COLLAPSED_FID = [(20000, 33.1), (40000, 87.7), (60000, 228.7)]
HEALTHY_FID = [68.9, 41.5, 34.3, 36.0, 32.6, 33.5, 31.0]  # noisy but improving: must never signal
LOG_EVERY = 50


def collapsed_logits(seed: int = 0) -> list[tuple[int, float, float]]:
    """(step, real, fake) per log window up to 60k: the committed runs' start (an untrained D's gap of
    2.4, then about 0.5), rising to the collapsed run's 1.6 / -1.7 at 20k, then real 1.6 -> 3.6."""
    rng, rows = random.Random(seed), []
    for step in range(LOG_EVERY, 60001, LOG_EVERY):
        if step == LOG_EVERY:
            real, fake = 0.0, -2.4
        elif step <= 20000:
            t = step / 20000
            real, fake = 0.2 + 1.4 * t, -0.3 - 1.4 * t
        else:
            real, fake = 1.6 + 2.0 * (step - 20000) / 40000, -1.7
        rows.append((step, real + rng.gauss(0, 0.15), fake + rng.gauss(0, 0.15)))
    return rows


def feed(monitor: CollapseMonitor, logits, fids) -> list[tuple[int, str]]:
    """Feed log windows and evaluations in step order; (step, reason) each time a signal starts."""
    events = sorted([(s, 0, (r, f)) for s, r, f in logits] + [(s, 1, fid) for s, fid in fids])
    fired = []
    for step, kind, value in events:
        status = monitor.observe_logits(step, *value) if kind == 0 else monitor.observe_eval(step, value)
        if status.new:
            fired.append((step, status.reason))
    return fired


def test_the_collapsed_run_signals_by_fid_at_60k():
    monitor = CollapseMonitor(CollapseConfig(gap_limit=1e9))  # the FID rule alone
    fired = feed(monitor, [], COLLAPSED_FID)
    assert [s for s, _ in fired] == [60000]
    assert "FID 228.7 at step 60000" in fired[0][1] and "best 33.1 (step 20000)" in fired[0][1]
    assert monitor.metrics()["collapse/signal"] == 1.0 and "FID 228.7" in monitor.metrics()["collapse/reason"]


def test_the_collapsed_runs_logit_gap_signals_as_it_runs_away():
    monitor = CollapseMonitor()
    fired = feed(monitor, collapsed_logits(), [])
    assert len(fired) == 1
    step, reason = fired[0]
    assert 48000 <= step <= 60000, step  # the gap passes 5.0 in the last quarter, never before 40k
    assert "D's logit gap" in reason and "rising" in reason
    assert not monitor.should_stop()  # the gap rule alone never stops a run
    for step in range(60050, 60501, 50):  # D loses its lead: the signal clears once the gap is well below
        status = monitor.observe_logits(step, 0.5, -0.5)
    assert not status.signal and monitor.metrics()["collapse/gap"] < 4.0


@pytest.mark.parametrize("seed", range(1, 6))
def test_the_gap_rule_is_not_decided_by_the_noise(seed):
    fired = feed(CollapseMonitor(), collapsed_logits(seed), [])
    assert len(fired) == 1 and 48000 <= fired[0][0] <= 60000


@pytest.mark.parametrize("early_stop", [False, True])
def test_both_rules_on_the_collapsed_run_and_early_stop_is_opt_in(early_stop):
    monitor = CollapseMonitor(CollapseConfig(early_stop=early_stop))
    fired = feed(monitor, collapsed_logits(), COLLAPSED_FID)
    assert fired and fired[0][0] < 60000  # the gap first; the FID joins at 60k
    assert monitor.fid_reason is not None and monitor.fired_at == fired[0][0]
    assert monitor.should_stop() is early_stop
    assert monitor.observe_eval(60001, 229.0).stop is early_stop


def test_a_healthy_noisy_run_never_signals():
    monitor = CollapseMonitor()
    fids = [(1500 * (i + 1), f) for i, f in enumerate(HEALTHY_FID)]
    healthy_logits = [(s, r, f) for s, r, f in collapsed_logits(seed=1) if s <= 10000]  # gap 0.5 -> 1.9
    assert feed(monitor, healthy_logits, fids) == []
    assert monitor.best_fid == 31.0 and monitor.metrics()["collapse/signal"] == 0.0


def test_one_bad_evaluation_is_noise_and_a_signal_clears_when_fid_recovers():
    monitor = CollapseMonitor()
    for step, fid in [(1, 40.0), (2, 35.0), (3, 45.0), (4, 34.0), (5, 50.0)]:
        assert not monitor.observe_eval(step, fid).signal
    status = monitor.observe_eval(6, float("nan"))  # a non-finite FID counts as worse
    assert status.signal and status.new and "2 evaluations in a row" in status.reason
    assert monitor.observe_eval(7, 36.0).signal is False  # within 34 + 3.4
    assert CollapseMonitor(CollapseConfig(patience=3)).replay(
        [{"step": 1, "eval/fid": 40.0}, {"step": 2, "eval/fid": 50.0}, {"step": 3, "eval/fid": 60.0}]).signal is False


def test_the_margin_is_relative_at_high_fid():
    monitor = CollapseMonitor()
    assert not any(monitor.observe_eval(s, f).signal for s, f in [(1, 200.0), (2, 215.0), (3, 218.0)])  # < 200 + 20
    assert monitor.observe_eval(4, 221.0).signal is False and monitor.observe_eval(5, 221.0).signal


def test_a_loss_with_large_logits_is_judged_against_its_own_scale():
    monitor = CollapseMonitor()
    wide = [(s, 20.0 + 0.001 * s, -20.0) for s in range(50, 20001, 50)]  # gap 40 -> 60: 1.5x its start
    assert feed(monitor, wide, []) == []
    flat = CollapseMonitor()
    assert feed(flat, [(s, 3.0, -3.0) for s in range(50, 5001, 50)], []) == []  # above 5 but not rising


def test_state_dict_round_trips_through_json_and_resumes_the_same_watch():
    logits, fids = collapsed_logits(), COLLAPSED_FID
    whole = feed(CollapseMonitor(), logits, fids)
    first = CollapseMonitor()
    cut = 45000
    feed(first, [r for r in logits if r[0] <= cut], [f for f in fids if f[0] <= cut])
    resumed = CollapseMonitor()
    resumed.load_state_dict(json.loads(json.dumps(first.state_dict())))
    assert resumed.state_dict() == first.state_dict()
    rest = feed(resumed, [r for r in logits if r[0] > cut], [f for f in fids if f[0] > cut])
    assert rest == [w for w in whole if w[0] > cut] and resumed.state_dict() == feed_state(logits, fids)
    with pytest.raises(ValueError, match="version"):
        resumed.load_state_dict({"version": 99})
    fresh = CollapseMonitor()
    fresh.load_state_dict({})
    assert fresh.state_dict() == CollapseMonitor().state_dict()


def test_start_resumes_from_a_checkpoint_state_or_else_from_the_metrics():
    logits, fids = collapsed_logits(), COLLAPSED_FID
    rows = sorted([{"step": s, "logits/real": r, "logits/fake": f} for s, r, f in logits]
                  + [{"step": s, "eval/fid": str(fid) if s == 40000 else fid} for s, fid in fids],
                  key=lambda r: (r["step"], "eval/fid" in r))
    full = feed_state(logits, fids)
    assert CollapseMonitor.start(None, rows=rows).state_dict() == full  # "87.7" as metrics.jsonl might hold it
    assert CollapseMonitor.start({}, state=full, rows=[{"step": 1, "eval/fid": 1.0}]).state_dict() == full
    assert CollapseMonitor.start(None).state_dict() == CollapseMonitor().state_dict()


def feed_state(logits, fids) -> dict:
    monitor = CollapseMonitor()
    feed(monitor, logits, fids)
    return monitor.state_dict()


def test_disabled_never_signals_and_logs_nothing():
    monitor = CollapseMonitor({"enabled": False, "early_stop": True})
    assert feed(monitor, collapsed_logits(), COLLAPSED_FID) == []
    assert monitor.metrics() == {} and not monitor.should_stop()


def test_config_fields_are_described_and_checked():
    for name, field in CollapseConfig.model_fields.items():
        assert field.description, name
    with pytest.raises(ValidationError):
        CollapseConfig(patience=0)
    with pytest.raises(ValidationError):
        CollapseConfig(gap_factor=0.5)
    with pytest.raises(ValidationError):
        CollapseConfig(fid_margn=3.0)  # unknown fields are refused, as in recipes


# the two runs of docs/quality/collapse.md that collapsed (FID ~30 at 10-20k, 44-58 at 30k, 161-203 at 40k)
COLLAPSED = {REPO / "docs" / "quality" / "runs" / name: 40000 for name in ("fast-s0", "graph-s0")}
COMMITTED = sorted(p.parent for p in (REPO / "docs").rglob("metrics.jsonl") if p.parent not in COLLAPSED)


@pytest.mark.parametrize("run", COMMITTED, ids=[p.name for p in COMMITTED])
def test_every_committed_run_replays_without_a_signal(run: Path):
    rows = read_metrics(run)
    assert any("eval/fid" in r for r in rows) and any("logits/real" in r for r in rows)
    monitor = CollapseMonitor()
    monitor.replay(rows)
    assert monitor.fired_at is None, monitor.reason


@pytest.mark.parametrize("run", sorted(COLLAPSED), ids=[p.name for p in sorted(COLLAPSED)])
def test_the_committed_collapsed_runs_signal(run: Path):
    """The real collapses (evaluated every 10k steps) signal at their second evaluation above best + margin."""
    monitor = CollapseMonitor()
    monitor.replay(read_metrics(run))
    assert monitor.fired_at == COLLAPSED[run], (monitor.fired_at, monitor.reason)
