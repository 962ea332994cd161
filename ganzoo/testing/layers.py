"""Property checks for layer blocks (attention, norm, weight_norm), built only from each kind's contract.

Each ``check_*`` function takes a registry entry (or a block name), builds the block the way the
kind's contract says, draws small random shapes with hypothesis and raises ``AssertionError`` (with
the falsifying example, shrunk unless ``shrink=False``) when a property fails. ``device`` is where
the block runs; ``dtype`` is the dtype its parameters and inputs are cast to, or, with ``autocast=True``, the
autocast dtype while parameters and inputs stay fp32 (how training runs in bf16).

What a block must provide, beyond its kind's contract, to get the stronger checks:

* any kind: ``gradient_free_parameters`` (names) lists parameters that get no gradient by design.
* attention and norm: samples stay independent (sample 0's output does not change when the rest of
  the batch does) in eval mode always, and in training mode unless the block declares
  ``mixes_batch = True`` (batch norms do). The flags and their defaults are in ``ganzoo/contracts.py``.
* norm: ``reference(x, y)`` (float64 maths, no side effects; ``(x, y, z)`` for a norm modulated by the
  latent) is optional and checked when present; ``modulated_by_latent = True`` builds the norm with
  ``latent_dim`` and ``which_linear`` and adds the latent checks (gradient to ``z``, output depends on ``z``).
* attention: ``reference(x)`` (float64 maths, no side effects) is required when the block has
  parameters; ``reference_attention_map(x)`` is optional; ``permutation_equivariant = True`` (class or
  instance attribute) adds the spatial-permutation check.
* weight_norm: weight norms built on ``torch.nn.utils.parametrize`` give each parametrization a
  ``reference(weight64)`` method (see :func:`ganzoo.norms._weights.reference_weight`);
  ``unit_spectral_norm = True`` on the block class adds the "largest singular value is 1" check.
"""
from __future__ import annotations

import contextlib
import copy
from typing import Callable, Any, Sequence

import torch
import torch.nn.functional as F
from hypothesis import strategies as st
from torch import nn

from ..config import BlockConfig
from ..contracts import flag
from ..errors import GanzooError
from ..models._layers import Layers
from ..norms._weights import reference_bias, reference_weight
from ..registry import ATTENTION, NORM, WEIGHT_NORM, Entry, Registry
from .strategies import assert_rel_close, draw_seed, rel_error, run_property, tolerance

__all__ = [
    "check_attention_block",
    "check_norm_block",
    "check_weight_norm",
    "check_permutation_equivariance",
    "assert_batch_independent",
]


# ----------------------------------------------------------------------------- helpers
def _entry(reg: Registry, entry: Entry | str) -> Entry:
    return reg.get(entry) if isinstance(entry, str) else entry


def _precision(device: str | torch.device, dtype: torch.dtype, autocast: bool):
    """(device, parameter/input dtype, compute dtype, context factory)."""
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("CUDA is not available")
    if autocast:
        return device, torch.float32, dtype, lambda: torch.autocast(device.type, dtype=dtype)
    return device, dtype, dtype, contextlib.nullcontext


def _check_grads(module: nn.Module, what: str, more: Callable[[], None] | None = None) -> None:
    """Every trainable parameter got a finite gradient that is not all zero.

    Parameters a block names in ``gradient_free_parameters`` (a tuple of ``named_parameters`` names)
    may get a zero or no gradient: they are mathematically inert (the block documents why). ``more``:
    another forward and backward on fresh inputs, accumulating into the gradients, run once when some
    parameter's gradient is all zero, before that is an error: a ReLU bottleneck fed one sample can be
    dead in every unit (squeeze_excitation at batch 1 was), which says nothing about its wiring.
    """
    inert = set(getattr(module, "gradient_free_parameters", ()))
    trainable = [(n, p) for n, p in module.named_parameters() if p.requires_grad and n not in inert]
    if more is not None and any(p.grad is not None and not p.grad.any() for _, p in trainable):
        more()
    for name, p in module.named_parameters():
        if not p.requires_grad:
            continue
        if p.grad is None:
            if name in inert:
                continue
            raise AssertionError(f"{what}: parameter '{name}' got no gradient")
        if not torch.isfinite(p.grad).all():
            raise AssertionError(f"{what}: parameter '{name}' got a non-finite gradient")
        if not p.grad.any() and name not in inert:
            raise AssertionError(f"{what}: parameter '{name}' got an all-zero gradient")


def _check_finite(t: torch.Tensor, what: str) -> None:
    if not torch.isfinite(t).all():
        raise AssertionError(f"{what}: output has NaN or inf")


def _floating_state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _same_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def assert_batch_independent(fn, x: torch.Tensor, tol: float, what: str, mode: str, *others: torch.Tensor) -> None:
    """``fn(x, *others)[0]`` is unchanged when the other samples of the batch change (no mixing across the
    batch): samples 1.. of ``x`` and of every per-sample tensor in ``others`` (a latent ``z``, say).

    ``fn`` must not carry state between its two calls (pass a fresh copy of a block per call: a
    training-mode forward may step e.g. a spectral norm's power iteration).
    """
    if x.shape[0] < 2:
        x = torch.cat([x, torch.randn_like(x)])
        others = tuple(torch.cat([o, torch.randn_like(o)]) for o in others)
    other = x.clone()
    other[1:] = torch.randn_like(x[1:]) * 3 + 1
    changed = []
    for o in others:
        o = o.clone()
        o[1:] = torch.randn_like(o[1:]) * 3 + 1
        changed.append(o)
    with torch.no_grad():
        a, b = fn(x, *others)[0], fn(other, *changed)[0]
    err = rel_error(b, a)
    if not err <= tol:
        raise AssertionError(
            f"{what}: in {mode} mode sample 0's output changed by {err:.3g} (relative) when the other samples "
            "of the batch changed: it mixes samples across the batch"
            + (" (declare mixes_batch = True if its train mode must)" if mode == "train" else "")
        )


def _fresh(block: nn.Module):
    """``x -> copy(block)(x)``: each call on an untouched copy of the block's state."""
    def fn(*args):
        return copy.deepcopy(block)(*args)
    return fn


def _permute_pixels(x: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
    return x.flatten(2)[:, :, perm].reshape(x.shape)


# ----------------------------------------------------------------------------- attention
def _set_gamma(block: nn.Module) -> None:
    """Set a residual block's gamma to random values of magnitude in [0.5, 1.5], random sign."""
    g = block.gamma
    with torch.no_grad():
        mag = torch.rand(g.shape, device=g.device) + 0.5
        sign = torch.where(torch.rand(g.shape, device=g.device) < 0.5, -1.0, 1.0)
        g.copy_(mag * sign)


def _assert_output_close(
    out: torch.Tensor, ref: torch.Tensor, x: torch.Tensor, residual: bool, tol: float, what: str
) -> None:
    """A block's output against its float64 reference.

    For a residual block (``x + gamma * o``) the error is measured against the branch ``gamma * o``
    itself, so a wrong branch cannot hide behind ``x``; the output's own rounding (``eps`` of its
    dtype times its size, which includes ``x``) is allowed on top.
    """
    if ref.dtype != torch.float64:
        raise AssertionError(f"{what}: reference(x) must be float64, got {ref.dtype}")
    if out.shape != ref.shape:
        raise AssertionError(f"{what}: shape {list(out.shape)} != reference {list(ref.shape)}")
    if not residual:
        assert_rel_close(out, ref, tol, what)
        return
    out64 = out.detach().to(torch.float64)
    branch = ref.detach() - x.detach().to(torch.float64)
    err = float(torch.linalg.vector_norm(out64 - ref.detach()))
    allowed = tol * float(torch.linalg.vector_norm(branch)) + torch.finfo(out.dtype).eps * float(
        torch.linalg.vector_norm(ref.detach())
    )
    if not err <= allowed:
        rel = err / max(float(torch.linalg.vector_norm(branch)), 1e-30)
        raise AssertionError(f"{what}: error relative to the residual branch {rel:.3g} > tolerance {tol:.3g}")


def check_attention_block(
    entry: Entry | str,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    *,
    autocast: bool = False,
    cfg: BlockConfig | dict[str, Any] | None = None,
    channels: Sequence[int] = (8, 16, 32),
    sizes: Sequence[int] = (4, 6, 8),
    batch_sizes: Sequence[int] = (1, 2, 3),
    max_examples: int = 10,
    shrink: bool = True,
) -> None:
    """Property checks of an attention block (``cls(cfg, channels)``, ``forward(x) -> same shape``).

    Checks, for drawn batch size, channel count and H x W: shape and dtype preserved, finite output;
    with gamma = 0 (its initial value) the block is exactly the identity; with a random non-zero
    gamma the output and the input gradient match ``reference(x)`` in float64 (training mode, then
    eval mode) and every trainable parameter gets a gradient; eval mode is deterministic, leaves
    the state untouched and gives the same output for a channels_last input; ``attention_map`` is
    [B, H*W, M] with non-negative rows summing to 1 (and matches ``reference_attention_map``);
    permutation equivariance where declared; batch independence (eval mode, and training mode
    unless ``mixes_batch``); a ``parameter_free`` block has no parameters.
    """
    entry = _entry(ATTENTION, entry)
    if isinstance(cfg, dict):
        cfg = entry.config.model_validate({"type": entry.name, **cfg})
    device, pdtype, cdtype, ctx = _precision(device, dtype, autocast)
    tol, gtol = tolerance(cdtype), tolerance(cdtype, grad=True)
    name = entry.name

    def body(data: st.DataObject) -> None:
        b = data.draw(st.sampled_from(list(batch_sizes)), label="batch")
        c = data.draw(st.sampled_from(list(channels)), label="channels")
        h = data.draw(st.sampled_from(list(sizes)), label="height")
        w = data.draw(st.sampled_from(list(sizes)), label="width")
        draw_seed(data)
        block = entry.build(cfg, c).to(device=device, dtype=pdtype)
        block.train()
        x = torch.randn(b, c, h, w, device=device, dtype=pdtype)
        has_gamma = isinstance(getattr(block, "gamma", None), torch.Tensor)
        has_ref = callable(getattr(block, "reference", None))
        params = [p for p in block.parameters() if p.requires_grad]
        if params and not has_ref:
            raise AssertionError(f"attention '{name}' has parameters but no reference(x) to check them against")
        if params and flag("attention", block, "parameter_free"):
            raise AssertionError(f"attention '{name}' is parameter_free (declared or nn.Identity) but has parameters")
        mixes = bool(flag("attention", block, "mixes_batch"))

        # gamma = 0 at initialisation: the block is exactly the identity
        if has_gamma:
            if block.gamma.any():
                raise AssertionError(f"attention '{name}': gamma must be initialised to 0")
            with ctx():
                out0 = block(x)
            if not torch.equal(out0, x.to(out0.dtype)):
                raise AssertionError(f"attention '{name}': with gamma = 0 the block is not the identity")
            _set_gamma(block)

        # training mode: output, input gradient and parameter gradients against the float64 reference
        r = torch.randn(b, c, h, w, device=device, dtype=torch.float64)
        xr = x.detach().clone().requires_grad_(True)
        ref = block.reference(xr) if has_ref else None  # before forward: forward steps e.g. spectral norms
        xf = x.detach().clone().requires_grad_(True)
        with ctx():
            out = block(xf)
        if out.shape != x.shape:
            raise AssertionError(f"attention '{name}': output shape {list(out.shape)} != input {list(x.shape)}")
        if not autocast and out.dtype != x.dtype:
            raise AssertionError(f"attention '{name}': output dtype {out.dtype} != input {x.dtype}")
        _check_finite(out, f"attention '{name}'")
        (out.to(torch.float64) * r).sum().backward()
        if has_ref:
            _assert_output_close(out, ref, x, has_gamma, tol, f"attention '{name}' train forward vs reference")
            (ref * r).sum().backward()
            assert_rel_close(xf.grad, xr.grad, gtol, f"attention '{name}' input gradient vs reference")
        def more() -> None:  # a larger batch of other inputs (see _check_grads)
            xm = torch.randn(max(8, b), c, h, w, device=device, dtype=pdtype)
            with ctx():
                (block(xm).to(torch.float64) * torch.randn(xm.shape, device=device, dtype=torch.float64)).sum().backward()

        _check_grads(block, f"attention '{name}'", more)
        if not mixes:
            with ctx():
                assert_batch_independent(_fresh(block), x, tol, f"attention '{name}'", "train")

        # eval mode: deterministic, no state change, matches the reference
        block.eval()
        state = _floating_state(block)
        with torch.no_grad():
            ref = block.reference(x) if has_ref else None
            with ctx():
                e1, e2 = block(x), block(x)
        if not torch.equal(e1, e2):
            raise AssertionError(f"attention '{name}': eval mode is not deterministic")
        if not _same_state(state, _floating_state(block)):
            raise AssertionError(f"attention '{name}': an eval-mode forward changed parameters or buffers")
        _check_finite(e1, f"attention '{name}' eval")
        with torch.no_grad(), ctx():  # backbones may run channels_last
            e_cl = block(x.contiguous(memory_format=torch.channels_last))
        assert_rel_close(e_cl, e1, tol, f"attention '{name}' channels_last input vs contiguous")
        if has_ref:
            _assert_output_close(e1, ref, x, has_gamma, tol, f"attention '{name}' eval forward vs reference")
        with ctx():  # always, also for blocks that mix the batch in training mode
            assert_batch_independent(block, x, tol, f"attention '{name}'", "eval")

        # attention map
        if callable(getattr(block, "attention_map", None)):
            with torch.no_grad(), ctx():
                amap = block.attention_map(x)
            if amap.ndim != 3 or amap.shape[:2] != (b, h * w):
                raise AssertionError(f"attention '{name}': attention_map shape {list(amap.shape)} is not [{b}, {h * w}, M]")
            if (amap < 0).any():
                raise AssertionError(f"attention '{name}': attention_map has negative weights")
            rows = amap.to(torch.float64).sum(-1)
            err = float((rows - 1).abs().max())
            if not err <= max(tol, 1e-5):
                raise AssertionError(f"attention '{name}': attention_map rows sum to 1 +- {err:.3g}")
            if callable(getattr(block, "reference_attention_map", None)):
                with torch.no_grad():
                    ref_map = block.reference_attention_map(x)
                assert_rel_close(amap, ref_map, tol, f"attention '{name}' attention_map vs reference")
        elif params:
            raise AssertionError(f"attention '{name}' has parameters but no attention_map(x)")

        if getattr(block, "permutation_equivariant", False):
            _assert_equivariant(block, x, ctx, tol, name)

    run_property(body, max_examples, shrink)


def _assert_equivariant(block: nn.Module, x: torch.Tensor, ctx, tol: float, name: str) -> None:
    perm = torch.randperm(x.shape[2] * x.shape[3], device=x.device)
    with torch.no_grad(), ctx():
        out = block(x)
        out_p = block(_permute_pixels(x, perm))
    assert_rel_close(out_p, _permute_pixels(out, perm), tol, f"attention '{name}' permutation equivariance")


def check_permutation_equivariance(
    entry: Entry | str,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    *,
    cfg: BlockConfig | dict[str, Any] | None = None,
    channels: Sequence[int] = (8, 16),
    sizes: Sequence[int] = (2, 4, 6),
    max_examples: int = 10,
    shrink: bool = True,
) -> None:
    """Permuting the input's pixels permutes the output the same way (eval mode, non-zero gamma)."""
    entry = _entry(ATTENTION, entry)
    if isinstance(cfg, dict):
        cfg = entry.config.model_validate({"type": entry.name, **cfg})
    device = torch.device(device)

    def body(data: st.DataObject) -> None:
        b = data.draw(st.integers(1, 2), label="batch")
        c = data.draw(st.sampled_from(list(channels)), label="channels")
        h = data.draw(st.sampled_from(list(sizes)), label="height")
        w = data.draw(st.sampled_from(list(sizes)), label="width")
        draw_seed(data)
        block = entry.build(cfg, c).to(device=device, dtype=dtype).eval()
        if isinstance(getattr(block, "gamma", None), torch.Tensor):
            _set_gamma(block)
        x = torch.randn(b, c, h, w, device=device, dtype=dtype)
        _assert_equivariant(block, x, contextlib.nullcontext, tolerance(dtype), entry.name)

    run_property(body, max_examples, shrink)


# ----------------------------------------------------------------------------- norms
def check_norm_block(
    entry: Entry | str,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    *,
    autocast: bool = False,
    cfg: BlockConfig | dict[str, Any] | None = None,
    channels: Sequence[int] = (8, 16, 32),
    sizes: Sequence[int] = (2, 3, 4, 6),
    max_examples: int = 10,
    shrink: bool = True,
) -> None:
    """Property checks of a feature norm (``cls(cfg, channels, num_classes=0)``, ``forward(x, y=None)``).

    Built with ``num_classes = K > 0`` and called with labels: shape and dtype preserved, finite,
    every trainable parameter gets a gradient, eval mode deterministic, a state-dict copy behaves
    the same. Built with ``num_classes = 0``: either a one-line ValueError (a conditional norm) or
    a norm that ignores ``y`` (same output with and without labels); a block class declaring
    ``conditional = False`` must be the latter. Batch independence in eval mode, and in training
    mode unless the block declares ``mixes_batch = True``. A norm with ``reference(x, y)`` (``(x, y,
    z)`` when modulated) matches it in float64, in training mode (computed before the forward) and in
    eval mode.

    A norm modulated by the latent (``modulated_by_latent = True``) is built with a drawn
    ``latent_dim`` and ``which_linear`` (``Layers(weight_norm).linear``, weight norm drawn from
    ``none`` and ``spectral``) and called with a latent ``z`` ``[B, latent_dim]`` throughout; besides
    the above, a gradient reaches ``z``, its eval-mode output changes when ``z`` changes, and batch
    independence is checked with the other samples' ``z`` changed as well.
    """
    entry = _entry(NORM, entry)
    if isinstance(cfg, dict):
        cfg = entry.config.model_validate({"type": entry.name, **cfg})
    device, pdtype, cdtype, ctx = _precision(device, dtype, autocast)
    name = entry.name
    modulated = bool(flag("norm", entry.obj, "modulated_by_latent"))

    def body(data: st.DataObject) -> None:
        b = data.draw(st.integers(2, 4), label="batch")
        c = data.draw(st.sampled_from(list(channels)), label="channels")
        h = data.draw(st.sampled_from(list(sizes)), label="height")
        w = data.draw(st.sampled_from(list(sizes)), label="width")
        k = data.draw(st.integers(1, 5), label="num_classes")
        extra: dict[str, Any] = {}
        if modulated:
            d = data.draw(st.integers(1, 8), label="latent_dim")
            wn = data.draw(st.sampled_from(["none", "spectral"]), label="weight_norm")
            extra = {"latent_dim": d, "which_linear": Layers(wn).linear}
        draw_seed(data)
        x = torch.randn(b, c, h, w, device=device, dtype=pdtype) * 3 + 1
        y = torch.randint(k, (b,), device=device)
        zs = (torch.randn(b, extra["latent_dim"], device=device, dtype=pdtype),) if modulated else ()
        tol = tolerance(cdtype)

        block = entry.build(cfg, c, num_classes=k, **extra).to(device=device, dtype=pdtype).train()
        has_ref = callable(getattr(block, "reference", None))
        ref = block.reference(x, y, *zs) if has_ref else None  # before forward: it updates running statistics
        zg = tuple(t.detach().clone().requires_grad_(True) for t in zs)
        with ctx():
            out = block(x, y, *zg)
        if out.shape != x.shape:
            raise AssertionError(f"norm '{name}': output shape {list(out.shape)} != input {list(x.shape)}")
        if not autocast and out.dtype != x.dtype:
            raise AssertionError(f"norm '{name}': output dtype {out.dtype} != input {x.dtype}")
        _check_finite(out, f"norm '{name}'")
        if has_ref:
            _assert_reference(out, ref, tol, f"norm '{name}' train forward vs reference")
        if any(p.requires_grad for p in block.parameters()) or zg:
            (out.to(torch.float64) * torch.randn(x.shape, device=device, dtype=torch.float64)).sum().backward()
            _check_grads(block, f"norm '{name}'")
        for t in zg:
            if t.grad is None or not torch.isfinite(t.grad).all() or not t.grad.any():
                raise AssertionError(f"norm '{name}': no finite, non-zero gradient reaches the latent z")
        if not flag("norm", block, "mixes_batch"):
            with ctx():
                assert_batch_independent(lambda t, *z: copy.deepcopy(block)(t, y, *z), x, tol, f"norm '{name}'",
                                         "train", *zs)

        block.eval()
        state = _floating_state(block)
        with torch.no_grad():
            ref = block.reference(x, y, *zs) if has_ref else None
            with ctx():
                e1, e2 = block(x, y, *zs), block(x, y, *zs)
        if not torch.equal(e1, e2):
            raise AssertionError(f"norm '{name}': eval mode is not deterministic")
        if not _same_state(state, _floating_state(block)):
            raise AssertionError(f"norm '{name}': an eval-mode forward changed parameters or buffers")
        _check_finite(e1, f"norm '{name}' eval")
        if has_ref:
            _assert_reference(e1, ref, tol, f"norm '{name}' eval forward vs reference")
        with ctx():  # eval mode never mixes samples (running statistics for batch norms)
            assert_batch_independent(lambda t, *z: block(t, y, *z), x, tol, f"norm '{name}'", "eval", *zs)
        if modulated:
            with torch.no_grad(), ctx():
                e_z = block(x, y, torch.randn_like(zs[0]) * 2)
            if not rel_error(e_z, e1) > tol:
                raise AssertionError(f"norm '{name}' is modulated by the latent but its output does not change "
                                     "when z changes")
        twin = entry.build(cfg, c, num_classes=k, **extra).to(device=device, dtype=pdtype)
        twin.load_state_dict(block.state_dict())
        twin.eval()
        with torch.no_grad(), ctx():
            if not torch.equal(twin(x, y, *zs), e1):
                raise AssertionError(f"norm '{name}': a copy loaded from its state dict gives another output")

        declared = getattr(entry.obj, "conditional", None)
        try:
            plain = entry.build(cfg, c, num_classes=0, **extra)
        except (ValueError, GanzooError) as exc:
            if declared is False:
                raise AssertionError(f"norm '{name}' declares conditional = False but needs num_classes > 0")
            msg = str(exc)
            if not msg or "\n" in msg:
                raise AssertionError(f"norm '{name}': the num_classes=0 error must be one non-empty line, got {msg!r}")
            return
        plain = plain.to(device=device, dtype=pdtype)
        for mode in (True, False):
            plain.train(mode)
            fresh = _fresh(plain)  # a training-mode forward may step a weight norm (a modulated norm's layers)
            with torch.no_grad(), ctx():
                a, b_ = (fresh(x, None, *zs), fresh(x, y, *zs)) if zs else (fresh(x), fresh(x, y))
            if not torch.equal(a, b_):
                raise AssertionError(f"norm '{name}' built with num_classes=0 does not ignore y")

    run_property(body, max_examples, shrink)


def _assert_reference(out: torch.Tensor, ref: torch.Tensor, tol: float, what: str) -> None:
    if ref.dtype != torch.float64:
        raise AssertionError(f"{what}: reference must be float64, got {ref.dtype}")
    assert_rel_close(out, ref, tol, what)


# ----------------------------------------------------------------------------- weight norms
_LAYERS = ("conv2d", "linear", "embedding")


def _make_layer(data: st.DataObject, kind: str) -> tuple[nn.Module, Any]:
    """A small random layer of ``kind`` and a function drawing a matching input.

    Layers have at least 2 inputs: a 1x1 weight normalised by its spectral norm is its sign, which
    has no gradient.
    """
    if kind == "conv2d":
        cin = data.draw(st.integers(2, 8), label="in_channels")
        cout = data.draw(st.integers(1, 8), label="out_channels")
        ks = data.draw(st.sampled_from([1, 3]), label="kernel")
        bias = data.draw(st.booleans(), label="bias")
        layer = nn.Conv2d(cin, cout, ks, padding=ks // 2, bias=bias)
        return layer, lambda dev, dt: torch.randn(2, cin, 5, 4, device=dev, dtype=dt)
    if kind == "linear":
        fin = data.draw(st.integers(2, 12), label="in_features")
        fout = data.draw(st.integers(1, 12), label="out_features")
        bias = data.draw(st.booleans(), label="bias")
        layer = nn.Linear(fin, fout, bias=bias)
        return layer, lambda dev, dt: torch.randn(3, fin, device=dev, dtype=dt)
    num = data.draw(st.integers(2, 10), label="num_embeddings")
    dim = data.draw(st.integers(1, 8), label="embedding_dim")
    layer = nn.Embedding(num, dim)
    return layer, lambda dev, dt: torch.arange(num, device=dev)


def _reference_forward(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The layer's forward in float64 with its effective weight (no side effects)."""
    w, b = reference_weight(layer), reference_bias(layer)
    if isinstance(layer, nn.Conv2d):
        return F.conv2d(x.to(torch.float64), w, b, layer.stride, layer.padding, layer.dilation, layer.groups)
    if isinstance(layer, nn.Linear):
        return F.linear(x.to(torch.float64), w, b)
    if isinstance(layer, nn.Embedding):
        return w[x]
    raise TypeError(f"no float64 reference forward for {type(layer).__name__}")


def _transposed(layer: nn.Module) -> bool:
    return isinstance(layer, (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d))


def _effective_matrix(layer: nn.Module, w: torch.Tensor | None = None) -> torch.Tensor:
    """The (effective) weight as the matrix whose spectral norm counts: [out, -1] ([in, -1] if transposed)."""
    w = reference_weight(layer) if w is None else w.detach().to(torch.float64)
    if _transposed(layer):
        w = w.movedim(1, 0)
    return w.flatten(1)


def check_weight_norm(
    entry: Entry | str,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    *,
    autocast: bool = False,
    cfg: BlockConfig | dict[str, Any] | None = None,
    layers: Sequence[str] = _LAYERS,
    unit_spectral_norm: bool | None = None,
    max_examples: int = 10,
    shrink: bool = True,
) -> None:
    """Property checks of a weight norm (``cls(cfg)``, ``wrap(module) -> module``) on Conv2d, Linear, Embedding.

    The wrapped layer keeps the plain layer's output shape and dtype, matches a float64 forward with
    its effective weight (training mode, then eval mode), passes a gradient to every trainable
    parameter, is deterministic in eval mode and leaves its state alone there, keeps fp32 buffers
    fp32 under autocast, and survives ``copy.deepcopy`` and a state-dict round trip (EMA and
    checkpoints rely on both). With ``unit_spectral_norm`` (default: the block class's attribute of
    that name), the effective weight's largest singular value (``torch.linalg.svdvals``) is 1 after
    30 training-mode forwards, on a layer of drawn scale whose spectrum has a gap (s2/s1 <= 0.7).
    """
    entry = _entry(WEIGHT_NORM, entry)
    if isinstance(cfg, dict):
        cfg = entry.config.model_validate({"type": entry.name, **cfg})
    if unit_spectral_norm is None:
        unit_spectral_norm = bool(getattr(entry.obj, "unit_spectral_norm", False))
    device, pdtype, cdtype, ctx = _precision(device, dtype, autocast)
    tol, name = tolerance(cdtype), entry.name
    wn = entry.build(cfg)

    def body(data: st.DataObject) -> None:
        kind = data.draw(st.sampled_from(list(layers)), label="layer")
        layer, make_input = _make_layer(data, kind)
        seed = draw_seed(data)
        plain_shape_layer = copy.deepcopy(layer)
        wrapped = wn(layer)
        if not isinstance(wrapped, nn.Module):
            raise AssertionError(f"weight norm '{name}': wrap() returned {type(wrapped).__name__}, not a module")
        wrapped = wrapped.to(device=device, dtype=pdtype).train()
        x = make_input(device, pdtype)
        with torch.no_grad():
            expected_shape = plain_shape_layer.to(device=device, dtype=pdtype)(x).shape

        ref = _reference_forward(wrapped, x)
        with ctx():
            out = wrapped(x)
        if out.shape != expected_shape:
            raise AssertionError(f"weight norm '{name}': {kind} output shape {list(out.shape)} != {list(expected_shape)}")
        if not autocast and out.dtype != pdtype:
            raise AssertionError(f"weight norm '{name}': {kind} output dtype {out.dtype} != {pdtype}")
        _check_finite(out, f"weight norm '{name}' {kind}")
        assert_rel_close(out, ref, tol, f"weight norm '{name}' {kind} train forward vs float64")
        (out.to(torch.float64) * torch.randn(out.shape, device=device, dtype=torch.float64)).sum().backward()
        _check_grads(wrapped, f"weight norm '{name}' {kind}")
        if autocast:
            for bname, buf in wrapped.named_buffers():
                if buf.is_floating_point() and buf.dtype != torch.float32:
                    raise AssertionError(f"weight norm '{name}': buffer '{bname}' became {buf.dtype} under autocast")

        wrapped.eval()
        state = _floating_state(wrapped)
        with torch.no_grad():
            ref = _reference_forward(wrapped, x)
            with ctx():
                e1, e2 = wrapped(x), wrapped(x)
        if not torch.equal(e1, e2):
            raise AssertionError(f"weight norm '{name}': eval mode is not deterministic")
        if not _same_state(state, _floating_state(wrapped)):
            raise AssertionError(f"weight norm '{name}': an eval-mode forward changed parameters or buffers")
        assert_rel_close(e1, ref, tol, f"weight norm '{name}' {kind} eval forward vs float64")

        with torch.no_grad(), ctx():
            if not torch.equal(copy.deepcopy(wrapped)(x), e1):
                raise AssertionError(f"weight norm '{name}': a deepcopy gives another output")
            torch.manual_seed(seed + 1)
            twin = wn(copy.deepcopy(plain_shape_layer)).to(device=device, dtype=pdtype)
            twin.load_state_dict(wrapped.state_dict())
            twin.eval()
            if not torch.equal(twin(x), e1):
                raise AssertionError(f"weight norm '{name}': a layer loaded from its state dict gives another output")

        if unit_spectral_norm:
            # a fresh layer whose spectrum has a gap (s2/s1 <= 0.7), so that 30 power iterations
            # converge far below the tolerance ((s2/s1)^60 < 1e-9); its scale s1 is drawn too
            s1 = data.draw(st.floats(0.05, 20.0), label="sigma_max")
            layer2 = copy.deepcopy(plain_shape_layer).to(device=device, dtype=torch.float32)
            with torch.no_grad():
                w = layer2.weight
                mat = (w.movedim(1, 0) if _transposed(layer2) else w).flatten(1)
                u_, s_, vh = torch.linalg.svd(mat.double(), full_matrices=False)
                s_ = s_ / s_[0] * 0.7
                s_[0] = 1.0
                new = (u_ * (s_ * s1)) @ vh
                new = new.reshape((w.movedim(1, 0) if _transposed(layer2) else w).shape)
                w.copy_(new.movedim(0, 1) if _transposed(layer2) else new)
            wrapped = wn(layer2).to(device=device, dtype=pdtype).train()
            with torch.no_grad(), ctx():
                for _ in range(30):
                    wrapped(x)
            wrapped.eval()
            top = float(torch.linalg.svdvals(_effective_matrix(wrapped))[0])
            stol = max(1e-4, 2 * tolerance(pdtype))  # the stored weight is rounded to the parameter dtype
            if not abs(top - 1.0) <= stol:
                raise AssertionError(
                    f"weight norm '{name}': {kind} effective weight has largest singular value {top:.6g}, not 1"
                )
            with torch.no_grad(), ctx():
                eff = getattr(wrapped, "weight")
            top_eff = float(torch.linalg.svdvals(_effective_matrix(wrapped, eff))[0])
            if not abs(top_eff - top) <= stol:
                raise AssertionError(f"weight norm '{name}': {kind} .weight has largest singular value {top_eff:.6g}, not {top:.6g}")

    run_property(body, max_examples, shrink)

