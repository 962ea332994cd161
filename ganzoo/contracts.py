"""Typed block contracts: one :class:`typing.Protocol` per registry kind, checked at registration.

Each kind's Protocol below is the full contract a block of that kind (built-in or plugin) must meet:
its constructor, its required methods and its *capability flags*, class attributes that ganzoo's
trainer, models and property checks read. A flag annotated with a default in the Protocol is
optional; the default applies when a block does not set it, and :func:`flag` reads it that way::

    from ganzoo.contracts import flag
    flag("regularizer", reg, "active")        # False for regularizer 'none', True by default

:meth:`ganzoo.registry.Registry.register` checks the registered class (:func:`contract_message`), so a
block missing a required method is refused when it registers, with one line such as
``attention 'acme.x' (acme-dist 1.0): missing method 'attention_map' required by the attention
contract``; a plugin refused so is skipped with one ``PluginWarning`` (see :mod:`ganzoo.plugins`).
What registration can see is the class: methods must exist (and not be a base class's placeholder
marked ``__isabstractmethod__``, such as :class:`ganzoo.augment._common.Augment`'s), flags must have
the documented type, and a kind's signature rules must hold (a loss's ``g_loss`` takes
``(real_logits, fake_logits)``: the one-argument ``g_loss(fake_logits)`` of the contract before
issue 20 is refused with one line naming the new signature; a ``uses_logits`` regularizer's
``penalty`` takes the ``real_logits``/``fake_logits`` keywords). What only a built block shows (shapes, maths, batch independence, loss
direction) is verified by the property checks of :mod:`ganzoo.testing`, run by ``ganzoo check``.

The Protocols are not ``runtime_checkable``: ``isinstance`` would demand every flag on every
object, while flags have defaults; :func:`contract_message` is the runtime check. This module imports
no torch (the registry imports it).

docs/plugins.md states every contract in prose, with what ``ganzoo check`` verifies.
"""
from __future__ import annotations

import inspect
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Mapping, Optional, Protocol, Sequence

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import torch
    from torch import nn

    from .config import BlockConfig

__all__ = [
    "AttentionBlock",
    "NormBlock",
    "WeightNormBlock",
    "LossBlock",
    "RegularizerBlock",
    "AugmentBlock",
    "GeneratorBlock",
    "DiscriminatorBlock",
    "DatasetBlock",
    "MetricBlock",
    "CONTRACTS",
    "Contract",
    "contract_message",
    "contract_problem",
    "flag",
]


# ----------------------------------------------------------------------------- the Protocols
class AttentionBlock(Protocol):
    """``attention``: an ``nn.Module`` built as ``cls(cfg, channels)``; ``forward(x) -> same shape``.

    ``x`` is ``[B, C, H, W]`` (any float dtype, contiguous or channels_last); the output has the same
    shape and dtype. Residual blocks (``x + gamma * o``) keep a parameter ``gamma`` initialised to 0,
    so the block starts as the identity. A block with parameters must also give its float64 maths
    (``reference``) and its attention weights (``attention_map``): that is how its parameters are
    checked. A parameter-free block (``parameter_free = True``; ``nn.Identity`` subclasses are by
    default) needs neither.
    """

    #: the block has no parameters, so ``reference``/``attention_map`` are not required
    #: (default: True for ``nn.Identity`` subclasses, else False)
    parameter_free: ClassVar[bool]
    #: the train-mode output of a sample depends on the other samples of the batch (batch
    #: statistics); eval mode must keep samples independent regardless
    mixes_batch: ClassVar[bool] = False
    #: permuting the input's pixels permutes the output the same way (adds that check)
    permutation_equivariant: ClassVar[bool] = False
    #: ``named_parameters`` names that get no (or a zero) gradient by design
    gradient_free_parameters: ClassVar[Sequence[str]] = ()

    def __init__(self, cfg: BlockConfig, channels: int) -> None: ...
    def forward(self, x: torch.Tensor) -> torch.Tensor: ...
    def reference(self, x: torch.Tensor) -> torch.Tensor:
        """``forward`` in float64, without side effects (no power-iteration step), dtype float64."""
    def attention_map(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, H*W, M]`` attention weights, non-negative rows summing to 1."""
    # optional: reference_attention_map(x) -> the same in float64, compared with attention_map


class NormBlock(Protocol):
    """``norm``: an ``nn.Module`` built as ``cls(cfg, channels, num_classes=0)``; ``forward(x, y=None)``.

    ``x`` is ``[B, C, H, W]``, ``y`` ``[B]`` class indices or None; the output has ``x``'s shape and
    dtype. A conditional norm built with ``num_classes=0`` raises a one-line ``ValueError``; an
    unconditional one ignores ``y``.

    A norm *modulated by the latent* (``modulated_by_latent = True``: its gain and bias are functions
    of a per-sample vector, as in self-modulation or BigGAN's conditional BN) is built with two more
    keyword arguments, ``cls(cfg, channels, num_classes=0, latent_dim=D, which_linear=F)``, and called
    as ``forward(x, y=None, z=None)`` with ``z`` ``[B, D]`` (required). ``z`` is what the generator
    hands its norms: its latent, or one block's chunk of it (``hierarchical_z``), after the shared
    class embedding when it has one (``shared_embedding``); ``F(in_features, out_features, bias=True)``
    is the generator's linear-layer factory (orthogonal init, then its weight norm), for the layers the
    norm makes of ``z``. Where no latent reaches (G's output layer, D's norms) the norm its config's
    ``unmodulated()`` returns is used instead.
    """

    #: needs class labels (default: the name is ``conditional_<x>`` or ``<ns>.conditional_<x>``);
    #: G uses a conditional norm's unconditional counterpart (its config's ``unconditional()``)
    #: where there are no labels
    conditional: ClassVar[Optional[bool]] = None
    #: train-mode outputs use batch statistics (BatchNorm); eval mode must keep samples independent
    mixes_batch: ClassVar[bool] = False
    #: gain and bias come from the generator's latent: built with ``latent_dim`` and ``which_linear``,
    #: called with ``z`` (see above); its config's ``unmodulated()`` gives the norm where no latent reaches
    modulated_by_latent: ClassVar[bool] = False
    gradient_free_parameters: ClassVar[Sequence[str]] = ()

    def __init__(self, cfg: BlockConfig, channels: int, num_classes: int = 0) -> None: ...
    def forward(self, x: torch.Tensor, y: Optional[torch.Tensor] = None) -> torch.Tensor: ...


class WeightNormBlock(Protocol):
    """``weight_norm``: built as ``cls(cfg)``; calling it on a Conv/Linear/Embedding returns that
    module re-parametrised (``wrap(module)``, the same, is conventional). Parametrizations built on
    ``torch.nn.utils.parametrize`` give a ``reference(weight64)`` method (float64, no side effects)."""

    #: the effective weight's largest singular value is 1 (adds that check)
    unit_spectral_norm: ClassVar[bool] = False

    def __init__(self, cfg: BlockConfig) -> None: ...
    def __call__(self, module: nn.Module) -> nn.Module: ...


class LossBlock(Protocol):
    """``loss``: built as ``cls(cfg)``; both losses are float32 scalars (means over all elements,
    computed in float32 outside autocast), minimised by D and by G respectively.

    Both take ``(real_logits, fake_logits)`` in that order. In ``g_loss`` the real logits are
    constants for G (computed without autograd, D on the same augmented real images D's update
    sees) and are ``None`` unless the loss sets ``g_needs_real`` (relativistic losses): the trainer
    runs D on real images during G's update only for such a loss. A ``g_loss(fake_logits)`` of the
    one-argument contract before it is refused at registration (see :func:`contract_problem`).

    Direction: D's loss falls as real logits rise and as fake logits fall (where D is wrong); G's
    loss falls as fake logits rise (where G is losing), with a gradient that is not all zero.
    """

    #: ``g_loss`` reads the real logits (relativistic losses): G's update also runs D, without
    #: autograd, on a batch of augmented real images; otherwise ``g_loss`` gets ``real_logits=None``
    g_needs_real: ClassVar[bool] = False

    def __init__(self, cfg: BlockConfig) -> None: ...
    def d_loss(self, real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor: ...
    def g_loss(self, real_logits: Optional[torch.Tensor], fake_logits: torch.Tensor) -> torch.Tensor: ...


class RegularizerBlock(Protocol):
    """``regularizer``: built as ``cls(cfg)``; ``penalty(D, real, fake, y)`` is a non-negative float32
    scalar, its weight included, added to D's loss; differentiable (reaching D's parameters) when
    positive. ``y`` is passed to ``D`` unchanged.

    A regularizer that ``uses_logits`` takes two more keywords, ``penalty(D, real, fake, y, *,
    real_logits=None, fake_logits=None)``: the trainer passes the images D's loss saw (after the
    recipe's ``augment``) and D's float32 logits on them, still attached to D's graph, and calls it
    inside the networks' autocast; called without them (the property checks) it computes them as
    ``D(real, y)`` and ``D(fake, y)``. A ``stateful`` regularizer (LeCam's moving averages) keeps
    its state in tensors: the trainer moves it with ``to(device)``, saves ``state_dict()`` in every
    checkpoint and calls ``load_state_dict()`` on resume (``nn.Module`` buffers give all three).
    """

    #: the penalty differentiates D with respect to the real images (R1): the loop must call it with
    #: autograd on, and not on a compiled D without double backward. Required, no default.
    needs_real_grad: ClassVar[bool]
    #: False: the penalty is always 0 and the trainer skips calling it (regularizer ``none``)
    active: ClassVar[bool] = True
    #: the trainer passes the logits D's loss was computed from (keywords ``real_logits``,
    #: ``fake_logits``) with the images D saw; ``penalty`` must accept both keywords
    uses_logits: ClassVar[bool] = False
    #: the penalty runs D itself when the trainer calls it (a forward, or a double backward, beside
    #: the loss's): ``train.compile`` then leaves D eager
    runs_d: ClassVar[bool] = True
    #: the penalty can be captured in a CUDA graph (``train.cuda_graph``): no double backward, no
    #: host reads, state updated in place; otherwise the recipe is refused with one line
    graph_safe: ClassVar[bool] = False
    #: the penalty keeps state across calls, saved in checkpoints: requires ``state_dict()``,
    #: ``load_state_dict(state)`` (a mapping of names to tensors) and ``to(device)``
    stateful: ClassVar[bool] = False

    def __init__(self, cfg: BlockConfig) -> None: ...
    def penalty(self, D: Callable[..., torch.Tensor], real: torch.Tensor, fake: torch.Tensor,
                y: Optional[torch.Tensor] = None) -> torch.Tensor: ...
    # stateful: state_dict() -> {name: tensor}; load_state_dict(state); to(device)


class AugmentBlock(Protocol):
    """``augment``: an ``nn.Module`` without parameters built as ``cls(cfg)`` (subclass
    :class:`ganzoo.augment._common.Augment`); ``forward(x) = apply(x, sample_params(x.shape, x.device))``."""

    def __init__(self, cfg: BlockConfig) -> None: ...
    def sample_params(self, shape: Sequence[int], device: Any,
                      generator: Optional[torch.Generator] = None) -> dict[str, torch.Tensor]:
        """One set of parameters per image (leading dimension N), on ``device``, no host read."""
    def apply(self, x: torch.Tensor, params: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Differentiable in ``x``, same shape and dtype, each image with its own parameters."""
    def reference(self, x: torch.Tensor, params: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """``apply`` written plainly, image by image, in float64."""


class GeneratorBlock(Protocol):
    """``generator``: an ``nn.Module`` built as ``cls(cfg, resolution, num_classes, channels)``;
    ``forward(z [B, z_dim], y [B] or None) -> images [B, channels, resolution, resolution]`` in [-1, 1].
    Instance attributes: ``z_dim`` (int) and ``conditional`` (bool, default ``num_classes > 0``:
    whether labels are used; a conditional model's output must change with its labels). The config
    may define a classmethod ``for_tests()`` giving a tiny config for the checks."""

    z_dim: int
    conditional: bool

    def __init__(self, cfg: BlockConfig, resolution: int, num_classes: int, channels: int) -> None: ...
    def forward(self, z: torch.Tensor, y: Optional[torch.Tensor] = None) -> torch.Tensor: ...


class DiscriminatorBlock(Protocol):
    """``discriminator``: an ``nn.Module`` built as ``cls(cfg, resolution, num_classes, channels)``;
    ``forward(x [B, channels, res, res], y [B] or None) -> logits [B]``. Instance attribute
    ``conditional`` (bool, default ``num_classes > 0``). Logit ``i`` depends on image ``i`` only
    (the gradient penalties rely on it)."""

    conditional: bool

    def __init__(self, cfg: BlockConfig, resolution: int, num_classes: int, channels: int) -> None: ...
    def forward(self, x: torch.Tensor, y: Optional[torch.Tensor] = None) -> torch.Tensor: ...


class DatasetBlock(Protocol):
    """``dataset``: built as ``cls(cfg, resolution, split="train")``; an
    :class:`ganzoo.datasets.ImageDataset` (subclass it): ``images`` uint8 ``[N, C, H, W]``, ``labels``
    int64 ``[N]``, ``num_classes``, ``class_names``, ``content_hash``."""

    def __init__(self, cfg: BlockConfig, resolution: int, split: str = "train") -> None: ...
    def __len__(self) -> int: ...
    def __getitem__(self, i: int) -> Any: ...


class MetricBlock(Protocol):
    """``metric``: built as ``cls(cfg)`` (subclass :class:`ganzoo.metrics._base.Metric`), on Inception
    features (``features["pool"]`` ``[N, 2048]``, ``features["logits"]`` ``[N, 1008]``, float32 on the
    Inception network's device, a GPU during training: compute there; ``reference_stats`` returns
    NumPy arrays, ``compute`` plain floats)."""

    #: compares against reference images (FID, KID)
    needs_reference: ClassVar[bool] = True
    #: uses the Inception classifier's logits (IS)
    needs_logits: ClassVar[bool] = False

    def __init__(self, cfg: BlockConfig) -> None: ...
    def reference_key(self) -> dict[str, Any]: ...
    def reference_stats(self, features: Mapping[str, torch.Tensor]) -> dict[str, np.ndarray]: ...
    def compute(self, features: Mapping[str, torch.Tensor],
                reference: Optional[Mapping[str, np.ndarray]]) -> dict[str, float]: ...


# ----------------------------------------------------------------------------- the checks
@dataclass(frozen=True)
class Contract:
    """What registration checks of one kind: required methods, conditionally required ones, flags."""

    kind: str
    protocol: type
    methods: tuple[str, ...]
    #: methods required unless ``flag`` is true: ((flag, (method, ...)), ...)
    unless: tuple[tuple[str, tuple[str, ...]], ...] = ()
    #: class-level flags: name -> (allowed types, required?)
    flags: Mapping[str, tuple[tuple[type, ...], bool]] = field(default_factory=dict)
    #: methods required when ``flag`` is true: ((flag, (method, ...)), ...)
    when: tuple[tuple[str, tuple[str, ...]], ...] = ()
    #: the kind's signature rules, run on the class once methods and flags pass: each gives a
    #: one-line problem or None
    checks: tuple[Callable[[type], Optional[str]], ...] = ()


# ----------------------------------------------------------------------------- signatures
def _parameters(cls: type, name: str) -> Optional[list[inspect.Parameter]]:
    """The parameters of method ``name`` of ``cls`` as called on an instance (``self`` dropped), or
    None where they cannot be read (a builtin, a callable object without a signature)."""
    value = _lookup(cls, name)
    drop = 1
    if isinstance(value, staticmethod):
        value, drop = value.__func__, 0
    elif isinstance(value, classmethod):
        value = value.__func__
    elif not inspect.isfunction(value):
        drop = 0
    try:
        params = list(inspect.signature(value).parameters.values())
    except (TypeError, ValueError):
        return None
    return params[drop:]


_POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)


def _positional_problem(cls: type, kind: str, method: str, want: tuple[str, ...]) -> Optional[str]:
    """Why ``cls.method`` cannot be called with ``want``'s arguments by position (too few or too
    many, or the real/fake roles of their names swapped), or None."""
    params = _parameters(cls, method)
    if params is None:
        return None
    if any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in params):
        return None
    positional = [p for p in params if p.kind in _POSITIONAL]
    required = [p for p in params if p.default is inspect.Parameter.empty
                and p.kind not in (inspect.Parameter.VAR_KEYWORD,)]
    have = f"{method}({', '.join(p.name for p in positional)})"
    contract = f"the {kind} contract is {method}({', '.join(want)})"
    if len(positional) < len(want) or len(required) > len(want):
        return f"{have} does not take {len(want)} arguments: {contract}"
    for got, role in zip(positional, want):
        other = "fake" if role.startswith("real") else "real"
        if other in got.name.lower() and role.split("_")[0] not in got.name.lower():
            return f"{have} takes its arguments in the wrong order: {contract}"
    return None


def _loss_signatures(cls: type) -> Optional[str]:
    problem = _positional_problem(cls, "loss", "d_loss", ("real_logits", "fake_logits"))
    if problem:
        return problem
    params = _parameters(cls, "g_loss")
    positional = [p for p in params or () if p.kind in _POSITIONAL]
    if params is not None and len(positional) == 1 and not any(
            p.kind is inspect.Parameter.VAR_POSITIONAL for p in params):
        return (f"g_loss({positional[0].name}) has the old one-argument signature: the loss contract is now "
                "g_loss(real_logits, fake_logits), as d_loss (real_logits is None unless the loss sets "
                "g_needs_real = True; docs/plugins.md, 'Migrating a loss')")
    return _positional_problem(cls, "loss", "g_loss", ("real_logits", "fake_logits"))


def _regularizer_signatures(cls: type) -> Optional[str]:
    if not flag("regularizer", cls, "uses_logits"):
        return None
    params = _parameters(cls, "penalty")
    if params is None or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    names = {p.name for p in params if p.kind is not inspect.Parameter.POSITIONAL_ONLY}
    missing = [k for k in ("real_logits", "fake_logits") if k not in names]
    if missing:
        return (f"penalty does not take the keyword '{missing[0]}' that uses_logits = True asks for: "
                "penalty(D, real, fake, y=None, *, real_logits=None, fake_logits=None)")
    return None


_BOOL = (bool,)
_OPT_BOOL = (bool, type(None))
_SEQ = (tuple, list, frozenset, set)

CONTRACTS: dict[str, Contract] = {
    c.kind: c
    for c in (
        Contract("attention", AttentionBlock, ("forward",), (("parameter_free", ("reference", "attention_map")),),
                 {"parameter_free": (_BOOL, False), "mixes_batch": (_BOOL, False),
                  "permutation_equivariant": (_BOOL, False), "gradient_free_parameters": (_SEQ, False)}),
        Contract("norm", NormBlock, ("forward",),
                 flags={"conditional": (_OPT_BOOL, False), "mixes_batch": (_BOOL, False),
                        "modulated_by_latent": (_BOOL, False), "gradient_free_parameters": (_SEQ, False)}),
        Contract("weight_norm", WeightNormBlock, ("__call__",), flags={"unit_spectral_norm": (_BOOL, False)}),
        Contract("loss", LossBlock, ("d_loss", "g_loss"), flags={"g_needs_real": (_BOOL, False)},
                 checks=(_loss_signatures,)),
        Contract("regularizer", RegularizerBlock, ("penalty",),
                 flags={"needs_real_grad": (_BOOL, True), "active": (_BOOL, False), "uses_logits": (_BOOL, False),
                        "runs_d": (_BOOL, False), "graph_safe": (_BOOL, False), "stateful": (_BOOL, False)},
                 when=(("stateful", ("state_dict", "load_state_dict", "to")),),
                 checks=(_regularizer_signatures,)),
        Contract("augment", AugmentBlock, ("sample_params", "apply", "reference", "forward")),
        Contract("generator", GeneratorBlock, ("forward",)),
        Contract("discriminator", DiscriminatorBlock, ("forward",)),
        Contract("dataset", DatasetBlock, ("__len__", "__getitem__")),
        Contract("metric", MetricBlock, ("reference_key", "reference_stats", "compute"),
                 flags={"needs_reference": (_BOOL, False), "needs_logits": (_BOOL, False)}),
    )
}


_MISSING = object()


def _lookup(cls: type, name: str) -> Any:
    """``name`` as the class defines or inherits it (never ``object``'s or the metaclass's)."""
    for klass in cls.__mro__:
        if klass is object:
            break
        if name in vars(klass):
            return vars(klass)[name]
    return _MISSING



def _is_placeholder(value: Any) -> bool:
    """A base class's stand-in: marked abstract, or ``nn.Module``'s unimplemented ``forward``."""
    fn = getattr(value, "__func__", value)
    return bool(getattr(fn, "__isabstractmethod__", False)) or getattr(fn, "__name__", "") == "_forward_unimplemented"


def _is_identity_module(cls: type) -> bool:
    nn = sys.modules.get("torch.nn")
    return nn is not None and isinstance(cls, type) and issubclass(cls, nn.Identity)


def _default_flag(kind: str, obj: Any, name: str) -> Any:
    if kind == "attention" and name == "parameter_free":
        return _is_identity_module(obj if isinstance(obj, type) else type(obj))
    proto = CONTRACTS[kind].protocol
    return vars(proto).get(name)


def flag(kind: str, obj: Any, name: str) -> Any:
    """Capability flag ``name`` of a block (class or instance) of ``kind``, or its documented default."""
    value = getattr(obj, name, _MISSING)
    if value is _MISSING:
        return _default_flag(kind, obj, name)
    if kind == "attention" and name == "parameter_free" and value is None:
        return _default_flag(kind, obj, name)
    return value


def contract_problem(kind: str, obj: Any) -> str | None:
    """Why ``obj`` (the registered class) breaks the contract of ``kind``, in one line, or None.

    Kinds without a contract (a throwaway ``Registry("widget")``) always pass. A factory that is not
    a class cannot be inspected before it is called: only its being callable is checked here.
    """
    contract = CONTRACTS.get(kind)
    if contract is None:
        return None
    if not callable(obj):
        return f"{type(obj).__name__} object is not callable (register a class)"
    if not isinstance(obj, type):
        return None
    for name in contract.methods:
        value = _lookup(obj, name)
        if value is _MISSING or _is_placeholder(value) or not callable(value):
            return f"missing method '{name}' required by the {kind} contract"
    for flag_name, (types, required) in contract.flags.items():
        value = _lookup(obj, flag_name)
        if value is _MISSING:
            if required:
                return f"missing class attribute '{flag_name}' (a bool) required by the {kind} contract"
            continue
        if isinstance(value, property):
            continue  # computed per instance; the property checks read it
        if not isinstance(value, types):
            want = " or ".join("None" if t is type(None) else t.__name__ for t in types)
            return f"flag '{flag_name}' must be {want}, got {type(value).__name__} ({kind} contract)"
    for flag_name, methods in contract.unless:
        if flag(kind, obj, flag_name):
            continue
        for name in methods:
            value = _lookup(obj, name)
            if value is _MISSING or _is_placeholder(value) or not callable(value):
                return (f"missing method '{name}' required by the {kind} contract "
                        f"(blocks with parameters provide it; set {flag_name} = True if it has none)")
    for flag_name, methods in contract.when:
        if not flag(kind, obj, flag_name):
            continue
        for name in methods:
            value = _lookup(obj, name)
            if value is _MISSING or _is_placeholder(value) or not callable(value):
                return f"missing method '{name}' required by the {kind} contract when {flag_name} = True"
    for check in contract.checks:
        problem = check(obj)
        if problem:
            return problem
    return None


def contract_message(kind: str, obj: Any, name: str = "?", source: str = "builtin") -> str | None:
    """The one-line refusal :meth:`ganzoo.registry.Registry.register` raises when ``obj`` breaks
    ``kind``'s contract (as a ``RegistryError``), or None."""
    problem = contract_problem(kind, obj)
    return f"{kind} '{name}' ({source}): {problem}" if problem else None
