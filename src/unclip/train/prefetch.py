"""Batches built ahead of the loop in worker processes, for stages whose data is CPU work.

The BSR upsampler's batches cost more than its network's step on a GPU: every crop goes
through its own random plan of blurs, resizes, noise and JPEG round trips (``upsampler/bsr.py``),
and in the training process that held an H200 to about 110 crops per second.

The loop calls ``stage.get_batch(step, generator)`` with ``generator = step_generator(seed,
step)`` and then lets the loss draw its noise from the same generator; so a batch is a pure
function of (seed, step). :class:`BatchPrefetcher` builds the batches of the next steps in
forked worker processes, each from its own fresh step generator, and hands every batch back with
the generator's state after it, which it restores on the loop's generator. A run with workers
is therefore bit-identical to one without, and a resumed run still replays its batches.
"""

from __future__ import annotations

import multiprocessing
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any, Callable

import torch

from ..errors import ConfigError
from .config import step_generator

MakeBatch = Callable[[int, torch.Generator], Any]

_make_batch: MakeBatch | None = None  # the worker's batch function, inherited through fork


def _init_worker(make_batch: MakeBatch) -> None:
    global _make_batch
    _make_batch = make_batch
    torch.set_num_threads(1)  # the workers share the cores with the loop and with each other


def _build(seed: int, step: int) -> tuple[Any, torch.Tensor]:
    generator = step_generator(seed, step)
    batch = _make_batch(step, generator)
    return batch, generator.get_state()


class BatchPrefetcher:
    """``get(step, generator)``: ``make_batch(step, generator)``, built ahead in ``workers`` processes.

    Args:
        make_batch: the stage's batch function; it must draw its randomness only from the
            generator it is given (the loop's contract for ``get_batch``).
        seed: the run's seed (``TrainConfig.seed``), to rebuild the step generators.
        workers: worker processes (>= 1), started on the first ``get`` by forking.
        ahead: steps queued beyond the current one (default: twice ``workers``).
    """

    def __init__(self, make_batch: MakeBatch, seed: int, workers: int, ahead: int | None = None) -> None:
        if workers < 1:
            raise ConfigError(f"a batch prefetcher needs at least one worker process, got workers={workers}")
        self.make_batch, self.seed, self.workers = make_batch, int(seed), int(workers)
        self.ahead = 2 * self.workers if ahead is None else int(ahead)
        self._pool: ProcessPoolExecutor | None = None
        self._futures: dict[int, Future] = {}

    def get(self, step: int, generator: torch.Generator) -> Any:
        """The batch of ``step``; ``generator`` is left where ``make_batch`` would have left it."""
        if not torch.equal(generator.get_state(), step_generator(self.seed, step).get_state()):
            return self.make_batch(step, generator)  # not the loop's fresh generator of this step: build here
        if self._pool is None:
            context = multiprocessing.get_context("fork")  # the workers inherit the stage's images
            self._pool = ProcessPoolExecutor(
                self.workers, mp_context=context, initializer=_init_worker, initargs=(self.make_batch,)
            )
        for old in [s for s in self._futures if s < step or s > step + self.ahead]:
            self._futures.pop(old).cancel()  # a jump (resume, another caller): drop what no longer comes
        for s in range(step, step + self.ahead + 1):
            if s not in self._futures:
                self._futures[s] = self._pool.submit(_build, self.seed, s)
        batch, state = self._futures.pop(step).result()
        generator.set_state(state)
        return batch

    def close(self) -> None:
        """Stop the workers (also done at interpreter exit)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool, self._futures = None, {}
