"""Property checks for any ``augment`` block (a plugin's too), by registry name or entry.

``check_augment(entry, device, dtype)`` builds the block with its default config and runs hypothesis
over random batches (size, channels, side, memory format), raising ``AssertionError`` on the first
violation. ``tests/test_augment.py`` runs every registered augment block through it, so a plugin's
blocks are checked with no new test code. The properties (the contract in ``ganzoo/augment``):

* ``apply`` keeps shape and dtype, is finite, and equals the block's float64 ``reference`` on the
  same parameters (to the dtype's tolerance);
* parameters come one per image: the batch's output equals each image augmented alone with its own
  parameters (no mixing across the batch), and ``sample_params`` reads nothing back to the host;
* it is differentiable in the images: gradients are finite and not all zero;
* drawing is reproducible from a seeded generator, and ``forward`` draws fresh parameters per call.
"""
from __future__ import annotations

import torch
from hypothesis import strategies as st

from ..registry import AUGMENT, Entry
from .strategies import assert_rel_close, draw_seed, run_property, tolerance


def _build(entry: Entry | str, device: str | torch.device):
    entry = entry if isinstance(entry, Entry) else AUGMENT.get(entry)
    return entry.name, entry.build().to(device)


def _select(params: dict[str, torch.Tensor], k: int) -> dict[str, torch.Tensor]:
    return {name: p[k: k + 1] for name, p in params.items()}


def check_augment(entry: Entry | str, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> None:
    """Hypothesis checks of one augment block (see the module doc)."""
    name, block = _build(entry, device)
    tol = tolerance(dtype)

    def body(data: st.DataObject) -> None:
        draw_seed(data)
        n = data.draw(st.integers(1, 5), label="batch")
        c = data.draw(st.sampled_from([1, 3, 4]), label="channels")
        side = data.draw(st.sampled_from([4, 8, 13, 16, 32]), label="side")
        channels_last = data.draw(st.booleans(), label="channels_last")
        x = (torch.rand(n, c, side, side, device=device) * 2 - 1).to(dtype)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        gen = torch.Generator(device=device).manual_seed(data.draw(st.integers(0, 2**31 - 1), label="gen_seed"))
        params = block.sample_params(x.shape, device, gen)
        for pname, p in params.items():
            assert torch.is_tensor(p) and p.shape[:1] == (n,), f"{name}: parameter {pname!r} is not one per image"
            assert p.device.type == torch.device(device).type, f"{name}: parameter {pname!r} not on {device}"
        out = block.apply(x, params)
        assert out.shape == x.shape, f"{name}: shape {list(out.shape)} != input {list(x.shape)}"
        assert out.dtype == x.dtype, f"{name}: dtype {out.dtype} != input {x.dtype}"
        assert torch.isfinite(out).all(), f"{name}: non-finite output"
        ref = block.reference(x.detach().cpu().double(), {k: v.cpu() for k, v in params.items()})
        # bf16 rounds every intermediate: compare against the reference with the dtype's tolerance,
        # measured on the whole batch (an all-zero reference, e.g. a full cutout, compares absolutely)
        if float(ref.abs().max()) > 0:
            assert_rel_close(out.cpu(), ref, tol, f"{name}: apply vs float64 reference")
        else:
            assert float(out.abs().max()) <= tol, f"{name}: apply is not zero where the reference is"
        for k in range(n):  # per-image parameters: no mixing across the batch
            alone = block.apply(x[k: k + 1], _select(params, k))
            assert torch.allclose(alone.float(), out[k: k + 1].float(), rtol=tol, atol=tol), \
                f"{name}: image {k} depends on the other images of the batch"
        again = block.sample_params(x.shape, device, torch.Generator(device=device).manual_seed(gen.initial_seed()))
        assert all(torch.equal(params[k], again[k]) for k in params), f"{name}: not reproducible from a seeded generator"
        xg = x.detach().float().requires_grad_(True)
        y = block.apply(xg, params)
        (grad,) = torch.autograd.grad((y * torch.randn_like(y)).sum(), xg)
        assert torch.isfinite(grad).all(), f"{name}: non-finite gradient"
        assert float(grad.abs().max()) > 0, f"{name}: zero gradient (not differentiable in the images?)"

    run_property(body, max_examples=12, shrink=False)
    # forward draws fresh parameters on every call (a fixed augmentation is no augmentation)
    x = torch.rand(16, 3, 16, 16, device=device) * 2 - 1
    outs = [block(x) for _ in range(3)]
    if not any(not torch.equal(outs[0], o) for o in outs[1:]):
        raise AssertionError(f"{name}: forward gives the same output on every call (parameters not redrawn)")
