"""Block registries: one per kind, keyed by name, each entry paired with its pydantic config.

A block is registered together with its config class::

    class SaganConfig(BlockConfig):
        type: Literal["sagan"] = "sagan"
        reduction: int = Field(8, ge=1, description="query/key channels are C // reduction")

    @ATTENTION.register(SaganConfig)
    class SaganAttention(nn.Module):
        \"\"\"Self-attention exactly as the official SAGAN code does it.\"\"\"
        def __init__(self, cfg: SaganConfig, channels: int): ...

The name is the config's ``type`` tag. ``ATTENTION.build(spec, channels=64)`` accepts a name, a
config instance, a mapping ``{"type": ..., **fields}``, a registered class, or a
``functools.partial`` of one, like timm's ``create_*`` factories.

Third-party packages add blocks through the ``ganzoo.plugins`` entry-point group; see
:mod:`ganzoo.plugins`. Plugins are loaded once, lazily, on the first registry use.
"""
from __future__ import annotations

import difflib
import fnmatch
import functools
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping

from pydantic import BaseModel

from .config import BlockConfig, config_tag
from .contracts import contract_message, flag
from .errors import GanzooError

BUILTIN = "builtin"


class RegistryError(GanzooError, LookupError):
    """Any misuse of a registry: unknown name, duplicate name, shadowing, bad config class."""


class UnknownBlockError(RegistryError, KeyError):
    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


@dataclass(frozen=True)
class Entry:
    """One registered block."""

    kind: str
    name: str
    obj: Callable[..., Any]
    config: type[BlockConfig]
    source: str  # "builtin" or "<distribution> <version>"

    @property
    def doc(self) -> str:
        """First line of the block's docstring (or its config's)."""
        for holder in (self.obj, self.config):
            text = (getattr(holder, "__doc__", None) or "").strip()
            if text and holder is not BlockConfig:
                return text.splitlines()[0].strip()
        return ""

    def build(self, cfg: BlockConfig | None = None, /, *args: Any, **kwargs: Any) -> Any:
        cfg = self.config() if cfg is None else cfg
        return self.obj(cfg, *args, **kwargs)


def unknown_name(what: str, name: str, known: list[str]) -> str:
    """"unknown attention 'sagn'; did you mean 'sagan'? known: none, sagan, ..." """
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    hint = f"; did you mean '{close[0]}'?" if close else ";"
    return f"unknown {what} '{name}'{hint} known: {', '.join(known) or '(none)'}"


class Registry:
    """Blocks of one kind (attention, norm, loss, ...)."""

    def __init__(self, kind: str, doc: str = "") -> None:
        self.kind = kind
        self.doc = doc
        self._entries: dict[str, Entry] = {}
        self._version = 0

    # ---------------------------------------------------------------- registration
    def register(self, config: type[BlockConfig], obj: Callable[..., Any] | None = None):
        """Register ``obj`` under ``config``'s ``type`` tag; usable as a decorator."""
        if obj is None:
            return functools.partial(self.register, config)
        if not (isinstance(config, type) and issubclass(config, BaseModel)):
            raise RegistryError(
                f"{self.kind} config for {getattr(obj, '__name__', obj)!r} must be a pydantic model "
                f"class (subclass of ganzoo.config.BlockConfig), got {config!r}"
            )
        if not issubclass(config, BlockConfig):
            raise RegistryError(
                f"{self.kind} config {config.__name__} must subclass ganzoo.config.BlockConfig "
                "(it forbids unknown fields and carries the `type` tag)"
            )
        name = config_tag(config)
        source = _plugins.current_source()
        namespace = _plugins.current_namespace()
        if namespace is not None:
            if not name.startswith(namespace + "."):
                raise RegistryError(
                    f"plugin '{namespace}' may only register names in its namespace "
                    f"('{namespace}.<name>'), not {self.kind} '{name}'"
                )
        elif "." in name:
            raise RegistryError(f"built-in {self.kind} name '{name}' must not contain '.'")
        if name in self._entries:
            prev = self._entries[name]
            what = "shadow the built-in" if prev.source == BUILTIN else "re-register"
            raise RegistryError(
                f"{self.kind} '{name}' is already registered by {prev.source}; "
                f"{source} may not {what} name (use a new, versioned name such as '{name}_v2')"
            )
        refusal = contract_message(self.kind, obj, name, source)  # one kind's Protocol: ganzoo/contracts.py
        if refusal:
            raise RegistryError(refusal)
        self._entries[name] = Entry(self.kind, name, obj, config, source)
        self._version += 1
        _plugins.record(self, name)
        return obj

    def unregister(self, name: str) -> None:
        """Remove an entry (used to roll back a plugin that failed half-way)."""
        del self._entries[name]
        self._version += 1

    # ---------------------------------------------------------------- lookup
    def _ensure(self) -> None:
        _plugins.load_all()

    def __contains__(self, name: object) -> bool:
        self._ensure()
        return name in self._entries

    def __iter__(self) -> Iterator[Entry]:
        self._ensure()
        return iter(sorted(self._entries.values(), key=lambda e: e.name))

    def __len__(self) -> int:
        self._ensure()
        return len(self._entries)

    @property
    def version(self) -> int:
        self._ensure()
        return self._version

    def names(self, pattern: str = "*") -> list[str]:
        return [e.name for e in self.list(pattern)]

    def list(self, pattern: str = "*") -> list[Entry]:
        """Entries whose name matches the glob ``pattern`` (e.g. ``"sagan*"``, ``"example.*"``)."""
        return [e for e in self if fnmatch.fnmatchcase(e.name, pattern)]

    def unknown_message(self, name: str) -> str:
        return unknown_name(self.kind, name, self.names())

    def get(self, name: str) -> Entry:
        self._ensure()
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            raise UnknownBlockError(self.unknown_message(str(name))) from None

    def configs(self) -> list[type[BlockConfig]]:
        return [e.config for e in self]

    # ---------------------------------------------------------------- building
    def resolve(self, spec: Any) -> tuple[Entry, BlockConfig]:
        """Turn a name, mapping, config instance or registered class into (entry, config)."""
        if isinstance(spec, BlockConfig):
            return self.get(spec.type), spec
        if isinstance(spec, str):
            entry = self.get(spec)
            return entry, entry.config()
        if isinstance(spec, Mapping):
            if "type" not in spec:
                raise RegistryError(f"{self.kind} spec {dict(spec)!r} has no 'type'")
            entry = self.get(spec["type"])
            return entry, entry.config.model_validate(dict(spec))
        for entry in self:
            if entry.obj is spec:
                return entry, entry.config()
        raise RegistryError(f"cannot make a {self.kind} from {spec!r}: give a name, a config or a mapping")

    def build(self, spec: Any, /, *args: Any, **kwargs: Any) -> Any:
        """Construct a block: ``spec`` is a name, config, mapping, registered class or partial of one."""
        if isinstance(spec, functools.partial):
            entry, cfg = self.resolve(spec.func)
            return entry.obj(cfg, *spec.args, *args, **{**spec.keywords, **kwargs})
        entry, cfg = self.resolve(spec)
        return entry.obj(cfg, *args, **kwargs)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {len(self._entries)} entries)"


# One registry per kind.  Order here is the order `ganzoo list` shows.
ATTENTION = Registry("attention", "self-attention variants placed in G and D")
NORM = Registry("norm", "feature normalisations (batch, conditional batch, group, ...)")
WEIGHT_NORM = Registry("weight_norm", "weight re-parametrisations for convs/linears (spectral norm, none)")
LOSS = Registry("loss", "adversarial loss pairs (D loss, G loss)")
REGULARIZER = Registry("regularizer", "discriminator regularizers (gradient penalty, R1, LeCam, bCR)")
AUGMENT = Registry("augment", "differentiable augmentations of every image D sees (DiffAugment)")
GENERATOR = Registry("generator", "generator backbones")
DISCRIMINATOR = Registry("discriminator", "discriminator backbones")
DATASET = Registry("dataset", "image datasets")
METRIC = Registry("metric", "sample-quality metrics")

REGISTRIES: dict[str, Registry] = {
    r.kind: r
    for r in (ATTENTION, NORM, WEIGHT_NORM, LOSS, REGULARIZER, AUGMENT, GENERATOR, DISCRIMINATOR, DATASET,
              METRIC)
}


def block_flag(kind: str, spec: Any, name: str) -> Any:
    """Capability flag ``name`` (``ganzoo/contracts.py``) of a block of ``kind``: ``spec`` is an
    instance, the registered class, a config (``recipe.loss``) or a name. The trainer and the recipe's
    rules ask this instead of testing block names."""
    if isinstance(spec, (str, BlockConfig)):
        spec = registry(kind).get(spec if isinstance(spec, str) else spec.type).obj
    return flag(kind, spec, name)


def regularizer_active(spec: Any) -> bool:
    """Whether a regularizer adds a penalty (its ``active`` flag): ``spec`` as for :func:`block_flag`."""
    return bool(block_flag("regularizer", spec, "active"))


def registry(kind: str) -> Registry:
    try:
        return REGISTRIES[kind]
    except KeyError:
        raise UnknownBlockError(unknown_name("kind", kind, list(REGISTRIES))) from None


from . import plugins as _plugins  # noqa: E402  (needs the registries above)
