"""One streaming interface for every training stage: (image, caption, key) samples.

Every kind of ``--data`` (WebDataset shards, a caption folder, the built-in ``shapes`` and
``emoji`` sets) is opened by :func:`unclip.data.streaming.open_source` as an :class:`ImageTextSource`, a torch
``IterableDataset`` yielding :class:`Sample` tuples ``(image (3, S, S) float in [-1, 1],
caption, key)`` at the stage's resolution ``S``. Batches come from :func:`make_loader`
(a ``DataLoader`` collating to :class:`Batch`).

Work is split the way webdataset splits shards: first across ``torch.distributed`` ranks,
then across the DataLoader workers of each rank (:func:`worker_slot`), so every process
sees a disjoint part and together they see everything once per epoch.

Bad data never stops a run: a sample that cannot be used is skipped and counted by reason
in :class:`SkipCounts` (shared by the DataLoader worker processes), which the run summary
reports (``source.skips.as_dict()``). The reasons are :data:`SKIP_REASONS`.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import random
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset

from ..errors import DataError

logger = logging.getLogger(__name__)

#: why a sample was skipped: image bytes PIL cannot decode; a sample with a caption but no
#: image; an image without a caption; a caption that is empty after stripping; a shard
#: that is truncated or corrupt (counted once per shard; the rest of it is skipped)
SKIP_REASONS: tuple[str, ...] = ("undecodable_image", "no_image", "no_caption", "empty_caption", "corrupt_shard")


class Sample(NamedTuple):
    """One training example: ``image`` (3, S, S) float32 in [-1, 1], its ``caption``, a stable ``key``."""

    image: torch.Tensor
    caption: str
    key: str


class Batch(NamedTuple):
    """A collated batch: ``images`` (B, 3, S, S) in [-1, 1], ``captions`` and ``keys`` (B strings each)."""

    images: torch.Tensor
    captions: list[str]
    keys: list[str]


class SkipCounts:
    """Counts of skipped samples by reason, in shared memory.

    DataLoader workers are separate processes; the counters live in a
    ``multiprocessing.Array`` that the workers inherit, so the main process sees their
    counts. Counts are cumulative over the life of the source (all epochs). Under
    ``torch.distributed`` each rank counts its own part; sum ``as_dict()`` over ranks.
    """

    def __init__(self) -> None:
        self._array = multiprocessing.Array("q", len(SKIP_REASONS))
        self._warned: set[str] = set()

    def add(self, reason: str, detail: str = "", n: int = 1) -> None:
        """Count ``n`` skips for ``reason``; the first of each reason (per process) is logged as a warning."""
        index = SKIP_REASONS.index(reason)
        with self._array.get_lock():
            self._array[index] += n
        level = logging.WARNING if reason not in self._warned or reason == "corrupt_shard" else logging.DEBUG
        self._warned.add(reason)
        logger.log(level, "skipped (%s) %s", reason.replace("_", " "), detail)

    def __getitem__(self, reason: str) -> int:
        return int(self._array[SKIP_REASONS.index(reason)])

    def as_dict(self) -> dict[str, int]:
        """``{reason: count for every reason, "total": sum}``, for the run summary."""
        counts = {reason: int(v) for reason, v in zip(SKIP_REASONS, self._array[:])}
        counts["total"] = sum(counts.values())
        return counts


def worker_slot() -> tuple[int, int]:
    """``(slot, slots)`` of this process: ``rank * num_workers + worker`` out of ``world_size * num_workers``.

    Uses webdataset's reading of the environment (``RANK``/``WORLD_SIZE`` or an initialised
    ``torch.distributed``; ``WORKER``/``NUM_WORKERS`` or the DataLoader worker info), so it
    splits exactly as ``wds.split_by_node`` followed by ``wds.split_by_worker`` does.
    """
    from webdataset.utils import pytorch_worker_info

    rank, world, worker, workers = pytorch_worker_info()
    return rank * workers + worker, world * workers


class ImageTextSource(IterableDataset):
    """Base of every source: yields :class:`Sample` s, one pass per epoch, or forever if ``repeat``.

    Subclasses implement :meth:`_epoch` (the samples of one epoch for this process).
    ``set_epoch(e)`` re-seeds shuffling for epoch ``e`` (call it before iterating when
    ``repeat`` is False); with ``repeat`` the epochs advance by themselves.
    """

    name = "source"

    def __init__(self, size: int, *, shuffle: bool = True, seed: int = 0, repeat: bool = False) -> None:
        super().__init__()
        if not isinstance(size, int) or size < 1:
            raise DataError(f"image size must be a positive int, got {size!r}")
        self.size, self.shuffle, self.seed, self.repeat = size, bool(shuffle), int(seed), bool(repeat)
        self.epoch = 0
        self.skips = SkipCounts()
        self.index_range: range | None = None

    def select(self, start: int, stop: int) -> ImageTextSource:
        """Restrict an indexable source to its items ``start:stop`` (in order before shuffling); returns self."""
        self.index_range = range(len(self))[start:stop]  # type: ignore[arg-type]
        return self

    def _order(self, n: int, epoch: int) -> list[int]:
        """This process's item indices for ``epoch``: the selected range, shuffled if asked,
        dealt by :func:`worker_slot`."""
        order = list(self.index_range if self.index_range is not None else range(n))
        if self.shuffle:
            random.Random(f"{self.seed}:{epoch}").shuffle(order)
        slot, slots = worker_slot()
        return order[slot::slots]

    def set_epoch(self, epoch: int) -> None:
        """Use the shuffling order of ``epoch`` on the next iteration."""
        self.epoch = int(epoch)

    def _epoch(self, epoch: int) -> Iterator[Sample]:  # pragma: no cover - abstract
        raise NotImplementedError

    def __iter__(self) -> Iterator[Sample]:
        epoch = self.epoch
        while True:
            produced = 0
            for sample in self._epoch(epoch):
                produced += 1
                yield sample
            if not self.repeat:
                return
            if produced == 0:
                slot, slots = worker_slot()
                if slots == 1:
                    raise DataError(
                        f"{self.describe()}: an epoch gave no usable samples; skipped so far: {self.skips.as_dict()}"
                    )
                return  # this worker or rank got no work; the others go on
            epoch += 1

    def describe(self) -> dict[str, Any]:
        """JSON-able facts for the run summary: kind, size, and the skip counts so far."""
        return {
            "source": self.name,
            "size": self.size,
            "shuffle": self.shuffle,
            "seed": self.seed,
            "skipped": self.skips.as_dict(),
        }


class MapStyleSource(ImageTextSource):
    """A map-style dataset of ``{"image", "caption", "attributes"}`` items (``shapes``, ``emoji``) as a stream.

    Each epoch visits a permutation of the indices (seeded by ``seed`` and the epoch), of
    which this process takes every ``slots``-th starting at its ``slot``. ``key_of(index,
    item)`` names each sample.
    """

    def __init__(
        self,
        dataset: Dataset,
        size: int,
        key_of: Any,
        *,
        name: str = "dataset",
        shuffle: bool = True,
        seed: int = 0,
        repeat: bool = False,
    ) -> None:
        super().__init__(size, shuffle=shuffle, seed=seed, repeat=repeat)
        self.dataset, self.key_of, self.name = dataset, key_of, name

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def _epoch(self, epoch: int) -> Iterator[Sample]:
        for index in self._order(len(self.dataset), epoch):  # type: ignore[arg-type]
            item = self.dataset[index]
            caption = (item.get("caption") or "").strip()
            key = self.key_of(index, item)
            if not caption:
                self.skips.add("empty_caption", f"{self.name} item {key}")
                continue
            yield Sample(item["image"], caption, key)


def shapes_key(split: str, seed: int) -> Any:
    """Key function of the ``shapes`` items: ``shapes-{split}-s{seed}-{index:08d}``."""
    return lambda index, item: f"shapes-{split}-s{seed}-{index:08d}"


def emoji_key(index: int, item: dict[str, Any]) -> str:
    """Key of an emoji item, stable across versions: code points and style, e.g. ``emoji-1F600-noto``."""
    attrs = item["attributes"]
    return "emoji-" + attrs["codepoints"].replace("U+", "").replace(" ", "-") + "-" + attrs["style"]


def is_shard_spec(data: str | os.PathLike | Sequence[str]) -> bool:
    """True when ``data`` names WebDataset shards: a list, a ``.tar`` file, a brace pattern,
    or a folder holding ``.tar`` files."""
    if isinstance(data, (list, tuple)):
        return True
    text = str(data)
    if "{" in text and "}" in text:
        return True
    if text.endswith((".tar", ".tar.gz", ".tgz")):
        return True
    path = Path(text).expanduser()
    return path.is_dir() and any(p.suffix == ".tar" for p in path.iterdir())


def collate_samples(samples: Sequence[Sample]) -> Batch:
    """Stack samples into a :class:`Batch`."""
    return Batch(torch.stack([s.image for s in samples]), [s.caption for s in samples], [s.key for s in samples])


def make_loader(
    source: ImageTextSource, batch_size: int, *, num_workers: int = 0, drop_last: bool = True, pin_memory: bool = False
) -> DataLoader:
    """A DataLoader of :class:`Batch` es from ``source`` (each worker reads a disjoint part).

    ``persistent_workers`` keeps worker processes (and their shuffle buffers) across epochs.
    """
    if batch_size < 1:
        raise DataError(f"batch size must be >= 1, got {batch_size}")
    return DataLoader(
        source,
        batch_size=batch_size,
        num_workers=num_workers,
        collate_fn=collate_samples,
        drop_last=drop_last,
        pin_memory=pin_memory,
        persistent_workers=num_workers > 0,
    )
