"""When a run stops early: SIGINT/SIGTERM, the time limit (``train.time_limit_minutes``) and
``stop_after``; under torchrun every rank stops at the same step."""
from __future__ import annotations

import signal
import sys
import threading
import time
from typing import Any


class StopSignals:
    """SIGINT/SIGTERM set a flag the loop checks each step; a second signal interrupts at once."""

    def __init__(self, enabled: bool) -> None:
        self.signum: int | None = None
        self._old: dict[int, Any] = {}
        self.enabled = enabled and threading.current_thread() is threading.main_thread()

    def _handler(self, signum, frame):  # noqa: ARG002
        if self.signum is not None:
            raise KeyboardInterrupt
        self.signum = signum
        print(
            f"\nganzoo: received {signal.Signals(signum).name}; finishing the step and writing a checkpoint "
            "(send again to abort at once)",
            file=sys.stderr, flush=True,
        )

    def __enter__(self):
        if self.enabled:
            for s in (signal.SIGINT, signal.SIGTERM):
                self._old[s] = signal.signal(s, self._handler)
        return self

    def __exit__(self, *exc):
        for s, h in self._old.items():
            signal.signal(s, h)
        return False


class Stops:
    """The stop conditions of one session. :meth:`check` after each step says whether it ends the
    run like its last one (``train.steps`` reached, or the time limit: final log line, samples,
    evaluation and checkpoint); :meth:`status` after that step's hooks says why the loop ends, if it
    does ("finished", "time_limit" or "interrupted"; None: go on)."""

    def __init__(self, steps: int, stop_after: int | None, time_limit_minutes: float | None, dist: Any,
                 signals: StopSignals, start: float) -> None:
        self.steps = steps
        self.stop_at = steps if stop_after is None else min(steps, stop_after)
        self.deadline = None if time_limit_minutes is None else start + 60.0 * time_limit_minutes
        self.dist, self.signals = dist, signals
        self.finished, self.signum = False, None

    def check(self, step: int) -> bool:
        """Whether ``step`` (G steps done) ends the run: every step done or the time is up."""
        time_up = self.deadline is not None and time.monotonic() >= self.deadline
        if self.dist.sharded:  # every rank stops at the same step (time limit, a signal on any rank)
            up, sig = self.dist.agree_max([int(time_up), self.signals.signum or 0])
            time_up, self.signum = bool(up), sig or None
        self.finished = step >= self.steps or time_up
        return self.finished

    def interrupted(self) -> bool:
        """Whether a stop signal arrived (polled by an evaluation between its batches)."""
        return self.signals.signum is not None

    def status(self, step: int) -> str | None:
        """Why the loop ends after ``step``'s hooks, or None."""
        if self.finished:
            return "finished" if step >= self.steps else "time_limit"
        if not self.dist.sharded:
            self.signum = self.signals.signum
        return "interrupted" if self.signum is not None else None

    def after_loop(self, step: int) -> str:
        """The status of a loop that ran out of steps below ``train.steps`` (``stop_after``) or did not run."""
        return "finished" if step >= self.steps else "stopped"
