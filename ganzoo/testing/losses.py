"""Property checks for any loss or regularizer block (a plugin's too), by registry name.

``check_loss(name, device)`` and ``check_regularizer(name, device)`` (a name or a registry ``Entry``) run hypothesis over random
inputs and raise ``AssertionError`` on the first violation. Blocks are built with their default
config. ``tests/test_properties_models.py`` runs every registered loss and regularizer through them,
so a plugin's blocks are checked with no new test code::

    from ganzoo.testing.losses import check_loss
    check_loss("myplugin.my_loss", "cpu")

Properties: a loss is a finite float32 scalar, also for bf16 logits and extreme (+-1e3) logits, and
sends finite gradients to both logit tensors (G's loss: to the fake logits; it is called as the trainer
calls it, ``g_loss(real_logits, fake_logits)`` with detached real logits when the loss sets
``g_needs_real`` and ``None`` otherwise, so a G loss that reads undeclared real logits fails); it
points the right way (:func:`check_loss_direction`): D's loss falls as real logits rise and fake
logits fall, G's loss falls as fake logits rise, with a gradient that is not all zero. A regularizer's
penalty is a finite, non-negative float32 scalar; when it is positive it is differentiable and reaches
D's parameters; one that ``uses_logits`` gives the same penalty when handed D's logits as when it
computes them; a ``stateful`` one's ``state_dict()`` holds tensors only, and a fresh block loaded with
it gives the same penalty as the original (so resumed runs continue exactly).

Every check runs under :func:`~ganzoo.testing.strategies.strict_fp32` (a decorator on each, so it holds
when one is called alone): on CUDA, TF32 convolutions round ~1e-3 apart, which bCR's squared logit
difference turned into a failed comparison on an H100.
"""
from __future__ import annotations

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from ..contracts import flag
from ..registry import LOSS, REGULARIZER, Entry
from .strategies import strict_fp32

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


def _g_loss(loss, name: str, real: torch.Tensor | None, fake: torch.Tensor) -> torch.Tensor:
    """``loss.g_loss`` called as the trainer calls it: the real logits detached when the loss sets
    ``g_needs_real``, else None (a loss that reads them without declaring it fails here, in one line)."""
    needs = flag("loss", loss, "g_needs_real")
    try:
        return loss.g_loss(real.detach() if needs else None, fake)
    except (TypeError, AttributeError) as exc:
        if needs:
            raise
        raise AssertionError(f"{name}.g_loss fails with real_logits=None ({exc}): a G loss that reads the "
                             "real logits must set g_needs_real = True") from None


@strict_fp32()
def check_loss(name: str | Entry, device: str | torch.device = "cpu") -> None:
    """Hypothesis checks of the loss ``name`` (name or registry entry): finite fp32 scalars, finite gradients."""
    entry = _entry(LOSS, name)
    name, loss = entry.name, entry.build()
    assert isinstance(flag("loss", loss, "g_needs_real"), bool), f"{name}: g_needs_real must be a bool"

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
        g = _g_loss(loss, name, r, f2)
        _scalar(g, f"{name}.g_loss")
        (gg,) = torch.autograd.grad(g, f2)
        assert torch.isfinite(gg).all(), f"{name}.g_loss: non-finite gradient"

    run()
    check_loss_direction(entry, device, loss)


# where D is wrong (reals scored as fake, fakes as real) and where G is losing (fakes scored as fake)
_wrong_real = st.lists(st.floats(-3.0, -0.125), min_size=1, max_size=8)
_wrong_fake = st.lists(st.floats(0.125, 3.0), min_size=1, max_size=8)


@strict_fp32()
def check_loss_direction(name: str | Entry, device: str | torch.device = "cpu", loss=None) -> None:
    """The losses point the right way (fp32, hypothesis over logits on the wrong side of 0).

    Where D is wrong (real logits in [-3, -0.125], fake logits in [0.125, 3]): raising any real logit
    does not raise D's loss and lowering any fake logit does not raise it, strictly so for the
    batch as a whole (gradients); and D's loss is lower with the signs right (reals +|r|, fakes
    -|f|) than wrong. Where G is losing (fake logits in [-3, -0.125], and real logits +|r|, D right
    about them, passed when the loss sets ``g_needs_real``): raising any fake logit does not raise
    G's loss, strictly for the batch (G's gradient is not all zero); and G's loss is lower for fakes
    scored +|f| than -|f|. Holds for margin losses (hinge), least squares with targets either side
    of 0, label smoothing and the relativistic losses; a flipped sign or a constant fails.
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

        g_real = t(real).abs()  # D is right about the reals while G is losing
        g_in = (-t(fake).abs()).requires_grad_(True)  # fakes scored as fake: G is losing
        (gg,) = torch.autograd.grad(_g_loss(loss, name, g_real, g_in), g_in)
        at = f"at fake {g_in.tolist()}" + (f", real {g_real.tolist()}" if flag("loss", loss, "g_needs_real") else "")
        assert float(gg.abs().sum()) > 0, f"{name}.g_loss has an all-zero gradient ({at})"
        assert (gg <= 0).all() and float(gg.sum()) < 0, (
            f"{name}.g_loss does not fall as fake logits rise (d/d fake = {gg.tolist()} {at})")
        fooled = float(_g_loss(loss, name, g_real, t(fake).abs()))
        caught = float(_g_loss(loss, name, g_real, -t(fake).abs()))
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


@strict_fp32()
def check_regularizer(name: str | Entry, device: str | torch.device = "cpu") -> None:
    """Hypothesis checks of the regularizer ``name`` (name or registry entry) on :class:`TinyCritic`."""
    entry = _entry(REGULARIZER, name)
    name, reg = entry.name, _fresh(entry, device)
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
    if flag("regularizer", reg, "uses_logits"):
        check_given_logits(entry, device)
    if flag("regularizer", reg, "stateful"):
        check_regularizer_state(entry, device)


def _inputs(seed: int, batch: int, labels: bool, device) -> tuple:
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    D = TinyCritic().to(device)
    real = (torch.rand(batch, 3, 8, 8, generator=gen) * 2 - 1).to(device)
    fake = (torch.rand(batch, 3, 8, 8, generator=gen) * 2 - 1).to(device)
    y = torch.randint(0, 4, (batch,), generator=gen).to(device) if labels else None
    return D, real, fake, y


def _fresh(entry: Entry, device):
    reg = entry.build()
    return reg.to(device) if flag("regularizer", reg, "stateful") else reg


@strict_fp32()
def check_given_logits(name: str | Entry, device: str | torch.device = "cpu") -> None:
    """A ``uses_logits`` regularizer gives the same penalty (and gradient) when handed D's logits on
    ``real``/``fake`` as when it computes them itself (two fresh blocks, the same seed for any draws)."""
    entry = _entry(REGULARIZER, name)

    @SETTINGS
    @given(seed=st.integers(0, 2**31 - 1), batch=st.integers(1, 4), labels=st.booleans())
    def run(seed: int, batch: int, labels: bool) -> None:
        D, real, fake, y = _inputs(seed, batch, labels, device)
        torch.manual_seed(seed)
        own = _fresh(entry, device).penalty(D, real, fake, y)
        r, f = D(real, y).float(), D(fake, y).float()
        torch.manual_seed(seed)
        given_ = _fresh(entry, device).penalty(D, real, fake, y, real_logits=r, fake_logits=f)
        _scalar(given_, f"{entry.name}.penalty(real_logits=..., fake_logits=...)")
        assert torch.allclose(own, given_, rtol=1e-3, atol=1e-5), (  # batched vs separate forwards round apart
            f"{entry.name}.penalty is {given_.item():.6g} given D's logits but {own.item():.6g} computing them")
        if given_.requires_grad and given_ > 0:
            grads = torch.autograd.grad(given_, list(D.parameters()), allow_unused=True)
            assert any(g is not None and bool(g.abs().sum() > 0) for g in grads), (
                f"{entry.name}.penalty given D's logits does not reach D's parameters")

    run()


@strict_fp32()
def check_regularizer_state(name: str | Entry, device: str | torch.device = "cpu") -> None:
    """A ``stateful`` regularizer's ``state_dict()`` is tensors only (checkpoints load weights-only) and
    holds all its state: a fresh block loaded with it gives exactly the original's next penalties."""
    entry = _entry(REGULARIZER, name)

    @SETTINGS
    @given(seed=st.integers(0, 2**31 - 1), batch=st.integers(1, 4), calls=st.integers(1, 3))
    def run(seed: int, batch: int, calls: int) -> None:
        D, real, fake, y = _inputs(seed, batch, True, device)
        a = _fresh(entry, device)
        for k in range(calls):  # move the state away from its start
            a.penalty(D, real * (k + 1) / calls, fake, y)
        state = a.state_dict()
        bad = [k for k, v in state.items() if not isinstance(k, str) or not torch.is_tensor(v)]
        assert not bad, f"{entry.name}.state_dict() entry {bad[0]!r} is not a tensor (checkpoints hold tensors only)"
        b = _fresh(entry, device)
        b.load_state_dict({k: v.detach().clone() for k, v in state.items()})
        for k in range(2):
            torch.manual_seed(seed + k)
            pa = a.penalty(D, real, fake * 0.5, y)
            torch.manual_seed(seed + k)
            pb = b.penalty(D, real, fake * 0.5, y)
            assert torch.equal(pa, pb), (f"{entry.name}: a block loaded from state_dict() gives penalty "
                                         f"{pb.item():.6g}, the original {pa.item():.6g} (state kept outside state_dict?)")

    run()
