"""``image_folder``: JPEG/PNG files in class folders (or flat), from a folder or a .tar/.tar.gz of one."""
from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from ..config import BlockConfig
from ..registry import DATASET
from ._base import ImageDataset, check_path, recipe_channel_problems
from ._images import load_images, source_identity

MODES = {1: "L", 3: "RGB", 4: "RGBA"}


class ImageFolderConfig(BlockConfig):
    """Images from a folder or .tar/.tar.gz: optional train/ test/ split folders, then class folders (or flat)."""

    type: Literal["image_folder"] = "image_folder"
    root: str = Field(description="folder, or .tar/.tar.gz of one (relative paths: from the working directory)")
    channels: Literal[1, 3, 4] = Field(3, description="1: greyscale, 3: RGB, 4: RGBA (must equal the recipe's channels)")
    max_images: int | None = Field(None, ge=1, description="use a fixed random subset of this many images per split")
    subset_seed: int = Field(0, ge=0, description="seed of the max_images subset")
    cache: bool = Field(True, description="keep the decoded array in the cache dir ($GANZOO_CACHE)")

    def recipe_problems(self, recipe: Any) -> list[tuple[tuple[str, ...], str]]:
        return [(("channels",), m) for _, m in recipe_channel_problems(
            self.channels, recipe, "image_folder", f"set channels: {getattr(recipe, 'channels', 3)} here")]


@DATASET.register(ImageFolderConfig)
class ImageFolder(ImageDataset):
    """Images from a folder or .tar/.tar.gz: optional train/ test/ split folders, then class folders (or flat)."""

    def __init__(self, cfg: ImageFolderConfig, resolution: int, split: str = "train", *, field: str = "data") -> None:
        self.cfg = cfg
        root = check_path(cfg.root, field, "an image folder or a .tar/.tar.gz of one")
        where = f"{field}.root: {root}"
        identity, paths, _ = source_identity_checked(root, where)
        mode = MODES[cfg.channels]
        opts = {"resolution": resolution, "mode": mode, "max_images": cfg.max_images, "seed": cfg.subset_seed}
        loaded = ImageDataset.cached(
            "image_folder", {**identity, **opts},
            lambda: load_images(root, split, resolution, mode, where, cfg.max_images, cfg.subset_seed,
                                paths or None),
            split=split, source=str(root), use_cache=cfg.cache,
        )
        self.__dict__.update(loaded.__dict__)


def source_identity_checked(root, where):
    from ._base import DatasetError

    try:
        return source_identity(root)
    except DatasetError as exc:
        raise DatasetError(f"{where}: {str(exc).split(': ', 1)[-1]}") from None
