"""``train.cuda_graph`` (CUDA only): a step's updates captured once as a ``torch.cuda.CUDAGraph`` and
replayed, which removes the host's launch overhead (thousands of small kernels per iteration).

:class:`CudaGraphRunner` runs around a :class:`~ganzoo.training.step.TrainStep` (it uses only the
step's ``updates``, ``draw_d_inputs``, ``draw_g_inputs``, ``tc`` and ``device``, so this module
imports nothing of the step). The graph body is the eager code (``step.updates``) reading static
buffers; before each replay the inputs are drawn exactly as the eager step draws them (data order,
then noise, per micro-batch; then G's noise and labels, and for a loss with ``g_needs_real`` G's
real micro-batch from the data order) and copied in. State a captured penalty updates in place (a
``graph_safe`` regularizer's, LeCam's averages) lives in tensors the graph keeps reading. The first ``GRAPH_WARMUP``
calls run eagerly on a side stream; :meth:`CudaGraphRunner.invalidate` (after reloading state or
changing a learning rate) starts over. The EMA stays eager (its decay changes every step).
"""
from __future__ import annotations

from typing import Any

import torch

GRAPH_WARMUP = 2  # eager iterations (on a side stream: cudnn autotuning, lazy state) before a capture


class CudaGraphRunner:
    """``runner()``: one iteration of ``step.updates`` (warm-up, capture, then replays); see the module doc."""

    def __init__(self, step: Any) -> None:
        self.step = step
        self._side: torch.cuda.Stream | None = None
        self.invalidate()

    def invalidate(self) -> None:
        """Forget the captured iteration (it bakes in the learning rates and the optimisers' state
        tensors). The next calls warm up eagerly again, then capture anew."""
        self.graph: torch.cuda.CUDAGraph | None = None
        self._static_out: torch.Tensor | None = None
        self._static_flat: list[torch.Tensor] = []
        self._warmup_left = GRAPH_WARMUP

    def draw_inputs(self) -> tuple[list[list[tuple]], list[tuple]]:
        """Every input of one iteration, drawn in the eager step's order (per D update and
        micro-batch: the data, then the noise; then G's noise and labels, and its reals if drawn)."""
        step, tc = self.step, self.step.tc
        d = [[step.draw_d_inputs() for _ in range(tc.accumulate)] for _ in range(tc.d_steps)]
        g = [step.draw_g_inputs() for _ in range(tc.accumulate)]
        return d, g

    def __call__(self) -> torch.Tensor:
        """``step.updates()`` through the graph: ``GRAPH_WARMUP`` eager iterations on a side stream
        (real iterations: they count), then one capture; every call from then on draws its inputs
        eagerly (same draws, same order), copies them into the graph's static buffers and replays."""
        if self._warmup_left > 0:
            self._warmup_left -= 1
            return self._warm_up()
        d_in, g_in = self.draw_inputs()
        if self.graph is None:
            self._capture(d_in, g_in)
        else:
            for buf, t in zip(self._static_flat, _flat(d_in, g_in)):
                buf.copy_(t)
        self.graph.replay()
        return self._static_out.clone()  # the loop keeps each step's row

    def _warm_up(self) -> torch.Tensor:
        current = torch.cuda.current_stream(self.step.device)
        if self._side is None:
            self._side = torch.cuda.Stream(self.step.device)
        side = self._side
        side.wait_stream(current)
        with torch.cuda.stream(side):
            stats = self.step.updates()
        current.wait_stream(side)
        stats.record_stream(current)
        return stats

    def _capture(self, d_in, g_in) -> None:
        """Capture ``step.updates`` reading static input buffers, which start as copies of this
        iteration's inputs (clone keeps channels_last); nothing runs until the replay."""
        d_static = [[tuple(None if t is None else t.clone() for t in mb) for mb in upd] for upd in d_in]
        g_static = [tuple(None if t is None else t.clone() for t in mb) for mb in g_in]
        self._static_flat = list(_flat(d_static, g_static))
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self._static_out = self.step.updates(lambda k, i: d_static[k][i], lambda i: g_static[i])
        self.graph = graph


def _flat(d_in, g_in):
    """The tensors of one iteration's inputs (None entries are skipped: labels of an unconditional model,
    G's reals when the loss does not read real logits)."""
    for upd in d_in:
        for mb in upd:
            yield from (t for t in mb if t is not None)
    for mb in g_in:
        yield from (t for t in mb if t is not None)
