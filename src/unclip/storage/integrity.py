"""Checks that what is read back is what was written: checksums, finiteness, file modes, types.

* SHA-256 of a file, streamed (:func:`sha256_file`); a component's ``config.json`` records
  the checksum of its weights and loading compares it (:func:`verify_sha256`), so flipped
  bytes in a weights file are an error, not a subtly different model.
* :func:`check_finite`: a weights dict with a NaN or an infinity is an error naming the
  tensor (an all-NaN model would otherwise generate black images with exit code 0).
* :func:`default_file_mode`: ``tempfile.mkstemp`` creates files readable by their owner
  only (0600); the atomic writers chmod their temporary file to what ``open()`` would have
  given (0666 minus the user's umask) before renaming it into place.
"""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path
from typing import Any, Mapping

import torch

from ..errors import CheckpointError

_CHUNK = 1 << 20
_umask_lock = threading.Lock()


def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_sha256(path: str | os.PathLike, expected: Any, what: str) -> None:
    """Raise CheckpointError when ``path``'s SHA-256 differs from ``expected`` (a hex string)."""
    if not isinstance(expected, str) or len(expected) != 64:
        raise CheckpointError(
            f"{what}: the recorded checksum {expected!r} of {path} is not a SHA-256 hex string; re-export the model"
        )
    try:
        found = sha256_file(path)
    except OSError as exc:
        raise CheckpointError(f"{what}: could not read {path} ({exc})") from exc
    if found != expected.lower():
        raise CheckpointError(
            f"{what}: {path} is damaged: its SHA-256 is {found[:12]}..., its config.json recorded {expected[:12]}...; "
            "restore the file from a backup or re-train/re-export the component"
        )


def check_finite(state: Mapping[str, torch.Tensor], what: str) -> None:
    """Raise CheckpointError naming the first floating tensor of ``state`` that holds NaN or inf."""
    for name, tensor in state.items():
        if isinstance(tensor, torch.Tensor) and tensor.is_floating_point() and tensor.numel():
            if not bool(torch.isfinite(tensor).all()):
                bad = int((~torch.isfinite(tensor)).sum())
                raise CheckpointError(
                    f"{what}: tensor '{name}' holds {bad} non-finite value(s) (NaN or inf); the weights are damaged, "
                    "restore them from a backup or re-train"
                )


def current_umask() -> int:
    """The process's umask (read by setting and restoring it, under a lock)."""
    with _umask_lock:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def default_file_mode() -> int:
    """The mode ``open(path, "w")`` gives a new file: 0666 minus the umask."""
    return 0o666 & ~current_umask()


def apply_default_mode(path: str | os.PathLike) -> None:
    """chmod a freshly created temporary file to :func:`default_file_mode` (best effort on odd filesystems)."""
    try:
        os.chmod(path, default_file_mode())
    except OSError:
        pass


def json_type_error(value: Any, expected: str, where: str, fix: str) -> CheckpointError:
    """A CheckpointError saying that ``where`` holds ``value`` where ``expected`` belongs."""
    shown = repr(value)
    if len(shown) > 60:
        shown = shown[:57] + "..."
    return CheckpointError(f"{where} is {shown} ({type(value).__name__}); expected {expected}. {fix}")


def path_text(path: str | os.PathLike) -> str:
    """A path for messages (absolute paths stay as given; kept short)."""
    text = str(Path(path))
    return text if len(text) <= 200 else text[:100] + "..." + text[-97:]
