"""A bounded queue and a fixed number of worker threads for one model.

A request beyond the queue is refused at once (:class:`QueueFull`, HTTP 503 with a
``Retry-After`` hint) instead of waiting without bound: the server's memory and latency
stay bounded whatever the load. Jobs are plain callables run on the workers; callers wait
on the :class:`concurrent.futures.Future` that :meth:`WorkerPool.submit` returns (the API
through ``asyncio.wrap_future``, the UI by polling it to show progress).

Threads rather than processes: a job spends its time inside torch, which releases the GIL,
and one copy of the model's weights serves every worker.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
from concurrent.futures import Future
from typing import Any, Callable

from ...errors import UnclipError

log = logging.getLogger(__name__)


class QueueFull(UnclipError):
    """The model's queue is full; ``retry_after`` is a hint in whole seconds."""

    def __init__(self, model: str, waiting: int, retry_after: int) -> None:
        super().__init__(
            f"the queue of model '{model}' is full ({waiting} requests waiting); retry in about {retry_after} s"
        )
        self.retry_after = retry_after


class PoolClosed(UnclipError):
    """The server is shutting down and takes no more work (queued jobs get this error too)."""


class WorkerPool:
    """``workers`` threads taking jobs from a queue that holds at most ``queue_size`` waiting jobs."""

    def __init__(self, name: str, workers: int = 1, queue_size: int = 8) -> None:
        if workers < 1 or queue_size < 1:
            raise UnclipError(f"a worker pool needs workers >= 1 and queue_size >= 1, got {workers} and {queue_size}")
        self.name = name
        self.workers = workers
        self.queue_size = queue_size
        self._queue: queue.Queue = queue.Queue(maxsize=queue_size)
        self._lock = threading.Lock()
        self._closed = False
        self._running = 0
        self._done = 0
        self._mean_s: float | None = None  # running mean of job durations, for the retry hint
        self._threads = [
            threading.Thread(target=self._work, name=f"unclip-serve-{name}-{k}", daemon=True) for k in range(workers)
        ]
        for t in self._threads:
            t.start()

    # ------------------------------------------------------------------ submitting
    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future:
        """Queue ``fn(*args, **kwargs)``; raises :class:`QueueFull` or :class:`PoolClosed` at once, never blocks."""
        fut: Future = Future()
        with self._lock:
            if self._closed:
                raise PoolClosed("the server is shutting down; no new work is accepted")
            try:
                self._queue.put_nowait((fut, fn, args, kwargs))
            except queue.Full:
                raise QueueFull(self.name, self._queue.qsize(), self.retry_after()) from None
        return fut

    def retry_after(self) -> int:
        """Seconds until a slot is likely free: the mean job time x jobs ahead / workers (1 to 600)."""
        mean = self._mean_s if self._mean_s is not None else 1.0
        ahead = self._queue.qsize() + self._running
        return int(min(600, max(1, math.ceil(mean * max(ahead, 1) / self.workers))))

    def stats(self) -> dict[str, int]:
        """Waiting, running and completed jobs, and the pool's sizes (for /api/health)."""
        return {
            "waiting": self._queue.qsize(),
            "running": self._running,
            "done": self._done,
            "workers": self.workers,
            "queue_size": self.queue_size,
        }

    @property
    def closed(self) -> bool:
        return self._closed

    # ------------------------------------------------------------------ working
    def _work(self) -> None:
        while True:
            try:
                item = self._queue.get(timeout=0.1)
            except queue.Empty:
                if self._closed:
                    return
                continue
            fut, fn, args, kwargs = item
            if not fut.set_running_or_notify_cancel():
                continue
            with self._lock:
                self._running += 1
            start = time.monotonic()
            try:
                fut.set_result(fn(*args, **kwargs))
            except BaseException as exc:  # handed to the waiting request, which reports it
                fut.set_exception(exc)
            finally:
                took = time.monotonic() - start
                with self._lock:
                    self._running -= 1
                    self._done += 1
                    self._mean_s = took if self._mean_s is None else 0.8 * self._mean_s + 0.2 * took

    def close(self, timeout: float = 30.0) -> None:
        """Stop taking work: queued jobs fail with :class:`PoolClosed`, running ones finish (up to ``timeout`` s)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            dropped = 0
            while True:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item[0].set_running_or_notify_cancel():
                    item[0].set_exception(PoolClosed("the server shut down before this request started; retry later"))
                    dropped += 1
        deadline = time.monotonic() + timeout
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        alive = sum(t.is_alive() for t in self._threads)
        log.info(
            "model %s: worker pool closed (%d queued requests refused, %d workers still busy)",
            self.name,
            dropped,
            alive,
        )
