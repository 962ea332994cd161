"""Property checks for any loss or regularizer block (a plugin's too), by registry name.

``check_loss(name, device)`` and ``check_regularizer(name, device)`` (a name or a registry ``Entry``) run hypothesis over random
inputs and raise ``AssertionError`` on the first violation. Blocks are built with their default
config. ``tests/test_properties_models.py`` runs every registered loss and regularizer through them,
so a plugin's blocks are checked with no new test code::

    from ganzoo.testing.losses import check_loss
    check_loss("myplugin.my_loss", "cpu")

Properties: a loss is a finite float32 scalar, also for bf16 logits and extreme (+-1e3) logits, and
sends finite gradients to both logit tensors; it points the right way (:func:`check_loss_direction`):
D's loss falls as real logits rise and fake logits fall, G's loss falls as fake logits rise, with a
gradient that is not all zero. A regularizer's penalty is a finite, non-negative
float32 scalar; when it is positive it is differentiable and reaches D's parameters.
"""
from __future__ import annotations

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from ..contracts import flag
from ..registry import LOSS, REGULARIZER, Entry

SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True,
                    database=None)  # no .hypothesis folder where `ganzoo check` runs

_logit = st.floats(min_value=-1e3, max_value=1e3, allow_nan=False, allow_infinity=False, width=32)
_logits = st.lists(_logit, min_size=1, max_size=16)


def _entry(reg, entry: str | Entry) -> Entry:
    """The registry entry (an ``Entry`` is used as given: it may come from a throwaway registry)."""
    return entry if isinstance(entry, Entry) else reg.get(entry)


def _scalar(value: torch.Tensor, what: str) -> None:
    assert torch.is_tensor(value), f"{what} returned {type(value).__name__}, not a tensor"
    assert value.dim() == 0, f"{what} returned shape {tuple(value.shape)}, not a scalar"
    assert value.dtype == torch.float32, f"{what} returned {value.dtype}, not float32"
    assert torch.isfinite(value), f"{what} is not finite: {value.item()}"


def check_loss(name: str | Entry, device: str | torch.device = "cpu") -> None:
    """Hypothesis checks of the loss ``name`` (name or registry entry): finite fp32 scalars, finite gradients."""
    entry = _entry(LOSS, name)
    name, loss = entry.name, entry.build()

    @SETTINGS
    @given(real=_logits, fake=_logits, bf16=st.booleans())
    def run(real: list[float], fake: list[float], bf16: bool) -> None:
        dtype = torch.bfloat16 if bf16 else torch.float32
        r = torch.tensor(real, device=device, dtype=dtype, requires_grad=True)
        f = torch.tensor(fake, device=device, dtype=dtype, requires_grad=True)
        d = loss.d_loss(r, f)
        _scalar(d, f"{name}.d_loss")
        gr, gf = torch.autograd.grad(d, (r, f), allow_unused=False)
        assert torch.isfinite(gr).all() and torch.isfinite(gf).all(), f"{name}.d_loss: non-finite gradient"
        f2 = torch.tensor(fake, device=device, dtype=dtype, requires_grad=True)
        g = loss.g_loss(f2)
        _scalar(g, f"{name}.g_loss")
        (gg,) = torch.autograd.grad(g, f2)
        assert torch.isfinite(gg).all(), f"{name}.g_loss: non-finite gradient"

    run()
    check_loss_direction(entry, device, loss)


# where D is wrong (reals scored as fake, fakes as real) and where G is losing (fakes scored as fake)
_wrong_real = st.lists(st.floats(-3.0, -0.125), min_size=1, max_size=8)
_wrong_fake = st.lists(st.floats(0.125, 3.0), min_size=1, max_size=8)


def check_loss_direction(name: str | Entry, device: str | torch.device = "cpu", loss=None) -> None:
    """The losses point the right way (fp32, hypothesis over logits on the wrong side of 0).

    Where D is wrong (real logits in [-3, -0.125], fake logits in [0.125, 3]): raising any real logit
    does not raise D's loss and lowering any fake logit does not raise it, strictly so for the
    batch as a whole (gradients); and D's loss is lower with the signs right (reals +|r|, fakes
    -|f|) than wrong. Where G is losing (fake logits in [-3, -0.125]): raising any fake logit does
    not raise G's loss, strictly for the batch (G's gradient is not all zero); and G's loss is lower
    for fakes scored +|f| than -|f|. Holds for margin losses (hinge), least squares with targets
    either side of 0, and label smoothing; a flipped sign or a constant fails.
    """
    entry = _entry(LOSS, name)
    name, loss = entry.name, (entry.build() if loss is None else loss)

    def t(values, grad=False):
        return torch.tensor(values, device=device, dtype=torch.float32, requires_grad=grad)

    @SETTINGS
    @given(real=_wrong_real, fake=_wrong_fake)
    def run(real: list[float], fake: list[float]) -> None:
        r, f = t(real, True), t(fake, True)
        gr, gf = torch.autograd.grad(loss.d_loss(r, f), (r, f))
        assert (gr <= 0).all() and float(gr.sum()) < 0, (
            f"{name}.d_loss does not fall as real logits rise (d/d real = {gr.tolist()} at real {real}, fake {fake})")
        assert (gf >= 0).all() and float(gf.sum()) > 0, (
            f"{name}.d_loss does not fall as fake logits fall (d/d fake = {gf.tolist()} at real {real}, fake {fake})")
        right = float(loss.d_loss(t(real).abs(), -t(fake).abs()))
        wrong = float(loss.d_loss(-t(real).abs(), t(fake).abs()))
        assert right < wrong, f"{name}.d_loss is {right:.4g} with D right but {wrong:.4g} with D wrong"

        g_in = (-t(fake).abs()).requires_grad_(True)  # fakes scored as fake: G is losing
        (gg,) = torch.autograd.grad(loss.g_loss(g_in), g_in)
        assert float(gg.abs().sum()) > 0, f"{name}.g_loss has an all-zero gradient (at fake logits {g_in.tolist()})"
        assert (gg <= 0).all() and float(gg.sum()) < 0, (
            f"{name}.g_loss does not fall as fake logits rise (d/d fake = {gg.tolist()} at fake {g_in.tolist()})")
        fooled = float(loss.g_loss(t(fake).abs()))
        caught = float(loss.g_loss(-t(fake).abs()))
        assert fooled < caught, f"{name}.g_loss is {fooled:.4g} when G fools D but {caught:.4g} when it does not"

    run()


class TinyCritic(nn.Module):
    """A small real conv critic (with a class embedding) to exercise regularizers on: ``[B]`` logits."""

    def __init__(self, channels: int = 3, num_classes: int = 4, width: int = 8) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, width, 3, padding=1)
        self.conv2 = nn.Conv2d(width, width, 3, stride=2, padding=1)
        self.linear = nn.Linear(width, 1)
        self.embed = nn.Embedding(num_classes, width)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        h = torch.nn.functional.softplus(self.conv2(torch.nn.functional.softplus(self.conv1(x))))
        h = h.sum((2, 3))
        out = self.linear(h).squeeze(1)
        if y is not None:
            out = out + (self.embed(y) * h).sum(1)
        return out


def check_regularizer(name: str | Entry, device: str | torch.device = "cpu") -> None:
    """Hypothesis checks of the regularizer ``name`` (name or registry entry) on :class:`TinyCritic`."""
    entry = _entry(REGULARIZER, name)
    name, reg = entry.name, entry.build()
    assert isinstance(getattr(reg, "needs_real_grad", None), bool), f"{name}: needs_real_grad must be a bool"
    active = flag("regularizer", reg, "active")
    assert isinstance(active, bool), f"{name}: active must be a bool"

    @SETTINGS
    @given(seed=st.integers(0, 2**31 - 1), batch=st.integers(1, 4), labels=st.booleans(),
           scale=st.sampled_from([1e-3, 1.0, 30.0]))
    def run(seed: int, batch: int, labels: bool, scale: float) -> None:
        gen = torch.Generator().manual_seed(seed)
        torch.manual_seed(seed)
        D = TinyCritic().to(device)
        real = (torch.rand(batch, 3, 8, 8, generator=gen) * 2 - 1).to(device) * scale
        fake = (torch.rand(batch, 3, 8, 8, generator=gen) * 2 - 1).to(device) * scale
        y = torch.randint(0, 4, (batch,), generator=gen).to(device) if labels else None
        p = reg.penalty(D, real, fake, y)
        _scalar(p, f"{name}.penalty")
        assert p >= 0, f"{name}.penalty is negative: {p.item()}"
        if p.requires_grad:
            p.backward()
            grads = [q.grad for q in D.parameters() if q.grad is not None]
            assert grads, f"{name}.penalty does not reach D's parameters"
            assert all(torch.isfinite(g).all() for g in grads), f"{name}.penalty: non-finite gradient"
        else:
            assert p == 0, f"{name}.penalty is {p.item()} but not differentiable"
        if not active:
            assert p == 0, f"{name} declares active = False but its penalty is {p.item()}"

    run()
