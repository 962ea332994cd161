"""Feature norms (registry kind ``norm``) and weight norms (kind ``weight_norm``): one file per block.

Feature norms are built as ``cls(cfg, channels, num_classes=0)`` and called as ``forward(x, y=None)``;
weight norms are built as ``cls(cfg)`` and used as ``wrap(module) -> module``. Files starting with
``_`` are helpers shared by the blocks (``_weights.reference_weight``: a wrapped layer's effective
weight in float64, for reference computations in tests).
"""

from ._weights import reference_bias, reference_weight  # noqa: E402,F401  (public: for blocks' float64 references)
