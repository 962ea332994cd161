"""Property checks of every registered attention, norm and weight-norm block (plugins' included).

Parametrised from the registries (ids are block names), so a new block, or an installed plugin's,
is checked without touching this file; blocks are built from their kind's contract only.
The checks and their precisions come from :mod:`ganzoo.testing.conformance`, the list ``ganzoo check``
runs too: fp32 on CPU; fp32, bf16 (parameters and inputs cast) and bf16 autocast (how training runs)
on CUDA, marked ``gpu``; bf16 autocast on CPU too, since it exercises the fp32-under-autocast paths
(spectral norm's power iteration) cheaply.
"""
from __future__ import annotations

import pytest
import torch

from conftest import kit_cases

pytestmark = pytest.mark.usefixtures("one_cpu_thread")  # see conftest.py


@pytest.mark.parametrize("check", kit_cases("attention", "norm", "weight_norm"))
def test_layer_properties(check):
    check()


def test_an_all_zero_gradient_gets_one_more_batch_but_a_dead_parameter_still_fails():
    """_check_grads retries once on other inputs (a ReLU bottleneck fed one sample can be dead in every
    unit); a parameter whose gradient is zero by construction fails all the same."""
    from torch import nn

    from ganzoo.testing.layers import _check_grads

    class Bottleneck(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1 = nn.Linear(4, 1)
            self.fc2 = nn.Linear(1, 4)

        def forward(self, x):
            return self.fc2(torch.relu(self.fc1(x)))

    m = Bottleneck()
    with torch.no_grad():
        m.fc1.bias.fill_(-100.0)  # dead for inputs of normal size
    m(torch.randn(1, 4)).sum().backward()
    assert not m.fc1.weight.grad.any()
    with pytest.raises(AssertionError, match="fc1.weight' got an all-zero gradient"):
        _check_grads(m, "bottleneck")

    def more():  # inputs that wake the unit up
        m(1000.0 * m.fc1.weight.detach().sign() + torch.randn(8, 4)).sum().backward()

    _check_grads(m, "bottleneck", more)  # passes: the zero was the input's, not the wiring's

    class Dead(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.ones(4))

        def forward(self, x):
            return x + 0.0 * self.w

    d = Dead()
    run = lambda: (d(torch.randn(8, 4)) * torch.randn(8, 4)).sum().backward()  # noqa: E731
    run()
    with pytest.raises(AssertionError, match="'w' got an all-zero gradient"):
        _check_grads(d, "dead", run)
