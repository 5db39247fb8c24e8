"""Component checkpoints on disk: ``config.json`` + ``weights.safetensors``.

A component directory (DESIGN.md section 4) holds its dataclass config as JSON with a
``format_version`` and a ``component`` name, and its weights as safetensors. Nothing here
unpickles: a file handed to us by a user can only ever be parsed as JSON or safetensors.
Every write goes to a temporary name in the same directory and is renamed into place, so
an interrupted save never leaves a half-written file behind.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, TypeVar

import torch
from safetensors.torch import load_file, save_file

from ..errors import CheckpointError
from .integrity import apply_default_mode, check_finite, json_type_error, sha256_file, verify_sha256
from .quantize import dequantize_state

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
_RESTORE = "Restore config.json or re-export the model"
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "weights.safetensors"

C = TypeVar("C")


def atomic_write_with(path: str | os.PathLike, write: Callable[[str], None]) -> None:
    """Write ``path`` atomically: ``write(tmp)`` fills a temporary file beside it, which is
    synced and renamed into place; on any error the temporary file is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    apply_default_mode(tmp)  # mkstemp makes 0600 files; give the user's umask its say
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file and an atomic rename."""
    atomic_write_with(path, lambda tmp: Path(tmp).write_bytes(data))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def save_tensors(
    path: str | os.PathLike, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None
) -> None:
    """Save a flat dict of tensors as safetensors, atomically (contiguous CPU copies)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    apply_default_mode(tmp)
    try:
        flat = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
        save_file(flat, tmp, metadata=metadata)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def load_tensors(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Load a safetensors file (never pickle); errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"weights file not found: {path}")
    try:
        return load_file(str(path))
    except Exception as exc:  # safetensors raises several types for corrupt files
        raise CheckpointError(
            f"could not read {path} as safetensors ({exc}); the file is corrupt or not a safetensors file"
        ) from exc


def config_to_dict(config: Any) -> dict[str, Any]:
    """A dataclass config as a JSON-able dict (tuples become lists)."""
    if not dataclasses.is_dataclass(config):
        raise TypeError(f"expected a dataclass config, got {type(config).__name__}")
    return dataclasses.asdict(config)


def config_from_dict(cls: type[C], data: dict[str, Any], *, component: str = "component") -> C:
    """Build dataclass ``cls`` from ``data``; unknown keys are an error naming them."""
    if not isinstance(data, dict):
        raise json_type_error(data, "an object of config fields", f"{component}: the config", _RESTORE)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise CheckpointError(
            f"{component}: unknown config keys {unknown} for {cls.__name__}; was it written by a newer unclip?"
        )
    kwargs = {}
    for name, value in data.items():
        default = fields[name].default
        if isinstance(value, list) and isinstance(default, tuple):
            value = tuple(tuple(v) if isinstance(v, list) else v for v in value)
        _check_field_type(name, value, default, component)
        kwargs[name] = value
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{component}: config does not fit {cls.__name__}: {exc}") from exc


def _check_field_type(name: str, value: Any, default: Any, component: str) -> None:
    """A config value must have its default's JSON type (an int field may not hold "big")."""
    if default is dataclasses.MISSING or default is None or value is None:
        return
    kinds = {bool: (bool,), int: (int,), float: (int, float), str: (str,), tuple: (tuple,)}
    for kind, accepted in kinds.items():
        if isinstance(default, kind):
            ok = isinstance(value, accepted) and (kind is bool or not isinstance(value, bool))
            if not ok:
                where = f"{component}: config field '{name}'"
                raise json_type_error(value, f"a {kind.__name__} like {default!r}", where, _RESTORE)
            return


def save_component(
    directory: str | os.PathLike,
    component: str,
    config: Any,
    state_dict: dict[str, torch.Tensor],
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write a component directory: ``config.json`` (config + version) and weights.

    Args:
        directory: target folder, created if missing.
        component: the component's name (e.g. ``"clip"``, ``"decoder"``), checked on load.
        config: the network's dataclass config.
        state_dict: the weights to store (EMA weights for inference).
        extra: other JSON-able data the component needs (e.g. a tokenizer vocabulary).
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    save_tensors(
        directory / WEIGHTS_NAME, state_dict, metadata={"component": component, "format_version": str(FORMAT_VERSION)}
    )
    payload = {
        "component": component,
        "format_version": FORMAT_VERSION,
        "config_class": type(config).__name__,
        "config": config_to_dict(config),
    }
    payload["sha256"] = {WEIGHTS_NAME: sha256_file(directory / WEIGHTS_NAME)}
    if extra:
        payload["extra"] = extra
    atomic_write_json(directory / CONFIG_NAME, payload)
    return directory


def read_json(path: str | os.PathLike, context: str = "") -> Any:
    """Parse a JSON file; invalid JSON raises a CheckpointError naming the file (``context`` prefixes it)."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{context}{path} is not valid JSON ({exc}); restore it or re-export the model") from exc
    except OSError as exc:
        reason = exc.strerror or exc
        raise CheckpointError(f"{context}could not read {path} ({reason}); check that it is a readable file") from exc


def read_component_config(directory: str | os.PathLike, component: str) -> dict[str, Any]:
    """Read and validate a component's ``config.json``; returns the whole payload."""
    directory = Path(directory)
    path = directory / CONFIG_NAME
    if not path.is_file():
        raise CheckpointError(
            f"{component}: no {CONFIG_NAME} in {directory}; is this a {component} component directory?"
        )
    payload = read_json(path, f"{component}: ")
    if not isinstance(payload, dict):
        raise json_type_error(payload, "a JSON object", f"{component}: {path}", "Restore it or re-export the model")
    found = payload.get("component")
    if found != component:
        raise CheckpointError(f"{path}: expected a '{component}' component, found '{found}'")
    version = payload.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"{component}: {path} has format_version {version}, this unclip reads version {FORMAT_VERSION}; upgrade "
            "unclip or re-export the model"
        )
    return payload


def load_state_into(module: torch.nn.Module, state: dict[str, torch.Tensor], component: str) -> None:
    """Load ``state`` into ``module`` strictly; mismatches raise a CheckpointError listing them."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [
        f"{k}: expected {tuple(own[k].shape)}, found {tuple(state[k].shape)}"
        for k in own
        if k in state and own[k].shape != state[k].shape
    ]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing {missing[:5]}{'...' if len(missing) > 5 else ''}")
        if unexpected:
            parts.append(f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}")
        if shapes:
            parts.append("shape mismatch " + "; ".join(shapes[:5]))
        raise CheckpointError(f"{component}: weights do not fit the config: " + ", ".join(parts))
    module.load_state_dict(state, strict=True)


def load_component(
    directory: str | os.PathLike, component: str, config_cls: type[C]
) -> tuple[C, dict[str, torch.Tensor], dict[str, Any]]:
    """Read a component directory: returns ``(config, state_dict, extra)``.

    The caller builds the module from the config and calls :func:`load_state_into`.
    """
    directory = Path(directory)
    payload = read_component_config(directory, component)
    config = config_from_dict(config_cls, payload.get("config", {}), component=component)
    extra = payload.get("extra", {})
    if not isinstance(extra, dict):
        where = f"{component}: 'extra' in {directory / CONFIG_NAME}"
        raise json_type_error(extra, "an object", where, "Re-export the model")
    sums = payload.get("sha256")
    if sums is None:
        logger.info("%s: %s records no weights checksum; loading them unchecked", component, directory / CONFIG_NAME)
    elif not isinstance(sums, dict) or WEIGHTS_NAME not in sums:
        where = f"{component}: 'sha256' in {directory / CONFIG_NAME}"
        raise json_type_error(sums, f"an object with the SHA-256 of {WEIGHTS_NAME}", where, "Re-export the model")
    elif (directory / WEIGHTS_NAME).is_file():
        verify_sha256(directory / WEIGHTS_NAME, sums[WEIGHTS_NAME], component)
    state = dequantize_state(load_tensors(directory / WEIGHTS_NAME))
    check_finite(state, f"{component} ({directory / WEIGHTS_NAME})")
    return config, state, extra
