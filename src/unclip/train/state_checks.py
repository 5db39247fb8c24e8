"""Types and ranges of a training state's ``state.json`` (see :mod:`.state`), checked before use.

A state that parses but is wrong (``"step": -5``, ``"step": "abc"``, ``"optimizer"``
missing, ``"rng": {"torch": [1, 2, 3]}``) must be an error naming the field, never a
traceback deep in the optimiser nor a run that silently restarts from an odd place.
The per-file SHA-256 (checked by :func:`~unclip.train.state.load_train_state`) catches
flipped bytes and files swapped with each other (EMA for model).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..errors import CheckpointError

# torch's CPU generator state is a ByteTensor of this many bytes (Mersenne Twister + extras)
_CPU_RNG_BYTES = 5056


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _bytes_list(value: Any) -> bool:
    return isinstance(value, list) and all(_is_int(v) and 0 <= v <= 255 for v in value)


def check_state_payload(payload: dict[str, Any], path: str | os.PathLike, directory: str | os.PathLike) -> None:
    """Raise CheckpointError naming the first field of ``state.json`` with a wrong type or value."""
    fix = f"the checkpoint is damaged: delete {Path(directory)} (or pass --overwrite) to start over"

    def fail(what: str) -> CheckpointError:
        return CheckpointError(f"{path}: {what}; {fix}")

    step = payload.get("step")
    if not _is_int(step) or step < 0:
        raise fail(f"'step' is {step!r}; expected a whole number >= 0")
    config = payload.get("config", {})
    if not isinstance(config, dict):
        raise fail("'config' is not an object")
    total = config.get("steps")
    if total is not None and (not _is_int(total) or total < 0):
        raise fail(f"config 'steps' is {total!r}; expected a whole number >= 0")
    if not isinstance(payload.get("stage", ""), str):
        raise fail("'stage' is not a string")
    optimizer = payload.get("optimizer")
    if not isinstance(optimizer, dict) or not isinstance(optimizer.get("param_groups"), list):
        raise fail("'optimizer' is missing or has no list 'param_groups'")
    if not all(isinstance(g, dict) and isinstance(g.get("params"), list) for g in optimizer["param_groups"]):
        raise fail("an optimizer param group is not an object with a list 'params'")
    if not isinstance(optimizer.get("scalars", {}), dict):
        raise fail("optimizer 'scalars' is not an object")
    files = payload.get("files", {})
    if not isinstance(files, dict) or not all(isinstance(k, str) and _is_int(v) and v >= 0 for k, v in files.items()):
        raise fail("'files' must map file names to sizes in bytes")
    if any(Path(name).name != name for name in files):
        raise fail("'files' names a path outside the checkpoint folder")
    sums = payload.get("sha256")
    if sums is not None and (not isinstance(sums, dict) or set(sums) != set(files)):
        raise fail("'sha256' must hold one checksum per file of 'files'")
    rng = payload.get("rng", {})
    if not isinstance(rng, dict):
        raise fail("'rng' is not an object")
    if "torch" in rng and (not _bytes_list(rng["torch"]) or len(rng["torch"]) != _CPU_RNG_BYTES):
        raise fail(f"rng 'torch' must be a list of {_CPU_RNG_BYTES} bytes (0..255)")
    if "cuda" in rng and not (isinstance(rng["cuda"], list) and all(_bytes_list(s) for s in rng["cuda"])):
        raise fail("rng 'cuda' must be a list of byte lists")
    log = payload.get("log", {})
    if not isinstance(log, dict) or not isinstance(log.get("window", []), list):
        raise fail("'log' must be an object with a list 'window'")
    for entry in log.get("window", []):
        ok = (
            isinstance(entry, dict)
            and isinstance(entry.get("loss"), (int, float))
            and not isinstance(entry["loss"], bool)
        )
        if not ok or not isinstance(entry.get("metrics", {}), dict):
            raise fail("a 'log' window entry is not an object with a numeric 'loss'")
    scaler = payload.get("scaler")
    if scaler is not None and not isinstance(scaler, dict):
        raise fail("'scaler' must be null or an object")
