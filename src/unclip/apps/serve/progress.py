"""Step progress of the job running on a worker thread, for the UI's progress bar.

The library reports sampler progress only through tqdm (``unclip.diffusion.sampling``
wraps every sampling loop in ``tqdm(..., disable=not progress)``). A UI needs the step
count instead, per job, while several jobs run on different threads. :func:`track` installs
one small wrapper in place of that module's ``tqdm`` name (once per process): on a thread
that registered a :class:`JobProgress` it counts the loop's steps into it; on every other
thread it is the real tqdm, unchanged.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Any, Iterator

_local = threading.local()
_install_lock = threading.Lock()
_installed = False


class JobProgress:
    """Where one job is: waiting, or step ``n`` of ``total`` of its ``loops``-th sampling loop ``desc``."""

    def __init__(self) -> None:
        self.started = False
        self.loops = 0
        self.n = 0
        self.total = 0
        self.desc = ""

    def step(self, n: int, total: int, desc: str) -> None:
        if n == 0:
            self.loops += 1
        self.n, self.total, self.desc = n, total, desc

    def fraction(self) -> float | None:
        """Fraction of the current loop done (None while waiting in the queue)."""
        if not self.started or not self.total:
            return None
        return min(1.0, self.n / self.total)

    def describe(self) -> str:
        if not self.started:
            return "waiting in the queue"
        if not self.total:
            return "starting"
        return f"sampling pass {self.loops} ({self.desc}): step {self.n} of {self.total}"


class _Counted:
    """An iterable over a (disabled) tqdm bar that reports each step; other attributes go to the bar."""

    def __init__(self, bar: Any, sink: JobProgress, desc: str) -> None:
        self._bar, self._sink, self._desc = bar, sink, desc

    def __iter__(self) -> Iterator[Any]:
        total = int(self._bar.total or 0)
        for n, item in enumerate(self._bar):
            self._sink.step(n, total, self._desc)
            yield item
        self._sink.step(total, total, self._desc)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._bar, name)


def _install() -> None:
    global _installed
    with _install_lock:
        if _installed:
            return
        from ...diffusion import sampling

        real = sampling.tqdm

        def tracked_tqdm(*args: Any, **kwargs: Any) -> Any:
            sink = getattr(_local, "sink", None)
            if sink is None:
                return real(*args, **kwargs)
            kwargs["disable"] = True
            return _Counted(real(*args, **kwargs), sink, str(kwargs.get("desc") or "sampling"))

        sampling.tqdm = tracked_tqdm
        _installed = True


@contextlib.contextmanager
def track(progress: JobProgress | None) -> Iterator[None]:
    """Count the sampling steps run on this thread into ``progress`` while the block runs."""
    if progress is None:
        yield
        return
    _install()
    previous = getattr(_local, "sink", None)
    _local.sink = progress
    progress.started = True
    try:
        yield
    finally:
        _local.sink = previous
