"""A guard against collapse (issue 16): a signal from the FID curve and from D's logit gap.

:class:`CollapseMonitor` is fed plain floats by the training loop, the FID of every evaluation and
the mean D logits on real and fake images of every log window, and says when the run looks
collapsed. Two rules, each with its reason:

* **FID** (direct evidence): the FID stays above ``best + max(fid_margin, fid_rel_margin * best)``
  for ``patience`` consecutive evaluations (best: the lowest FID so far). Defaults 3.0 points / 10 %
  and 2 evaluations: FID on 10k samples moves by about a point between evaluations of a healthy run,
  and one bad evaluation (e.g. 41.4, 55.2, 27.7 in the committed feat8 ablation) is noise, not
  collapse. A non-finite FID counts as above. The signal clears when an evaluation comes back below.
* **D's logit gap** (a proxy, usually earlier): gap = mean real logit - mean fake logit of a log
  window; its moving average over ``gap_window`` windows signals when it is above ``gap_limit``,
  at least ``gap_factor`` times its first full moving average (so a loss whose logits are naturally
  large, e.g. Wasserstein, is judged against itself) and still rising (above the moving average
  ``gap_window`` windows before); it then holds until the moving average falls below
  ``GAP_RELEASE`` (0.8) times ``gap_limit``, so that a noisy gap near the limit does not flicker. Defaults 10 windows, 5.0, 2.0. In the committed healthy runs the
  gap starts near 2.4 (the untrained D), drops to about 0.5 and creeps to 1.4 by 5.6k steps; in the
  collapsed run (issue 16) it was 3.3 at the best FID (20k steps) and 5.3 at 60k, when FID had
  gone from 33.1 to 228.7. With hinge loss any gap above 2 means D's loss is nearly zero on both
  sides, so 5.0 is far into "D has won".

By default (``enabled``, not ``early_stop``) the monitor only signals: the loop logs
``collapse/signal`` (and ``collapse/reason``, ``collapse/gap``) and warns once. With ``early_stop``
the loop stops the run when the FID rule fires (:meth:`CollapseMonitor.should_stop`); the gap rule
alone never stops a run, since it is a proxy. :meth:`~CollapseMonitor.state_dict` is a plain
JSON-able dict, stored in checkpoints so a resumed run continues the same watch;
:meth:`~CollapseMonitor.replay` rebuilds it from ``metrics.jsonl`` rows instead.
"""
from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from pydantic import Field

from ..config import Section

STATE_VERSION = 1
GAP_RELEASE = 0.8  # a gap signal holds until the moving average is below this fraction of gap_limit


class CollapseConfig(Section):
    """Watching for collapse: FID rising over evaluations, or D's logit gap running away."""

    enabled: bool = Field(True, description="watch FID and D's logit gap; log collapse/signal (only a signal "
                          "unless early_stop)")
    early_stop: bool = Field(False, description="stop the run (with a checkpoint; the best-FID one is kept) "
                             "when the FID rule signals; the logit-gap rule alone never stops a run")
    fid_margin: float = Field(3.0, ge=0, description="FID points above the best FID so far that count as "
                              "worse (the larger of this and fid_rel_margin * best is used)")
    fid_rel_margin: float = Field(0.1, ge=0, description="fraction of the best FID so far that counts as "
                                  "worse (see fid_margin)")
    patience: int = Field(2, ge=1, le=1000, description="consecutive evaluations above best + margin "
                          "before the FID rule signals")
    gap_window: int = Field(10, ge=1, le=10000, description="log windows in the moving average of D's logit "
                            "gap (mean real logit - mean fake logit)")
    gap_limit: float = Field(5.0, gt=0, description="the gap's moving average must exceed this for the gap rule "
                             "to signal")
    gap_factor: float = Field(2.0, ge=1, description="... and be at least this many times its first full moving "
                              "average (and be rising)")


@dataclass
class CollapseStatus:
    """What the monitor says after an observation: whether it signals (and why), whether the signal
    is new with this observation, and whether the run should stop (``early_stop`` and the FID rule)."""

    signal: bool
    reason: str | None = None
    new: bool = False
    stop: bool = False


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


class CollapseMonitor:
    """Fed by the loop (:meth:`observe_eval` after each evaluation, :meth:`observe_logits` after each
    log line); pure Python, no torch."""

    def __init__(self, config: CollapseConfig | Mapping[str, Any] | None = None) -> None:
        if config is None:
            config = CollapseConfig()
        elif not isinstance(config, CollapseConfig):
            config = CollapseConfig.model_validate(dict(config))
        self.config = config
        self.best_fid: float | None = None
        self.best_step: int | None = None
        self.bad_evals = 0
        self.gaps: deque[float] = deque(maxlen=2 * config.gap_window)
        self.reference: float | None = None
        self.fid_reason: str | None = None
        self.gap_reason: str | None = None
        self.fired_at: int | None = None

    @classmethod
    def start(cls, config: CollapseConfig | Mapping[str, Any] | None, state: Mapping[str, Any] | None = None,
              rows: Iterable[Mapping[str, Any]] = ()) -> "CollapseMonitor":
        """A monitor for a run that starts or resumes: from a checkpoint's ``collapse`` state when
        there is one, else by replaying ``rows`` (the resumed run's ``metrics.jsonl``, already cut at
        the checkpoint's step; none for a new run)."""
        monitor = cls(config)
        if state:
            monitor.load_state_dict(state)
        else:
            monitor.replay(rows)
        return monitor

    # ------------------------------------------------------------------ observations
    def observe_eval(self, step: int, fid: float | None) -> CollapseStatus:
        """After an evaluation: its FID (None when FID is not computed: nothing changes)."""
        was = self.signal
        if self.config.enabled and fid is not None:
            c = self.config
            if _finite(fid) and (self.best_fid is None or fid < self.best_fid):
                self.best_fid, self.best_step = float(fid), int(step)
            margin = max(c.fid_margin, c.fid_rel_margin * self.best_fid) if self.best_fid is not None else 0.0
            if not _finite(fid) or (self.best_fid is not None and fid > self.best_fid + margin):
                self.bad_evals += 1
            else:
                self.bad_evals = 0
            self.fid_reason = None
            if self.bad_evals >= c.patience:
                best = f"the best {self.best_fid:.1f} (step {self.best_step}) + {margin:.1f}" \
                    if self.best_fid is not None else "any finite value"
                self.fid_reason = (f"FID {fid:.1f} at step {step}: above {best} for {self.bad_evals} "
                                   f"evaluations in a row")
        return self._status(step, was)

    def observe_logits(self, step: int, real: float, fake: float) -> CollapseStatus:
        """After a log line: the window's mean D logit on real and on fake images."""
        was = self.signal
        if self.config.enabled and _finite(real) and _finite(fake):
            c = self.config
            self.gaps.append(float(real) - float(fake))
            ma = self.gap_average
            if ma is not None and self.reference is None:
                self.reference = ma
            if self.gap_reason is not None and ma is not None and ma > GAP_RELEASE * c.gap_limit:
                return self._status(step, was)  # once signalled, it holds until the gap is well below the limit
            self.gap_reason = None
            earlier = self._average(list(self.gaps)[: -c.gap_window]) if len(self.gaps) == 2 * c.gap_window else None
            if ma is not None and ma > c.gap_limit and ma >= c.gap_factor * max(self.reference, 0.0) \
                    and earlier is not None and ma > earlier:
                times = f" and {ma / self.reference:.1f}x its early {self.reference:.2f}" if self.reference > 0 else ""
                self.gap_reason = (f"D's logit gap (real - fake, mean of {c.gap_window} log windows) is {ma:.2f} at "
                                   f"step {step}, above {c.gap_limit:g}{times}, and rising (was {earlier:.2f})")
        return self._status(step, was)

    def replay(self, rows: Iterable[Mapping[str, Any]]) -> CollapseStatus:
        """Feed ``metrics.jsonl`` rows in order (``eval/fid``; ``logits/real`` with ``logits/fake``):
        the state a run would have reached; e.g. on resume from a checkpoint without it."""
        status = self._status(0, self.signal)
        for row in rows:
            step = int(row.get("step", 0))
            if "logits/real" in row and "logits/fake" in row:
                status = self.observe_logits(step, row["logits/real"], row["logits/fake"])
            if "eval/fid" in row:
                try:  # metrics.jsonl writes a non-finite value as a string ("nan", "inf")
                    fid = float(row["eval/fid"])
                except (TypeError, ValueError):
                    continue
                status = self.observe_eval(step, fid)
        return status

    # ------------------------------------------------------------------ results
    @property
    def gap_average(self) -> float | None:
        """Moving average of the gap over the last ``gap_window`` windows (None until there are that many)."""
        return self._average(list(self.gaps)[-self.config.gap_window:])

    def _average(self, values: list[float]) -> float | None:
        return sum(values) / len(values) if len(values) == self.config.gap_window else None

    @property
    def signal(self) -> bool:
        return self.fid_reason is not None or self.gap_reason is not None

    @property
    def reason(self) -> str | None:
        return "; ".join(r for r in (self.fid_reason, self.gap_reason) if r) or None

    def should_stop(self) -> bool:
        """``early_stop`` is on and the FID rule signals."""
        return self.config.enabled and self.config.early_stop and self.fid_reason is not None

    def _status(self, step: int, was: bool) -> CollapseStatus:
        new = self.signal and not was
        if new and self.fired_at is None:
            self.fired_at = int(step)
        return CollapseStatus(self.signal, self.reason, new, self.should_stop())

    def metrics(self) -> dict[str, Any]:
        """Keys for ``metrics.jsonl``: ``collapse/signal`` (1.0 or 0.0), ``collapse/gap`` (the moving
        average, once there is one) and ``collapse/reason`` (while signalling). Empty when disabled."""
        if not self.config.enabled:
            return {}
        out: dict[str, Any] = {"collapse/signal": 1.0 if self.signal else 0.0}
        if self.gap_average is not None:
            out["collapse/gap"] = round(self.gap_average, 6)
        if self.signal:
            out["collapse/reason"] = self.reason
        return out

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """Everything the monitor has learned, as plain JSON-able values."""
        return {"version": STATE_VERSION, "best_fid": self.best_fid, "best_step": self.best_step,
                "bad_evals": self.bad_evals, "gaps": list(self.gaps), "reference": self.reference,
                "fid_reason": self.fid_reason, "gap_reason": self.gap_reason, "fired_at": self.fired_at}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue from :meth:`state_dict`'s output (an empty mapping: start afresh)."""
        if not state:
            return
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"collapse monitor state version {state.get('version')!r} is not {STATE_VERSION}")
        self.best_fid = state.get("best_fid")
        self.best_step = state.get("best_step")
        self.bad_evals = int(state.get("bad_evals", 0))
        self.gaps = deque((float(g) for g in state.get("gaps", [])), maxlen=2 * self.config.gap_window)
        self.reference = state.get("reference")
        self.fid_reason = state.get("fid_reason")
        self.gap_reason = state.get("gap_reason")
        self.fired_at = state.get("fired_at")
