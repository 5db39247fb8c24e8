"""Fingerprints of what a training stage and the training cache depend on.

``--resume`` keeps finished stages and the rendered-and-encoded training cache. That is
right only when they were made from the same inputs: resuming a folder with another
``--seed`` or ``--data`` must not keep the old model while the summary records the new
settings. Each stage writes ``runs/<component>/fingerprint.json`` when it starts and the
cache writes ``cache/fingerprint.json``; a resumed run compares its own fingerprint with
them and a difference is a :class:`ConfigError` naming the option, both values and the fix.

A fingerprint holds the data source (a path made absolute), the seed, the preset with its
training settings, the step override and the stage's own options. It leaves out what may
change between a run and its resumption without changing the result: the device, the
progress bar and the wall-clock budget.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..storage.checkpoint import atomic_write_json

log = logging.getLogger(__name__)

FINGERPRINT = "fingerprint.json"
# option -> the flag that sets it (for messages)
FLAGS = {
    "data": "--data",
    "seed": "--seed",
    "preset": "--preset",
    "batch_size": "--batch-size",
    "text_only": "--text-only",
    "init_from": "--init-from",
    "low_res": "--low-res",
    "high_res": "--high-res",
    "degradation": "--degradation",
    "num_images": "the number of images",
    "train": "the preset's training settings",
    "image_size": "the preset's image size",
}
# Not part of what a run is: where and how it runs, and how long it goes on (a resumed run may
# train to more steps; a checkpoint written by N processes resumes on M, with or without FSDP).
_IGNORED = {
    "device", "progress", "resume", "time_limit_s", "overwrite", "steps", "checkpoint_every",
    "fsdp", "grad_checkpointing", "dist_backend", "dist_timeout_s",
}  # fmt: skip


def data_identity(data: Any) -> str:
    """A data source as recorded: a path made absolute, a name as given."""
    text = str(data)
    return str(Path(text).resolve()) if os.path.exists(text) else text


def stage_fingerprint(
    data: Any, preset: str, options: Any, train_settings: dict[str, Any] | None = None
) -> dict[str, Any]:
    """What a stage trained with ``options`` (an ``Options`` dataclass or dict) depends on."""
    opts = asdict(options) if is_dataclass(options) else dict(options)
    fp: dict[str, Any] = {"data": data_identity(data), "preset": str(preset)}
    for key, value in sorted(opts.items()):
        if key not in _IGNORED:
            fp[key] = str(value) if isinstance(value, Path) else value
    if fp.get("init_from") is not None:
        fp["init_from"] = data_identity(fp["init_from"])
    if train_settings is not None:
        fp["train"] = {k: v for k, v in sorted(train_settings.items()) if k != "time_limit_s"}
    return json.loads(json.dumps(fp, default=str))  # the JSON form, as read back


def _differences(saved: dict[str, Any], now: dict[str, Any]) -> list[str]:
    diffs = []
    for key in sorted(set(saved) | set(now)):
        if saved.get(key) != now.get(key):
            diffs.append(f"{FLAGS.get(key, key)} was {saved.get(key)!r} in the earlier run, now {now.get(key)!r}")
    return diffs


def check_fingerprint(folder: str | os.PathLike, fingerprint: dict[str, Any], *, resume: bool, what: str) -> None:
    """On ``resume`` compare with ``folder/fingerprint.json`` (ConfigError on a difference); record it otherwise.

    A folder written before fingerprints existed is accepted with a logged note, and
    gets this run's fingerprint.
    """
    path = Path(folder) / FINGERPRINT
    if resume and path.is_file():
        try:
            saved = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{path} is damaged ({exc}); pass --overwrite to start {what} over") from exc
        if not isinstance(saved, dict):
            raise ConfigError(f"{path} is damaged (not a JSON object); pass --overwrite to start {what} over")
        diffs = _differences(saved, fingerprint)
        if diffs:
            raise ConfigError(
                f"cannot resume {what}: " + "; ".join(diffs[:3]) + ". Resume with the earlier values, or pass "
                "--overwrite to start over"
            )
        return
    if resume and Path(folder).exists():
        log.info(
            "%s has no %s (written before unclip recorded fingerprints); recording this run's", folder, FINGERPRINT
        )
    atomic_write_json(path, fingerprint)


def cache_fingerprint(data: Any, seed: int, spec: dict[str, Any]) -> dict[str, Any]:
    """What the rendered training set in ``cache/`` depends on."""
    return {
        "data": data_identity(data),
        "seed": int(seed),
        "image_size": spec.get("image_size"),
        "num_images": spec.get("num_images"),
    }


def check_cache(cache: str | os.PathLike, fingerprint: dict[str, Any]) -> None:
    """ConfigError when ``cache`` was made from other inputs (a cache without a fingerprint: accepted, with a note)."""
    path = Path(cache) / FINGERPRINT
    if not path.is_file():
        if (Path(cache) / "training_set.safetensors").is_file():
            log.warning("%s has no %s (written by an older unclip); reusing it unchecked", cache, FINGERPRINT)
        return
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path} is damaged ({exc}); pass --overwrite to render the training set again") from exc
    diffs = _differences(saved if isinstance(saved, dict) else {}, fingerprint)
    if diffs:
        raise ConfigError(
            f"the training cache {cache} was made from other inputs: "
            + "; ".join(diffs[:3])
            + ". Use the earlier values, or pass --overwrite to start over"
        )


def record_cache(cache: str | os.PathLike, fingerprint: dict[str, Any]) -> None:
    """Write ``cache/fingerprint.json``."""
    atomic_write_json(Path(cache) / FINGERPRINT, fingerprint)
