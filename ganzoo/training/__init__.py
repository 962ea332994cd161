"""Training: the loop, checkpoints, EMA, sampling, evaluation and export.

Public API::

    train(recipe, run_dir, device="auto", resume=False, *, overwrite=False, stop_after=None,
          progress=None, handle_signals=True) -> TrainResult
    load_checkpoint(path) -> dict                      # weights_only=True, refuses pickled code
    resolve_checkpoint(run_dir_or_ckpt, best=False) -> Path
    generator_from_checkpoint(ckpt, source, device="cpu") -> (G_ema, recipe)
    export_generator(run_dir_or_ckpt, out_dir, best=False) -> Path
    load_generator(export_dir, device="cpu") -> G       # from generator.safetensors + recipe.yaml
"""
from .checkpoint import CheckpointError, latest_checkpoint, list_checkpoints, load_checkpoint, resolve_checkpoint
from .export import export_generator, generator_from_checkpoint, load_generator
from .loop import TrainingDiverged, TrainResult, resolve_device, train
from .rundir import RunFolderError

__all__ = [
    "train", "TrainResult", "TrainingDiverged", "resolve_device",
    "load_checkpoint", "resolve_checkpoint", "latest_checkpoint", "list_checkpoints", "CheckpointError",
    "export_generator", "generator_from_checkpoint", "load_generator", "RunFolderError",
]
