"""Training: the loop, checkpoints, EMA, sampling, evaluation and export.

Public API::

    train(recipe, run_dir, device="auto", resume=False, *, overwrite=False, stop_after=None,
          progress=None, handle_signals=True) -> TrainResult
    load_checkpoint(path) -> dict                      # weights_only=True, refuses pickled code
    resolve_checkpoint(run_dir_or_ckpt, best=False) -> Path
    generator_from_checkpoint(ckpt, source, device="cpu") -> (G_ema, recipe)
    export_generator(run_dir_or_ckpt, out_dir, best=False, checkpoint=None, standing_stats=None) -> Path
    load_generator(export_dir, device="cpu") -> G       # from generator.safetensors + recipe.yaml

Layers (each imports only those below it; ``docs/architecture.md``): ``outcome``, ``plan`` (option
rules), ``build`` (device, seeds, data, networks, optimisers), ``distributed`` (the parallelism
strategy), ``graph`` (the CUDA-graph runner), ``step`` (one iteration), ``hooks`` and ``stops``,
``loop`` (the run driver, :func:`train`).
"""
from __future__ import annotations

import importlib
from typing import Any

# name -> module, imported on first use (PEP 562): ``ganzoo.recipe`` imports ``.collapse`` for its
# ``train.collapse`` section, and the loop imports ``ganzoo.recipe``; eager imports here would be a cycle
_EXPORTS = {
    "train": "loop", "TrainResult": "outcome", "TrainingDiverged": "outcome", "EXIT_DIVERGED": "outcome",
    "resolve_device": "build", "load_checkpoint": "checkpoint", "resolve_checkpoint": "checkpoint",
    "latest_checkpoint": "checkpoint", "list_checkpoints": "checkpoint", "CheckpointError": "checkpoint",
    "export_generator": "export", "generator_from_checkpoint": "export", "load_generator": "export",
    "RunFolderError": "rundir",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
