"""Datasets (registry kind ``dataset``): one file per source, each decoded once into a cached array.

Build one with ``DATASET.build(cfg, resolution, split="train")``; the result is an
:class:`ImageDataset` (``images`` uint8 ``[N,C,H,W]``, ``labels`` int64, ``num_classes``,
``class_names``, ``content_hash``). See ``docs/data_and_metrics.md``.
"""
from ._base import (
    DatasetError,
    ImageDataset,
    MissingSplitError,
    build_dataset,
    build_reference,
    check_compatible,
    sample_batch,
    to_device,
    to_float,
)
from ._cache import cache_root

__all__ = [
    "DatasetError",
    "ImageDataset",
    "MissingSplitError",
    "build_dataset",
    "build_reference",
    "cache_root",
    "check_compatible",
    "sample_batch",
    "to_device",
    "to_float",
]
