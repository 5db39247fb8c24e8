"""Training folders: never delete an earlier run unasked, and one run per folder at a time.

``unclip train STAGE --out DIR`` checks DIR before it starts (:func:`check_training_folder`):

* a fresh run (neither ``--resume`` nor ``--overwrite``) needs a folder without an earlier
  run of what it trains: for ``all`` a new or empty folder; for one component, a model
  folder without that component's checkpoints or exported weights;
* ``--resume`` continues the earlier run (its fingerprint must match, see
  :mod:`.fingerprint`);
* ``--overwrite`` deletes what unclip wrote for the stages it trains (checkpoints, caches,
  exported components) and starts over; files unclip did not write are never deleted.

While a run uses DIR it holds ``DIR/.unclip.lock`` (:class:`TrainingLock`): an advisory
``flock`` on the file, which holds the owner's PID and host. The kernel drops the lock
when its process ends, however it ends, so a lock left by a killed run is detected as
stale and taken over; a second live run gets an error naming the holder's PID.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import time
from pathlib import Path
from typing import Any

from ..errors import ConfigError, InputError

log = logging.getLogger(__name__)

LOCK_NAME = ".unclip.lock"
#: what unclip writes in a model / training folder (upsampler_<side> folders too)
KNOWN_ENTRIES = frozenset(
    {
        "model.json",
        "train_summary.json",
        "clip_retrieval.json",
        "cache",
        "runs",
        "clip",
        "prior_diffusion",
        "prior_ar",
        "decoder",
        "decoder_text_only",
        LOCK_NAME,
    }
)
UPSAMPLER_PREFIX = "upsampler_"
_held: dict[str, tuple[int, int]] = {}  # resolved lock path -> (fd, depth) held by this process


def component_of(stage: str, *, text_only: bool = False, high_res: int = 128) -> str:
    """The component folder a ``unclip train`` stage writes (``runs/<component>`` holds its state)."""
    if stage == "decoder":
        return "decoder_text_only" if text_only else "decoder"
    if stage == "upsampler":
        return f"{UPSAMPLER_PREFIX}{int(high_res)}"
    return {"clip": "clip", "prior": "prior_diffusion", "ar-prior": "prior_ar"}.get(stage, stage)


def _is_known(name: str) -> bool:
    return name in KNOWN_ENTRIES or name.startswith(UPSAMPLER_PREFIX) or name.startswith(".train_state")


def _stage_entries(out: Path, stage: str, component: str) -> list[Path]:
    """What an earlier run of ``stage`` left in ``out``."""
    if stage == "all":
        return sorted(out / n for n in os.listdir(out) if _is_known(n) and n != LOCK_NAME)
    paths = [out / "runs" / component, out / component]
    if stage == "clip":
        paths.append(out / "cache")
    return [p for p in paths if p.exists()]


def check_training_folder(
    out: str | os.PathLike, stage: str, *, resume: bool, overwrite: bool, component: str, init_from: str | None = None
) -> None:
    """Refuse to start a fresh run over an earlier one; with ``overwrite``, delete the earlier run first."""
    out = Path(out)
    if resume and overwrite:
        raise InputError("--resume continues the earlier run and --overwrite deletes it: pass one of them, not both")
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} is an existing file; training writes a folder: choose a folder name")
    if not out.exists():
        if resume:
            log.warning("--resume: %s does not exist yet; starting a fresh run", out)
        return
    if not os.access(out, os.W_OK | os.X_OK):
        raise InputError(f"--out {out} is not writable; choose a folder you can write to")
    entries = [n for n in os.listdir(out) if n != LOCK_NAME]
    foreign = sorted(n for n in entries if not _is_known(n))
    if stage == "all" and foreign and not (resume or overwrite):
        shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        raise InputError(
            f"--out {out} holds files unclip did not write ({shown}); `unclip train all` needs a new or empty folder"
        )
    earlier = _stage_entries(out, stage, component)
    if not earlier or resume:
        return
    names = ", ".join(str(p.relative_to(out)) for p in earlier[:4]) + (" ..." if len(earlier) > 4 else "")
    if not overwrite:
        what = "an earlier training run" if stage == "all" else f"an earlier run of {component}"
        raise InputError(
            f"--out {out} holds {what} ({names}); pass --resume to continue it, or --overwrite to delete it and "
            "start over, or choose another folder"
        )
    if init_from is not None:
        source = Path(init_from).resolve()
        for p in earlier:
            if source == p.resolve() or p.resolve() in source.parents:
                raise InputError(
                    f"--init-from {init_from} lies in {p}, which --overwrite would delete; copy it elsewhere"
                )
    for p in earlier:
        log.warning("--overwrite: deleting %s", p)
        shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except (OSError, OverflowError, ValueError):
        return False
    return True


def read_lock(path: str | os.PathLike) -> dict[str, Any]:
    """The holder facts in a lock file (empty when unreadable)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


class TrainingLock:
    """Hold ``folder/.unclip.lock`` for the duration of a ``with`` block (re-entrant in one process)."""

    def __init__(self, folder: str | os.PathLike, what: str = "training") -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self.what = what

    def __enter__(self) -> "TrainingLock":
        try:
            import fcntl
        except ImportError:  # not POSIX: no advisory locks; say so once
            log.info("file locks are not available on this platform; %s is not locked", self.folder)
            return self
        self.folder.mkdir(parents=True, exist_ok=True)
        key = str(self.path.resolve())
        if key in _held:
            fd, depth = _held[key]
            _held[key] = (fd, depth + 1)
            return self
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            holder = read_lock(self.path)
            pid, host = holder.get("pid"), holder.get("host")
            where = f" on {host}" if host and host != socket.gethostname() else ""
            raise InputError(
                f"{self.folder} is in use by another unclip run "
                f"(PID {pid}{where}, {holder.get('command', 'training')}); "
                "wait for it to finish or stop it, or train into another folder"
            ) from None
        earlier = read_lock(self.path)
        if earlier.get("pid") and earlier.get("state") == "held" and earlier.get("pid") != os.getpid():
            alive = _pid_alive(int(earlier["pid"])) if isinstance(earlier["pid"], int) else False
            log.warning(
                "%s: taking over a stale lock of PID %s (%s)",
                self.folder,
                earlier["pid"],
                "its process holds no lock" if alive else "that process has ended",
            )
        self._write(fd, "held")
        _held[key] = (fd, 1)
        return self

    def _write(self, fd: int, state: str) -> None:
        info = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "command": self.what,
            "state": state,
            "time": time.time(),
        }
        data = (json.dumps(info) + "\n").encode()
        os.ftruncate(fd, 0)
        os.pwrite(fd, data, 0)

    def __exit__(self, *exc: Any) -> None:
        key = str(self.path.resolve())
        if key not in _held:
            return
        fd, depth = _held[key]
        if depth > 1:
            _held[key] = (fd, depth - 1)
            return
        del _held[key]
        try:
            import fcntl

            self._write(fd, "released")
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)


def is_primary_process() -> bool:
    """False in the non-zero ranks of a ``torchrun`` job (rank 0 alone checks and locks the folder)."""
    rank = os.environ.get("RANK")
    try:
        return rank is None or int(rank) == 0
    except ValueError:
        return True


def check_options(stage: str, **values: Any) -> None:
    """Stage-specific option combinations that cannot work (an error before any work)."""
    low, high = values.get("low_res"), values.get("high_res")
    if stage == "upsampler" and low is not None and high is not None and high <= low:
        raise ConfigError(f"--high-res {high} must be larger than --low-res {low}")
