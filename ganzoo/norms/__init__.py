"""Feature norms (registry kind ``norm``) and weight norms (kind ``weight_norm``): one file per block.

Feature norms are built as ``cls(cfg, channels, num_classes=0)`` and called as ``forward(x, y=None)``;
weight norms are built as ``cls(cfg)`` and used as ``wrap(module) -> module``. Files starting with
``_`` are helpers shared by the blocks. Public here for blocks' float64 references (plugins' too):
``reference_weight(layer)`` (a possibly weight-normed layer's effective weight in float64, without
side effects) and ``reference_bias(layer)``.
"""

from ._weights import reference_bias, reference_weight  # noqa: E402,F401

__all__ = ["reference_bias", "reference_weight"]
