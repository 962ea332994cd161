"""Training: the loop, checkpoints, EMA, sampling, evaluation and export.

Public API::

    train(recipe, run_dir, device="auto", resume=False, *, overwrite=False, stop_after=None,
          progress=None, handle_signals=True) -> TrainResult
    load_checkpoint(path) -> dict                      # weights_only=True, refuses pickled code
    resolve_checkpoint(run_dir_or_ckpt, best=False) -> Path
    generator_from_checkpoint(ckpt, source, device="cpu") -> (G_ema, recipe)
    export_generator(run_dir_or_ckpt, out_dir, best=False) -> Path
    load_generator(export_dir, device="cpu") -> G       # from generator.safetensors + recipe.yaml

Layers (each imports only those below it; ``docs/architecture.md``): ``outcome``, ``plan`` (option
rules), ``build`` (device, seeds, data, networks, optimisers), ``distributed`` (the parallelism
strategy), ``graph`` (the CUDA-graph runner), ``step`` (one iteration), ``hooks`` and ``stops``,
``loop`` (the run driver, :func:`train`).
"""
from .build import resolve_device
from .checkpoint import CheckpointError, latest_checkpoint, list_checkpoints, load_checkpoint, resolve_checkpoint
from .export import export_generator, generator_from_checkpoint, load_generator
from .loop import train
from .outcome import EXIT_DIVERGED, TrainingDiverged, TrainResult
from .rundir import RunFolderError

__all__ = [
    "train", "TrainResult", "TrainingDiverged", "EXIT_DIVERGED", "resolve_device",
    "load_checkpoint", "resolve_checkpoint", "latest_checkpoint", "list_checkpoints", "CheckpointError",
    "export_generator", "generator_from_checkpoint", "load_generator", "RunFolderError",
]
