"""Property checks for any generator or discriminator backbone (a plugin's too), by registry name.

``check_generator(name, device)`` and ``check_discriminator(name, device)`` (a name or ``Entry``) run hypothesis over
seeds, batch sizes, image channels and conditional/unconditional set-ups at 32 x 32 and raise
``AssertionError`` on the first violation. ``tests/test_properties_models.py`` runs every registered
backbone through them, so a plugin's backbones are checked with no new test code.

Models are kept tiny: the config is ``Config.for_tests()`` when the config class defines that
classmethod, else the defaults with ``ch`` = 8 and ``z_dim`` = 16 where those fields exist.

Properties, in training mode unless said otherwise:

* shape: G gives ``[B, channels, 32, 32]``, D gives ``[B]``;
* range: G's images lie in [-1, 1]; nothing is NaN or infinite, also for large ``z`` (x 10);
* gradients reach every trainable parameter (and D's input): each gets a finite, non-zero gradient
  after zero-initialised parameters (attention ``gamma``, biases) are perturbed, since at exactly
  zero they legitimately block the gradient of what they scale;
* eval mode is deterministic: two calls on the same input give identical outputs;
* ``channels_last`` inputs/weights give the same outputs (eval mode) and bf16 autocast runs finite;
* labels count: a model built with ``num_classes > 0`` that declares conditioning (attribute
  ``conditional``, default ``num_classes > 0``) changes its output when the labels change.
"""
from __future__ import annotations

import contextlib

import torch
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from torch import nn

from ..config import BlockConfig
from ..registry import DISCRIMINATOR, GENERATOR, Entry, Registry
from .strategies import strict_fp32

RESOLUTION = 32
# no example database (no .hypothesis folder where `ganzoo check` runs); no shrinking: with 3 examples of
# whole backbones it costs tens of seconds and makes the reported seed no simpler
SETTINGS = settings(max_examples=3, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True,
                    database=None, phases=[Phase.explicit, Phase.generate])


def tiny_config(registry: Registry, name: str | Entry) -> BlockConfig:
    """The small config a backbone is checked with (see the module docstring)."""
    entry = name if isinstance(name, Entry) else registry.get(name)
    name, cls = entry.name, entry.config
    maker = getattr(cls, "for_tests", None)
    if callable(maker):
        return maker()
    small = {k: v for k, v in (("ch", 8), ("z_dim", 16)) if k in cls.model_fields}
    return cls.model_validate({"type": name, **small})


def trainable(module: nn.Module) -> list[tuple[str, nn.Parameter]]:
    return [(n, p) for n, p in module.named_parameters() if p.requires_grad]


@torch.no_grad()
def perturb_zeros(module: nn.Module, seed: int) -> None:
    """Give parameters that are exactly zero (gamma, biases) small random values."""
    g = torch.Generator().manual_seed(seed)
    for _, p in trainable(module):
        if not p.any():
            p.copy_(torch.randn(p.shape, generator=g).to(p) * 0.1)


def assert_gradients_reach_every_parameter(module: nn.Module, what: str) -> None:
    for n, p in trainable(module):
        assert p.grad is not None, f"{what}: no gradient reaches parameter {n}"
        assert torch.isfinite(p.grad).all(), f"{what}: non-finite gradient in {n}"
        assert p.grad.any(), f"{what}: gradient of parameter {n} is all zero"


def _finite(t: torch.Tensor, what: str) -> None:
    assert torch.isfinite(t).all(), f"{what}: output has NaN or inf"


@contextlib.contextmanager
def one_thread(device: str):
    """Run on one CPU thread: tiny models are faster so, and shared CI cores are not oversubscribed."""
    if torch.device(device).type != "cpu":
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _bf16_autocast(device: str):
    return torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16)


def _labels(num_classes: int, batch: int, gen: torch.Generator, device: str) -> torch.Tensor | None:
    return torch.randint(0, num_classes, (batch,), generator=gen).to(device) if num_classes else None


_cases = dict(seed=st.integers(0, 2**31 - 1), batch=st.integers(1, 2), channels=st.sampled_from([1, 3]))
NUM_CLASSES = (0, 3)  # every example checks the unconditional and a conditional model


def check_generator(name: str | Entry, device: str | torch.device = "cpu") -> None:
    """Hypothesis checks of the generator ``name`` (a name or registry entry; see the module docstring)."""
    entry = name if isinstance(name, Entry) else GENERATOR.get(name)
    name, device = entry.name, str(device)
    cfg = tiny_config(GENERATOR, entry)

    @SETTINGS
    @given(**_cases, z_scale=st.sampled_from([1.0, 10.0]))
    def run(seed: int, batch: int, channels: int, z_scale: float) -> None:
        for num_classes in NUM_CLASSES:
            one(seed, batch, num_classes, channels, z_scale)

    def one(seed: int, batch: int, num_classes: int, channels: int, z_scale: float) -> None:
        what = f"generator {name} (num_classes={num_classes}, channels={channels}, batch={batch})"
        torch.manual_seed(seed)
        gen = torch.Generator().manual_seed(seed)
        G = entry.build(cfg, RESOLUTION, num_classes, channels).to(device)
        z_dim = int(G.z_dim)
        z = (torch.randn(batch, z_dim, generator=gen) * z_scale).to(device)
        y = _labels(num_classes, batch, gen, device)

        perturb_zeros(G, seed)
        G.train()
        x = G(z, y)
        assert x.shape == (batch, channels, RESOLUTION, RESOLUTION), f"{what}: output shape {tuple(x.shape)}"
        _finite(x, what)
        assert x.min() >= -1 and x.max() <= 1, f"{what}: output outside [-1, 1] ({x.min().item()}, {x.max().item()})"
        weights = torch.randn(x.shape, generator=gen).to(device)
        (x * weights).sum().backward()
        assert_gradients_reach_every_parameter(G, what)

        G.eval()
        with torch.no_grad():
            a, b = G(z, y), G(z, y)
            assert torch.equal(a, b), f"{what}: eval mode is not deterministic"
            G_cl = G.to(memory_format=torch.channels_last)
            c = G_cl(z, y)
            torch.testing.assert_close(c, a, rtol=1e-4, atol=1e-4, msg=lambda m: f"{what}: channels_last: {m}")
            with _bf16_autocast(device):
                d = G(z, y)
            assert d.shape == a.shape, f"{what}: bf16 output shape {tuple(d.shape)}"
            _finite(d.float(), f"{what} under bf16 autocast")
            _assert_uses_labels(G, lambda labels: G(z, labels), y, num_classes, what)

    with one_thread(device), strict_fp32():
        run()


def _assert_uses_labels(model: nn.Module, fn, y: torch.Tensor | None, num_classes: int, what: str) -> None:
    """A model that declares conditioning (``conditional``, default ``num_classes > 0``) gives another
    output when every label changes (eval mode; zero-initialised parameters already perturbed)."""
    if not num_classes or not getattr(model, "conditional", num_classes > 0):
        return
    assert y is not None
    a, b = fn(y), fn((y + 1) % num_classes)
    diff = float((a.double() - b.double()).abs().max())
    assert diff > 1e-6, f"{what}: declares conditioning but its output does not change when the labels change"


def check_discriminator(name: str | Entry, device: str | torch.device = "cpu") -> None:
    """Hypothesis checks of the discriminator ``name`` (a name or registry entry; see the module docstring)."""
    entry = name if isinstance(name, Entry) else DISCRIMINATOR.get(name)
    name, device = entry.name, str(device)
    cfg = tiny_config(DISCRIMINATOR, entry)

    @SETTINGS
    @given(**_cases, x_scale=st.sampled_from([1.0, 10.0]))
    def run(seed: int, batch: int, channels: int, x_scale: float) -> None:
        for num_classes in NUM_CLASSES:
            one(seed, batch, num_classes, channels, x_scale)

    def one(seed: int, batch: int, num_classes: int, channels: int, x_scale: float) -> None:
        what = f"discriminator {name} (num_classes={num_classes}, channels={channels}, batch={batch})"
        torch.manual_seed(seed)
        gen = torch.Generator().manual_seed(seed)
        D = entry.build(cfg, RESOLUTION, num_classes, channels).to(device)
        x = ((torch.rand(batch, channels, RESOLUTION, RESOLUTION, generator=gen) * 2 - 1) * x_scale).to(device)
        y = _labels(num_classes, batch, gen, device)

        perturb_zeros(D, seed)
        D.train()
        xg = x.clone().requires_grad_(True)
        out = D(xg, y)
        assert out.shape == (batch,), f"{what}: output shape {tuple(out.shape)}, expected one logit per image"
        _finite(out, what)
        (out * torch.randn(batch, generator=gen).to(device)).sum().backward()
        assert_gradients_reach_every_parameter(D, what)
        assert xg.grad is not None and xg.grad.any(), f"{what}: no gradient reaches the input images"

        D.eval()
        with torch.no_grad():
            a, b = D(x, y), D(x, y)
            assert torch.equal(a, b), f"{what}: eval mode is not deterministic"
            D_cl = D.to(memory_format=torch.channels_last)
            c = D_cl(x.contiguous(memory_format=torch.channels_last), y)
            torch.testing.assert_close(c, a, rtol=1e-4, atol=1e-3, msg=lambda m: f"{what}: channels_last: {m}")
            with _bf16_autocast(device):
                d = D(x, y)
            assert d.shape == (batch,), f"{what}: bf16 output shape {tuple(d.shape)}"
            _finite(d.float(), f"{what} under bf16 autocast")
            _assert_uses_labels(D, lambda labels: D(x, labels), y, num_classes, what)

    with one_thread(device), strict_fp32():
        run()
