"""``model.json``: the index of a model directory (DESIGN.md section 4).

A model directory holds one sub-directory per component (``clip``, ``prior_diffusion``,
``prior_ar``, ``decoder``, ``decoder_text_only``, ``upsampler_<side>``) and a
``model.json`` that names them, with the sampling defaults and training information.
Training commands that add one component to an existing directory (``unclip train
ar-prior``, ``unclip train upsampler``, ``unclip train decoder --text-only``) register it
here, so that :meth:`unclip.pipeline.UnCLIP.load` finds it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .checkpoint import atomic_write_json, read_json
from .errors import CheckpointError

MODEL_FORMAT = "unclip-model"
MODEL_VERSION = 1


def read_model_json(root: str | os.PathLike) -> dict[str, Any]:
    """Read and validate ``root/model.json``."""
    path = Path(root) / "model.json"
    if not path.is_file():
        raise CheckpointError(f"{Path(root)} has no model.json; is it a model directory written by `unclip train all`?")
    meta = read_json(path)
    if meta.get("format") != MODEL_FORMAT or meta.get("version") != MODEL_VERSION:
        raise CheckpointError(f"{path}: expected format '{MODEL_FORMAT}' version {MODEL_VERSION}, found {meta.get('format')!r} version {meta.get('version')!r}")
    return meta


def register_component(root: str | os.PathLike, name: str, path: str | None = None, info: dict[str, Any] | None = None) -> None:
    """Record ``components[name] = path`` (default ``name``) and ``info[name]`` in ``root/model.json``.

    Written atomically; a directory without ``model.json`` gets a minimal one.
    """
    meta_path = Path(root) / "model.json"
    meta = read_model_json(root) if meta_path.is_file() else {"format": MODEL_FORMAT, "version": MODEL_VERSION, "components": {}}
    meta.setdefault("components", {})[name] = path or name
    if info is not None:
        meta.setdefault("info", {})[name] = info
    atomic_write_json(meta_path, meta)
