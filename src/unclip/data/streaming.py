"""Open any ``--data`` as one stream of samples: built-in sets, caption folders, WebDataset shards.

The dispatcher above :mod:`.sources` (the interface) and its implementations
(:mod:`.webdataset`, :mod:`.folder_source`), so that the interface imports none of them.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from ..errors import DataError
from .folder_source import FolderSource
from .sources import ImageTextSource, MapStyleSource, emoji_key, is_shard_spec, shapes_key
from .webdataset import WebDatasetSource


def open_source(
    data: str | os.PathLike | Sequence[str],
    size: int,
    *,
    split: str = "train",
    seed: int = 0,
    shuffle: bool = True,
    repeat: bool = False,
    shuffle_buffer: int = 1000,
    length: int | None = None,
) -> ImageTextSource:
    """Open ``--data`` as a stream of :class:`Sample` s at ``size`` x ``size`` pixels.

    Args:
        data: ``"shapes"``, ``"emoji"``, a folder of images with same-named ``.txt``
            captions (its ``split`` subfolder when present), or WebDataset shards: a ``.tar``
            file, a folder of ``.tar`` files, a brace pattern (``shards/{00000..00099}.tar``)
            or a list of paths.
        size: side of the square images yielded (resize + centre crop).
        split: which split of a built-in set or caption folder (shards have none).
        seed: seeds the built-in sets and every shuffle.
        shuffle: shuffle the order (per epoch); shards also go through a buffer of ``shuffle_buffer``.
        repeat: loop over epochs forever (training) instead of stopping after one.
        length: the number of ``shapes`` items (default ``DEFAULT_SHAPES_LENGTH``), or a cap
            on the items of ``emoji`` and folders; not used for shards.
    Raises:
        DataError: unknown name, empty folder, or a shard pattern that matches no file.
    """
    from . import get_dataset

    if is_shard_spec(data):
        return WebDatasetSource(data, size, shuffle=shuffle, seed=seed, repeat=repeat, shuffle_buffer=shuffle_buffer)
    text = str(data)
    if text in ("shapes", "emoji"):
        dataset = get_dataset(text, split=split, size=size, seed=seed, length=length)
        key_of = shapes_key(split, seed) if text == "shapes" else emoji_key
        return MapStyleSource(dataset, size, key_of, name=text, shuffle=shuffle, seed=seed, repeat=repeat)
    path = Path(text).expanduser()
    if not path.is_dir():
        from . import DATASET_CHOICES

        raise DataError(
            f"unknown data {text!r}: not a built-in name, a folder, a .tar file or a brace pattern of shards; "
            f"choose {DATASET_CHOICES}, or WebDataset shards"
        )
    sub = path / split
    return FolderSource(sub if sub.is_dir() else path, size, shuffle=shuffle, seed=seed, repeat=repeat, limit=length)
