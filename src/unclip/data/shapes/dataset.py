"""The ``shapes`` dataset as a torch ``Dataset``, its collate function and an infinite sampler."""

from __future__ import annotations

from typing import Any, Iterator, Sequence

import torch
from torch.utils.data import Dataset, Sampler

from ...errors import DataError
from .raster import _check_size, _to_tensor, render_array
from .sampling import _check_split, sample_scene
from .spec import Scene


class ShapesDataset(Dataset):
    """Items ``0 .. length - 1`` of a shapes split, rendered on the fly.

    ``ds[i]`` is ``{"image": FloatTensor (3, size, size) in [-1, 1], "caption": str,
    "attributes": {"background", "objects": [{"color", "shape", "size", "extent",
    "center": [x, y], "region"}]}}``. Use :func:`collate` with a DataLoader (the attribute
    lists differ in length between items).
    """

    name = "shapes"

    def __init__(self, split: str = "train", size: int = 64, length: int = 10_000, seed: int = 0) -> None:
        _check_split(split)
        _check_size(size)
        if int(length) < 1:
            raise DataError(f"shapes length must be >= 1, got {length}")
        self.split, self.size, self.length, self.seed = split, int(size), int(length), int(seed)

    def __len__(self) -> int:
        return self.length

    def scene(self, index: int) -> Scene:
        if not -self.length <= index < self.length:
            raise IndexError(f"index {index} out of range for shapes {self.split} of length {self.length}")
        return sample_scene(self.split, index % self.length, self.seed)

    def __getitem__(self, index: int) -> dict[str, Any]:
        scene = self.scene(int(index))
        image = _to_tensor([render_array(scene, self.size)])[0]
        return {"image": image, "caption": scene.caption, "attributes": scene.attributes()}


def collate(items: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Batch dataset items: ``{"image": (B, 3, H, W), "caption": [str], "attributes": [dict]}``.

    Works for every dataset of :mod:`unclip.data` (all items have these three keys).
    """
    return {
        "image": torch.stack([it["image"] for it in items]),
        "caption": [it["caption"] for it in items],
        "attributes": [it["attributes"] for it in items],
    }


class ShapesInfiniteSampler(Sampler[int]):
    """An endless, seeded stream of indices into a dataset of ``length`` items.

    Epoch ``e`` is a permutation of ``range(length)`` drawn from a ``torch.Generator`` seeded
    with ``(seed, e)``; the stream is the concatenation of epochs. ``start`` skips that many
    indices, so a resumed run continues the exact stream (pass the number of samples seen).
    """

    def __init__(self, length: int, seed: int = 0, start: int = 0, shuffle: bool = True) -> None:
        if int(length) < 1:
            raise DataError(f"sampler length must be >= 1, got {length}")
        if int(start) < 0:
            raise DataError(f"sampler start must be >= 0, got {start}")
        self.length, self.seed, self.start, self.shuffle = int(length), int(seed), int(start), shuffle

    def _epoch(self, epoch: int) -> list[int]:
        if not self.shuffle:
            return list(range(self.length))
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(self.length, generator=g).tolist()

    def __iter__(self) -> Iterator[int]:
        epoch, offset = divmod(self.start, self.length)
        while True:
            order = self._epoch(epoch)
            yield from order[offset:]
            epoch, offset = epoch + 1, 0
