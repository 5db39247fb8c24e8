"""Write a few items of a dataset to disk, as every image-writing command does.

``unclip data D --out DIR`` lands here: ``000.png`` ... , ``grid.png`` and ``manifest.json``
with each item's caption (also under ``prompt``, the key every manifest uses), ground-truth
attributes and index, plus the dataset's name, split, seed and size.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
from torch.utils.data import Dataset

from ..errors import DataError
from ..storage.imageio import tensor_to_pil, write_image_set
from . import describe_dataset

logger = logging.getLogger(__name__)


def dump_samples(dataset: Dataset, n: int, out_dir: str | os.PathLike, start: int = 0) -> Path:
    """Write items ``start .. start + n - 1`` of ``dataset`` into ``out_dir``; return it.

    Fewer than ``n`` are written (with a warning) when the dataset ends first.
    """
    total = len(dataset)  # type: ignore[arg-type]
    if int(n) < 1:
        raise DataError(f"number of samples to write must be >= 1, got {n}")
    if not 0 <= int(start) < total:
        raise DataError(f"start index {start} is outside the dataset (it has {total} items)")
    count = min(int(n), total - int(start))
    if count < n:
        logger.warning("dataset has only %d items from index %d; writing %d, not %d", total - start, start, count, n)
    items = [dataset[int(start) + k] for k in range(count)]
    images = tensor_to_pil(torch.stack([it["image"] for it in items]))
    entries = [
        {"caption": it["caption"], "prompt": it["caption"], "attributes": it["attributes"], "index": int(start) + k}
        for k, it in enumerate(items)
    ]
    return write_image_set(out_dir, images, entries, describe_dataset(dataset))
