"""The conformance kit: every registry-derived property check, as one list both the test suite and
``ganzoo check`` run.

    from ganzoo.testing.conformance import iter_checks
    for kind, name, precision, run in iter_checks(plugin="ganzoo-acme"):
        run()   # raises AssertionError (one-line reason first) when the block breaks its contract

Which checks a kind gets (precisions are ``<device>-<dtype>``; the loss, regularizer and backbone
checks pick their dtypes themselves and are labelled by device alone):

========================  ==================================================  =====================
kind                      check                                               precisions (cpu/cuda)
========================  ==================================================  =====================
attention                 :func:`~ganzoo.testing.check_attention_block`       fp32, autocast-bf16 /
                                                                              fp32, bf16, autocast-bf16
norm                      :func:`~ganzoo.testing.check_norm_block`            same
weight_norm               :func:`~ganzoo.testing.check_weight_norm`           same
augment                   :func:`~ganzoo.testing.check_augment`               fp32, bf16
loss                      :func:`~ganzoo.testing.check_loss`                  device
regularizer               :func:`~ganzoo.testing.check_regularizer`           device
generator, discriminator  :func:`~ganzoo.testing.check_generator` / ``_discriminator``  device
dataset, metric           none (they need data or Inception weights); their contract is checked at registration
========================  ==================================================  =====================

A plugin that failed to load yields one check (kind ``plugin``, precision ``load``) that fails with
its error, so ``ganzoo check --plugin DIST`` reports it instead of silently checking nothing.
"""
from __future__ import annotations

import fnmatch
import functools
import re
from typing import Callable, Iterable, Iterator, NamedTuple, Sequence

import torch

from ..errors import GanzooError
from ..registry import REGISTRIES, Entry, unknown_name

__all__ = ["Check", "SelectionError", "iter_checks", "CHECKED_KINDS", "precisions", "distribution_of"]


class SelectionError(GanzooError, ValueError):
    """``iter_checks`` was asked for a block or plugin that is not installed (one line, known ones listed)."""


class Check(NamedTuple):
    kind: str
    name: str
    precision: str  # "cpu-fp32", "cuda-autocast-bf16", ... or the device alone
    run: Callable[[], None]


# (label, dtype, autocast) per device, for the layer kinds
_LAYER_PRECISIONS = {
    "cpu": [("fp32", torch.float32, False), ("autocast-bf16", torch.bfloat16, True)],
    "cuda": [("fp32", torch.float32, False), ("bf16", torch.bfloat16, False), ("autocast-bf16", torch.bfloat16, True)],
}
_AUGMENT_PRECISIONS = [("fp32", torch.float32), ("bf16", torch.bfloat16)]

CHECKED_KINDS = ("attention", "norm", "weight_norm", "augment", "loss", "regularizer", "generator", "discriminator")


def _layer_checks(kind: str) -> Callable:
    from . import layers

    return {"attention": layers.check_attention_block, "norm": layers.check_norm_block,
            "weight_norm": layers.check_weight_norm}[kind]


def _device_checks(kind: str) -> Callable:
    from . import losses, models

    return {"loss": losses.check_loss, "regularizer": losses.check_regularizer,
            "generator": models.check_generator, "discriminator": models.check_discriminator}[kind]


def precisions(kind: str, device: str) -> list[str]:
    """The precision labels ``kind`` is checked in on ``device`` (``"cpu"`` or ``"cuda"``)."""
    dev = torch.device(device).type
    if kind in ("attention", "norm", "weight_norm"):
        return [f"{dev}-{label}" for label, _, _ in _LAYER_PRECISIONS[dev]]
    if kind == "augment":
        return [f"{dev}-{label}" for label, _ in _AUGMENT_PRECISIONS]
    if kind in CHECKED_KINDS:
        return [dev]
    return []


def _checks_of(entry: Entry, device: str) -> Iterator[Check]:
    dev = torch.device(device).type
    kind = entry.kind
    if kind in ("attention", "norm", "weight_norm"):
        fn = _layer_checks(kind)
        for label, dtype, autocast in _LAYER_PRECISIONS[dev]:
            yield Check(kind, entry.name, f"{dev}-{label}", functools.partial(fn, entry, device, dtype, autocast=autocast))
    elif kind == "augment":
        from .augment import check_augment

        for label, dtype in _AUGMENT_PRECISIONS:
            yield Check(kind, entry.name, f"{dev}-{label}", functools.partial(check_augment, entry, device, dtype))
    elif kind in CHECKED_KINDS:
        yield Check(kind, entry.name, dev, functools.partial(_device_checks(kind), entry, device))


def _norm_dist(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def distribution_of(entry: Entry) -> str | None:
    """The distribution an entry comes from (None for built-ins)."""
    return None if entry.source == "builtin" else entry.source.rsplit(" ", 1)[0]


def _selected(entry: Entry, patterns: Sequence[str]) -> bool:
    for pat in patterns:
        kind, _, name = pat.rpartition(":")
        if (not kind or kind == entry.kind) and fnmatch.fnmatchcase(entry.name, name):
            return True
    return False


def _failed_load(info) -> Check:
    def run() -> None:
        raise AssertionError(f"plugin '{info.namespace}' ({info.source}) was not loaded: {info.error}")

    return Check("plugin", info.namespace, "load", run)


def iter_checks(names: Iterable[str] | None = None, plugin: str | None = None, device: str = "cpu",
                kinds: Iterable[str] | None = None) -> Iterator[Check]:
    """Every property check of the installed blocks, as ``(kind, name, precision, run)``.

    ``names``: block names or globs, optionally ``kind:name`` (``none`` alone selects every kind's
    ``none``); ``plugin``: only blocks whose registry entry comes from that distribution (``-``, ``_``
    and case do not matter); ``kinds``: only these kinds; ``device``: ``"cpu"`` or ``"cuda"``. Raises
    :class:`SelectionError` at once when a name matches no block or the plugin is not installed.
    Building the checks does not run anything: CUDA is only needed when a cuda check runs.
    """
    from ..plugins import LOADED, load_all

    load_all()
    names = list(names or [])
    kinds = list(kinds) if kinds is not None else list(REGISTRIES)
    entries = [e for kind in kinds for e in REGISTRIES[kind]]
    out: list[Check] = []
    if plugin is not None:
        want = _norm_dist(plugin)
        infos = [i for i in LOADED.values() if _norm_dist(i.distribution) == want]
        if not infos:
            known = sorted({i.distribution for i in LOADED.values()})
            raise SelectionError(f"no installed ganzoo plugin from distribution '{plugin}'; "
                                 f"installed: {', '.join(known) or '(none)'}")
        out += [_failed_load(i) for i in infos if not i.ok]
        entries = [e for e in entries if _norm_dist(distribution_of(e) or "") == want]
    if names:
        for pat in names:
            if not any(_selected(e, [pat]) for e in entries):
                what = f"block from {plugin}" if plugin else "block"
                raise SelectionError(unknown_name(what, pat, sorted({e.name for e in entries})))
        entries = [e for e in entries if _selected(e, names)]
    for entry in entries:
        out += list(_checks_of(entry, device))
    return iter(out)
