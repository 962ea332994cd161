"""ganzoo-example-plugin: the template third-party ganzoo plugin.

ganzoo calls :func:`register` once, the first time any registry is used, with the
:mod:`ganzoo.registry` module. Import your blocks there (not at module import time of ganzoo) and
register each one with its config class. Every name must start with this plugin's namespace,
``example.`` (the entry-point name in pyproject.toml).
"""
from __future__ import annotations

__version__ = "0.1.0"


def register(registry) -> None:
    from .linear_attention import LinearAttention, LinearAttentionConfig
    from .smoothed_ns import SmoothedNonSaturatingConfig, SmoothedNonSaturatingLoss

    registry.ATTENTION.register(LinearAttentionConfig, LinearAttention)
    registry.LOSS.register(SmoothedNonSaturatingConfig, SmoothedNonSaturatingLoss)
