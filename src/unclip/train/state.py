"""Training state on disk: ``out_dir/train_state/``, safetensors and JSON only.

The folder holds everything needed to continue a run exactly where it stopped:

    model.safetensors       the trained weights (``model.state_dict()``)
    ema.safetensors         the EMA weights (absent when EMA is off)
    optimizer.safetensors   AdamW moments, flattened: ``state.<param index>.<name>``
    state.json              step, stage name, config, optimiser hyper-parameters,
                            RNG states (lists of ints), loss-log bookkeeping, file sizes,
                            ``format_version``; written last

Nothing is pickled: a checkpoint handed over by someone else can only be parsed as JSON or
safetensors. A save writes a complete new folder under a temporary name and then swaps it
in with renames, so an interrupted save leaves the previous checkpoint intact; if the
interruption falls between the two renames, the previous checkpoint is found under its
backup name and loaded from there.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..errors import CheckpointError
from ..storage.checkpoint import atomic_write_bytes, load_tensors, save_tensors
from ..storage.integrity import check_finite, sha256_file, verify_sha256
from .state_checks import check_state_payload

logger = logging.getLogger(__name__)

STATE_DIR = "train_state"
STATE_FORMAT = "unclip-train-state"
STATE_FORMAT_VERSION = 1
MODEL_FILE = "model.safetensors"
EMA_FILE = "ema.safetensors"
OPTIMIZER_FILE = "optimizer.safetensors"
STATE_FILE = "state.json"
_BACKUP = ".train_state.old"
_TMP_PREFIX = ".train_state.tmp"


@dataclass
class TrainState:
    """A checkpoint read back from disk (tensors on CPU)."""

    step: int
    stage: str
    config: dict[str, Any]
    model: dict[str, torch.Tensor]
    ema: dict[str, torch.Tensor] | None
    optimizer: dict[str, Any]
    scaler: dict[str, Any] | None = None
    rng: dict[str, Any] = field(default_factory=dict)
    log: dict[str, Any] = field(default_factory=dict)
    directory: Path | None = None


# --------------------------------------------------------------------------- optimiser


def optimizer_state_to_tensors(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split ``optimizer.state_dict()`` into flat tensors and JSON-able hyper-parameters.

    Tensors are keyed ``state.<param index>.<name>`` (AdamW: ``exp_avg``, ``exp_avg_sq``,
    ``step``); non-tensor per-parameter values and the ``param_groups`` go to the JSON part.
    """
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, per_param in state["state"].items():
        for name, value in per_param.items():
            if "." in name:
                raise CheckpointError(f"optimizer state name {name!r} contains '.', which the flat format cannot store")
            if isinstance(value, torch.Tensor):
                tensors[f"state.{int(index)}.{name}"] = value
            else:
                scalars.setdefault(str(int(index)), {})[name] = value
    groups = []
    for group in state["param_groups"]:
        groups.append({k: (list(v) if isinstance(v, tuple) else v) for k, v in group.items()})
    meta = {"param_groups": groups, "scalars": scalars}
    json.dumps(meta)  # fail here, with the offending value in the traceback, not half-way through a save
    return tensors, meta


def optimizer_state_from_tensors(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    """Inverse of :func:`optimizer_state_to_tensors`: a dict for ``optimizer.load_state_dict``."""
    per_param: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        prefix, index, name = key.split(".", 2)
        if prefix != "state":
            raise CheckpointError(f"unexpected tensor {key!r} in {OPTIMIZER_FILE}")
        per_param.setdefault(int(index), {})[name] = value
    for index, values in meta.get("scalars", {}).items():
        per_param.setdefault(int(index), {}).update(values)
    groups = []
    for group in meta["param_groups"]:
        g = dict(group)
        if isinstance(g.get("betas"), list):
            g["betas"] = tuple(g["betas"])
        groups.append(g)
    return {"state": dict(sorted(per_param.items())), "param_groups": groups}


# --------------------------------------------------------------------------- RNG


def capture_rng() -> dict[str, Any]:
    """torch's global RNG states (CPU and every CUDA device) as lists of ints."""
    rng: dict[str, Any] = {"torch": torch.get_rng_state().tolist()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        rng["cuda"] = [s.tolist() for s in torch.cuda.get_rng_state_all()]
    return rng


def restore_rng(rng: dict[str, Any]) -> None:
    """Restore states captured by :func:`capture_rng` (CUDA ones only where devices exist)."""
    if "torch" in rng:
        torch.set_rng_state(torch.tensor(rng["torch"], dtype=torch.uint8))
    if rng.get("cuda") and torch.cuda.is_available() and len(rng["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([torch.tensor(s, dtype=torch.uint8) for s in rng["cuda"]])


# --------------------------------------------------------------------------- save / load


def _dump_state_json(payload: dict[str, Any]) -> bytes:
    """Indented JSON, except the long RNG int lists, which stay on one line each."""
    rng = payload.get("rng", {})
    placeholders: dict[str, str] = {}
    slim = dict(payload)
    slim_rng: dict[str, Any] = {}
    for key, value in rng.items():
        token = f"@@rng-{key}@@"
        placeholders[json.dumps(token)] = json.dumps(value, separators=(",", ":"))
        slim_rng[key] = token
    slim["rng"] = slim_rng
    text = json.dumps(slim, indent=2, sort_keys=True)
    for token, compact in placeholders.items():
        text = text.replace(token, compact)
    return (text + "\n").encode()


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def save_train_state(
    out_dir: str | os.PathLike,
    *,
    stage: str,
    step: int,
    config: dict[str, Any],
    model_state: dict[str, torch.Tensor],
    optimizer_state: dict[str, Any],
    ema_state: dict[str, torch.Tensor] | None = None,
    scaler_state: dict[str, Any] | None = None,
    rng: dict[str, Any] | None = None,
    log: dict[str, Any] | None = None,
) -> Path:
    """Write a complete checkpoint to ``out_dir/train_state/``, replacing any previous one.

    Args:
        out_dir: the run's output folder.
        stage: the stage's name (checked on resume).
        step: number of optimiser steps completed.
        config: the TrainConfig as a JSON-able dict.
        model_state, ema_state: weights (any device; copied to CPU).
        optimizer_state: ``optimizer.state_dict()``.
        scaler_state: ``GradScaler.state_dict()`` (fp16 on CUDA) or None.
        rng: from :func:`capture_rng`.
        log: loss-log bookkeeping (number of records, the open averaging window).

    Returns:
        The path of the checkpoint folder.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    final = out_dir / STATE_DIR
    backup = out_dir / _BACKUP
    tmp = out_dir / f"{_TMP_PREFIX}-{os.getpid()}"
    for stale in out_dir.glob(f"{_TMP_PREFIX}-*"):
        shutil.rmtree(stale, ignore_errors=True)
    tmp.mkdir()
    try:
        tag = {"step": str(step), "stage": stage, "format": STATE_FORMAT}
        files = {MODEL_FILE: model_state}
        if ema_state is not None:
            files[EMA_FILE] = ema_state
        opt_tensors, opt_meta = optimizer_state_to_tensors(optimizer_state)
        files[OPTIMIZER_FILE] = opt_tensors
        for name, tensors in files.items():
            save_tensors(tmp / name, tensors, metadata=tag)
        payload = {
            "format": STATE_FORMAT,
            "format_version": STATE_FORMAT_VERSION,
            "stage": stage,
            "step": int(step),
            "config": config,
            "optimizer": opt_meta,
            "scaler": scaler_state,
            "rng": rng or {},
            "log": log or {},
            "files": {name: (tmp / name).stat().st_size for name in files},
            "sha256": {name: sha256_file(tmp / name) for name in files},
        }
        # state.json last: a folder without it is never taken for a checkpoint.
        atomic_write_bytes(tmp / STATE_FILE, _dump_state_json(payload))
        _fsync_dir(tmp)
        if backup.exists():
            shutil.rmtree(backup)
        if final.exists():
            os.replace(final, backup)
        os.replace(tmp, final)
        _fsync_dir(out_dir)
        shutil.rmtree(backup, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.debug("saved training state at step %d to %s", step, final)
    return final


def find_train_state(out_dir: str | os.PathLike) -> Path | None:
    """The folder holding the newest complete checkpoint in ``out_dir``, or None."""
    out_dir = Path(out_dir)
    for candidate in (out_dir / STATE_DIR, out_dir / _BACKUP):
        if (candidate / STATE_FILE).is_file():
            return candidate
    return None


def has_train_state(out_dir: str | os.PathLike) -> bool:
    """Whether ``out_dir`` holds a complete checkpoint that ``train(..., resume=True)`` can continue."""
    return find_train_state(out_dir) is not None


def remove_train_state(out_dir: str | os.PathLike) -> None:
    """Delete the checkpoint (and its backup and temporary folders) from ``out_dir``."""
    out_dir = Path(out_dir)
    for path in [out_dir / STATE_DIR, out_dir / _BACKUP, *out_dir.glob(f"{_TMP_PREFIX}-*")]:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()


def load_train_state(out_dir: str | os.PathLike) -> TrainState:
    """Read the checkpoint in ``out_dir`` (see :func:`save_train_state`); tensors on CPU.

    Raises:
        CheckpointError: no checkpoint, an unknown format or version, a missing or
            truncated file. Messages name the file and say what to do.
    """
    out_dir = Path(out_dir)
    directory = find_train_state(out_dir)
    if directory is None:
        raise CheckpointError(
            f"no training state to resume from: {out_dir / STATE_DIR / STATE_FILE} does not exist. "
            "Check the output folder (it must be the one the interrupted run wrote to), or start a fresh run "
            "without resume"
        )
    if directory.name != STATE_DIR:
        logger.warning("using the backup checkpoint %s (the last save was interrupted between renames)", directory)
    path = directory / STATE_FILE
    try:
        payload = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(
            f"could not read {path} as JSON ({exc}); the checkpoint is damaged, delete {directory} to start over"
        ) from exc
    if not isinstance(payload, dict):
        raise CheckpointError(f"{path} is not a JSON object; damaged: delete {directory} to start over")
    if payload.get("format") != STATE_FORMAT:
        raise CheckpointError(f"{path} is not an unclip training state (format {payload.get('format')!r})")
    version = payload.get("format_version")
    if version != STATE_FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has format_version {version}; this unclip reads version {STATE_FORMAT_VERSION}. Resume with the "
            "unclip version that wrote it"
        )
    check_state_payload(payload, path, directory)
    sums = payload.get("sha256")
    if sums is None:
        logger.info("%s records no checksums (written by an older unclip); loading the files unchecked", path)
    for name, size in payload.get("files", {}).items():
        file = directory / name
        if not file.is_file():
            raise CheckpointError(
                f"{file} is missing from the checkpoint; it is incomplete, delete {directory} to start over"
            )
        if file.stat().st_size != size:
            raise CheckpointError(
                f"{file} has {file.stat().st_size} bytes, state.json recorded {size}; the checkpoint is damaged"
            )
        if sums is not None:
            verify_sha256(file, sums.get(name), f"training state {directory}")
    files = payload.get("files", {})
    opt_tensors = load_tensors(directory / OPTIMIZER_FILE)
    model = load_tensors(directory / MODEL_FILE)
    ema = load_tensors(directory / EMA_FILE) if EMA_FILE in files else None
    for name, tensors in ((MODEL_FILE, model), (EMA_FILE, ema or {}), (OPTIMIZER_FILE, opt_tensors)):
        check_finite(tensors, f"training state {directory / name}")
    try:
        optimizer = optimizer_state_from_tensors(opt_tensors, payload["optimizer"])
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise CheckpointError(
            f"{directory / OPTIMIZER_FILE} does not match state.json's optimizer entry ({exc}); "
            "the checkpoint is damaged"
        ) from exc
    return TrainState(
        step=int(payload["step"]),
        stage=str(payload.get("stage", "")),
        config=payload.get("config", {}),
        model=model,
        ema=ema,
        optimizer=optimizer,
        scaler=payload.get("scaler"),
        rng=payload.get("rng", {}),
        log=payload.get("log", {}),
        directory=directory,
    )
