"""Stopping a training run cleanly on a signal: finish the step, write a checkpoint, return.

Long runs end from outside more often than they crash: a cluster pre-empts the job with
SIGTERM (SLURM, Kubernetes; torchrun forwards it to its workers), SLURM can warn ahead of the
time limit with SIGUSR1 (``sbatch --signal=USR1@120``), a user presses Ctrl-C (SIGINT). With
the default handlers every step since the last checkpoint is lost. :class:`StopSignals`
records the signal instead; the loop (``train/loop.py``) asks :meth:`StopSignals.requested`
after each step, writes a checkpoint at that step and returns, and ``unclip train ... --resume``
continues from there bit-exactly. A second Ctrl-C stops at once (KeyboardInterrupt), as a
user who presses it twice expects.

Under torchrun every rank must stop at the same step (a checkpoint is a collective), so the
ranks agree with one all-reduce at the points where the loop synchronises anyway.
"""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType, TracebackType

import torch

from . import distributed

log = logging.getLogger(__name__)

# SIGUSR1 does not exist on Windows
STOP_SIGNALS: tuple[signal.Signals, ...] = tuple(
    getattr(signal, name) for name in ("SIGTERM", "SIGINT", "SIGUSR1") if hasattr(signal, name)
)
_ON_ANOTHER_RANK = "a stop signal on another rank"


class StopSignals:
    """Context manager that turns :data:`STOP_SIGNALS` into a stop request while it is active.

    Handlers can only be installed from the main thread; elsewhere (training started from a
    web app's worker thread) the signals keep their handlers and :meth:`requested` stays
    False. The previous handlers come back on exit.
    """

    def __init__(self) -> None:
        self.received: str | None = None
        self._previous: dict[signal.Signals, object] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in STOP_SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self.received is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # the second Ctrl-C: stop now, losing the steps since the last checkpoint
        self.received = self.received or name
        log.warning("received %s: finishing this step, writing a checkpoint, then stopping", name)

    def requested(self, device: torch.device) -> str | None:
        """The signal's name when training should stop after this step, else None.

        Under torchrun the ranks agree (one all-reduce on ``device``, the training device,
        where the process group's tensors live), so every rank must call this at the same
        steps; a single process just reads its own flag.
        """
        if not distributed.context().enabled:
            return self.received
        flag = torch.tensor([1.0 if self.received else 0.0], device=device)
        if float(distributed.all_reduce_mean(flag).item()) > 0:
            return self.received or _ON_ANOTHER_RANK
        return None
