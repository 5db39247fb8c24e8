"""Batch number ``step`` of a large data set as a function of (seed, step), for exact resume.

The loop asks a stage for ``get_batch(step, generator)`` and resumes a run by asking again
from the checkpoint's step (``loop.py``). The in-memory sets draw random indices from the
step's generator; data that does not fit in memory is read in epochs instead, and these
classes make batch ``step`` the same whether the run got there uninterrupted or resumed:

- :class:`EmbeddingSteps` (an embedding folder): the rows form one endless stream, epoch
  after epoch, each epoch in the order :meth:`EmbeddingFolder.batches` uses (parts
  shuffled, rows shuffled within each part, seeded by ``seed`` and the epoch); batch ``k``
  is rows ``k*B .. (k+1)*B`` of that stream. Any step is found directly by arithmetic on
  the part sizes, without reading what comes before it, and memory holds one part's row
  permutation and metadata, whatever the folder's size.
- :class:`StreamSteps` (any ``--data`` stream: shards, folders, built-in sets): epoch ``e``
  is the source's pass with ``set_epoch(e)`` (shard order, shuffle buffer and item order
  all seeded by ``seed`` and ``e``), cut into full batches (the last partial one dropped).
  How many batches each epoch gave is written to a small JSON file as epochs end, so a
  resumed run re-opens the epoch the step falls in and skip-counts to it (reading, at
  most, the batches of one epoch again). The stream is a function of (seed, step) as long
  as the data files and ``num_workers`` are unchanged (the file records them; if they
  changed, the counts are dropped and counted again, reading from the start).
"""

from __future__ import annotations

import bisect
import json
import logging
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from ..data.embedding_folder import EmbeddingBatch, EmbeddingFolder
from ..data.sources import Batch, ImageTextSource, collate_samples, worker_slot
from ..errors import DataError
from ..storage.checkpoint import atomic_write_json

log = logging.getLogger(__name__)


def concat_embedding_batches(pieces: list[EmbeddingBatch]) -> EmbeddingBatch:
    """One :class:`EmbeddingBatch` of the rows of ``pieces``, in order."""
    if len(pieces) == 1:
        return pieces[0]
    return EmbeddingBatch(
        torch.cat([p.text_embeds for p in pieces]),
        torch.cat([p.image_embeds for p in pieces]),
        [c for p in pieces for c in p.captions],
        [k for p in pieces for k in p.keys],
    )


class EmbeddingSteps:
    """Batch ``step`` of an embedding folder (see the module docstring); ``steps(step) -> EmbeddingBatch``.

    Rows are dealt to torch.distributed ranks as :meth:`EmbeddingFolder.batches` deals them
    (:func:`~unclip.data.sources.worker_slot`), so each rank reads its own rows.
    """

    def __init__(self, folder: EmbeddingFolder, batch_size: int, seed: int = 0) -> None:
        if batch_size < 1:
            raise DataError(f"batch size must be >= 1, got {batch_size}")
        self.folder, self.batch_size, self.seed = folder, int(batch_size), int(seed)
        self.slot, self.slots = worker_slot()
        self.mine = [len(range(self.slot, p.rows, self.slots)) for p in folder.parts]
        self.epoch_rows = sum(self.mine)
        if self.epoch_rows == 0:
            raise DataError(f"{folder.root}: no rows for this process ({self.slot} of {self.slots})")
        self._plan: tuple[int, list[int], list[int], list[int]] | None = None
        self._perm: tuple[int, int, np.ndarray] | None = None

    def _epoch_plan(self, epoch: int) -> tuple[list[int], list[int], list[int]]:
        """Part order, per-part permutation seeds and cumulative row starts of ``epoch``."""
        if self._plan is None or self._plan[0] != epoch:
            rng = random.Random(f"{self.seed}:{epoch}")
            order = list(range(len(self.folder.parts)))
            rng.shuffle(order)  # consumes the same draws as shuffling the parts themselves
            seeds = [rng.getrandbits(63) for _ in order]
            starts = np.cumsum([0] + [self.mine[i] for i in order])[:-1].tolist()
            self._plan = (epoch, order, seeds, starts)
        return self._plan[1], self._plan[2], self._plan[3]

    def _permutation(self, epoch: int, position: int, part_index: int, seed: int) -> np.ndarray:
        if self._perm is None or self._perm[:2] != (epoch, position):
            rows = self.folder.parts[part_index].rows
            self._perm = (epoch, position, np.random.default_rng(seed).permutation(rows)[self.slot :: self.slots])
        return self._perm[2]

    def __call__(self, step: int) -> EmbeddingBatch:
        position, remaining, pieces = int(step) * self.batch_size, self.batch_size, []
        while remaining:
            epoch, offset = divmod(position, self.epoch_rows)
            order, seeds, starts = self._epoch_plan(epoch)
            i = bisect.bisect_right(starts, offset) - 1
            local = offset - starts[i]
            take = min(remaining, self.mine[order[i]] - local)
            rows = self._permutation(epoch, i, order[i], seeds[i])[local : local + take]
            pieces.append(self.folder.read(self.folder.parts[order[i]], np.sort(rows)))  # file order reads faster
            position, remaining = position + take, remaining - take
        return concat_embedding_batches(pieces)

    def sample(self, n: int) -> EmbeddingBatch:
        """``n`` rows (all of them when fewer) from the start of epoch 0's order: a fixed random sample."""
        n = min(int(n), self.epoch_rows)
        return EmbeddingSteps(self.folder, n, self.seed)(0)


class StreamSteps:
    """Batch ``step`` of a streamed source (see the module docstring); ``steps(step) -> Batch``.

    Args:
        source: the source, opened with ``shuffle=True`` and ``repeat=False``.
        batch_size: samples per batch (each epoch's last partial batch is dropped).
        num_workers: DataLoader worker processes per epoch (0: read in this process).
        state_path: the JSON file recording each epoch's batch count (None: not kept;
            a resumed run then skip-counts from step 0).
        identity: what must be unchanged for the recorded counts to hold (data, size, seed ...).
    """

    def __init__(
        self,
        source: ImageTextSource,
        batch_size: int,
        *,
        num_workers: int = 0,
        state_path: Path | None = None,
        identity: dict[str, Any] | None = None,
    ) -> None:
        if batch_size < 1:
            raise DataError(f"batch size must be >= 1, got {batch_size}")
        if source.repeat:
            raise DataError("StreamSteps reads one epoch at a time: open the source with repeat=False")
        self.source, self.batch_size, self.num_workers = source, int(batch_size), int(num_workers)
        self.state_path = state_path
        self.identity = {
            **(identity or {}),
            "batch_size": self.batch_size,
            "num_workers": self.num_workers,
            "slot": list(worker_slot()),
        }
        self.epoch_batches: list[int] = self._load_counts()
        self._it: Any = None
        self._epoch = self._in_epoch = 0
        self._next_step: int | None = None
        self.reread_batches = 0  # batches read again to reach a resumed step

    def _load_counts(self) -> list[int]:
        if self.state_path is None or not self.state_path.is_file():
            return []
        saved = json.loads(self.state_path.read_text())
        if saved.get("identity") != json.loads(json.dumps(self.identity)):
            log.warning("%s was written for other data or settings; counting the epochs again", self.state_path)
            return []
        return [int(n) for n in saved.get("epoch_batches", [])]

    def _record(self, epoch: int, count: int) -> None:
        if epoch < len(self.epoch_batches):
            if self.epoch_batches[epoch] != count:
                log.warning(
                    "epoch %d gave %d batches, %d when first read: has the data changed?",
                    epoch,
                    count,
                    self.epoch_batches[epoch],
                )
                self.epoch_batches = self.epoch_batches[:epoch] + [count]
        else:
            self.epoch_batches.append(count)
        if self.state_path is not None:
            atomic_write_json(self.state_path, {"identity": self.identity, "epoch_batches": self.epoch_batches})

    def _start_epoch(self, epoch: int) -> None:
        self.source.set_epoch(epoch)  # before the workers are forked: they copy the source
        loader = DataLoader(
            self.source,
            batch_size=self.batch_size,
            num_workers=self.num_workers,
            collate_fn=collate_samples,
            drop_last=True,
        )
        self._it, self._epoch, self._in_epoch = iter(loader), epoch, 0

    def _pull(self) -> Batch:
        while True:
            try:
                batch = next(self._it)
            except StopIteration:
                if self._in_epoch == 0:
                    raise DataError(
                        f"{self.source.describe()['source']}: epoch {self._epoch} gave no full batch of "
                        f"{self.batch_size} samples (skipped: {self.source.skips.as_dict()}); "
                        "use a smaller --batch-size or more data"
                    ) from None
                self._record(self._epoch, self._in_epoch)
                self._start_epoch(self._epoch + 1)
                continue
            self._in_epoch += 1
            return batch

    def _seek(self, step: int) -> None:
        """Open the epoch that holds batch ``step`` and read up to it (counting unknown epochs on the way)."""
        start, epoch = 0, 0
        while epoch < len(self.epoch_batches) and start + self.epoch_batches[epoch] <= step:
            start, epoch = start + self.epoch_batches[epoch], epoch + 1
        self._start_epoch(epoch)
        for _ in range(step - start):
            self._pull()
            self.reread_batches += 1

    def __call__(self, step: int) -> Batch:
        if step != self._next_step:
            self._seek(step)
        batch = self._pull()
        self._next_step = step + 1
        return batch

    def describe(self) -> dict[str, Any]:
        """The source's facts (kind, skip counts of every sample read, re-reads included) and the epochs read."""
        return {
            **self.source.describe(), "batch_size": self.batch_size, "num_workers": self.num_workers,
            "epoch_batches": list(self.epoch_batches), "reread_batches_on_resume": self.reread_batches,
        }  # fmt: skip
