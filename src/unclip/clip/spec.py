"""``--clip``: which frozen CLIP to use, loading it, and recording it in a model directory.

Spellings (DESIGN.md section 4):

- ``shapes``, ``PATH/TO/MODEL`` or ``PATH/TO/MODEL/clip``: our own CLIP, from a shipped
  model, a model directory written by ``unclip train`` or its ``clip/`` component;
- ``open_clip:ARCH:WEIGHTS``: an OpenCLIP model, ``ARCH`` a name shipped with open_clip_torch
  (``ViT-B-32``) or the path of its config ``.json``, ``WEIGHTS`` a local ``.safetensors``
  (or ``.pt``/``.bin``) file; read into transformers' CLIPModel (:mod:`unclip.clip.openclip`);
- ``hf:DIRECTORY``: a transformers ``CLIPModel`` saved with ``save_pretrained`` (plus its
  tokenizer files).

Nothing is fetched from a hub. A model trained on a CLIP records it with
:func:`clip_record` (kind, name, file, SHA-256 of the weights); :func:`check_clip_record`
says what is missing or changed before :func:`load_recorded_clip` loads it again.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from ..errors import CheckpointError, ConfigError

KINDS = ("unclip", "open_clip", "hf")
SHIPPED = ("shapes",)
CLIP_HELP = (
    "the frozen CLIP: 'shapes' or a model directory (or its clip/) for our own CLIP; "
    "'open_clip:ARCH:WEIGHTS' for OpenCLIP (ARCH a name such as ViT-B-32 from an installed open_clip_torch, or a "
    "config .json; WEIGHTS a local .safetensors); 'hf:DIRECTORY' for a transformers CLIPModel directory"
)


@dataclass(frozen=True)
class ClipSpec:
    """A parsed ``--clip``: ``kind`` (one of :data:`KINDS`), the weights ``path`` (the ``clip``
    component folder, the OpenCLIP file or the transformers folder) and the OpenCLIP ``arch``."""

    kind: str
    path: Path
    arch: str | None = None

    def __str__(self) -> str:
        if self.kind == "open_clip":
            return f"open_clip:{self.arch}:{self.path}"
        return f"hf:{self.path}" if self.kind == "hf" else str(self.path)


def _our_clip_dir(text: str) -> Path:
    path = Path(str(resources.files("unclip") / "models" / text)) if text in SHIPPED else Path(text).expanduser()
    if (path / "model.json").is_file():
        components = json.loads((path / "model.json").read_text(encoding="utf-8")).get("components", {})
        sub = path / components.get("clip", "clip")
        if not (sub / "config.json").is_file():
            raise CheckpointError(
                f"--clip {text}: the model directory {path} has no clip component ({sub} is missing); it may use a "
                "pretrained CLIP, see its model.json"
            )
        return sub
    if (path / "config.json").is_file() and (path / "weights.safetensors").is_file():
        return path
    raise ConfigError(
        f"--clip {text!r} is not a model directory (model.json), a clip component folder (config.json + "
        "weights.safetensors), 'open_clip:ARCH:WEIGHTS' or 'hf:DIRECTORY'"
    )


def parse_clip_spec(text: str | os.PathLike | ClipSpec) -> ClipSpec:
    """Parse a ``--clip`` value (see the module docstring); checks that the files exist."""
    if isinstance(text, ClipSpec):
        return text
    text = str(text)
    if text.startswith("open_clip:"):
        parts = text.split(":", 2)
        if len(parts) != 3 or not parts[1] or not parts[2]:
            raise ConfigError(
                f"--clip {text!r}: write OpenCLIP models as open_clip:ARCH:WEIGHTS_FILE, e.g. "
                "open_clip:ViT-B-32:/models/vit-b-32.safetensors"
            )
        path = Path(parts[2]).expanduser()
        if not path.is_file():
            raise CheckpointError(f"--clip {text!r}: the OpenCLIP weights file {path} does not exist")
        return ClipSpec("open_clip", path.resolve(), parts[1])
    if text.startswith("hf:"):
        path = Path(text[3:]).expanduser()
        if not (path / "config.json").is_file():
            raise CheckpointError(
                f"--clip {text!r}: {path} is not a transformers CLIPModel directory (no config.json); save one with "
                "model.save_pretrained(DIR) and tokenizer.save_pretrained(DIR)"
            )
        return ClipSpec("hf", path.resolve())
    return ClipSpec("unclip", _our_clip_dir(text).resolve())


def load_clip_spec(spec: str | os.PathLike | ClipSpec, device: str | torch.device = "cpu", batch_size: int = 64) -> Any:
    """The frozen CLIP named by ``spec``: a ``FrozenCLIP`` (ours) or an ``HFCLIP`` adapter.

    Both offer ``tokenize``, ``encode_text``, ``encode_text_full``, ``encode_image`` (images
    in [-1, 1], any size), ``embed_dim``, ``text_width``, ``context_length``, ``image_size``.
    """
    spec = parse_clip_spec(spec)
    if spec.kind == "unclip":
        from .frozen import FrozenCLIP  # noqa: PLC0415

        return FrozenCLIP.load(spec.path, device=device, batch_size=batch_size)
    from .pretrained import HFCLIP  # noqa: PLC0415

    if spec.kind == "hf":
        return HFCLIP.from_directory(spec.path, device=device, batch_size=batch_size)
    return HFCLIP.from_openclip(spec.path, spec.arch or "", device=device, batch_size=batch_size)


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def weights_file(spec: ClipSpec) -> Path:
    """The one file whose hash identifies the CLIP's weights."""
    if spec.kind == "unclip":
        return spec.path / "weights.safetensors"
    if spec.kind == "open_clip":
        return spec.path
    for name in ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin"):
        if (spec.path / name).is_file():
            return spec.path / name
    raise CheckpointError(f"{spec.path} has no model.safetensors; save the CLIPModel with save_pretrained(DIR)")


def clip_record(spec: str | os.PathLike | ClipSpec) -> dict[str, Any]:
    """What a model directory records about its CLIP (for ``model.json``).

    ``{"kind", "name", "spec", "file", "sha256"}``: ``name`` is the OpenCLIP architecture or
    the folder, ``spec`` the ``--clip`` value that loads it again, ``file`` the absolute path
    of the weights file and ``sha256`` its hash.
    """
    spec = parse_clip_spec(spec)
    file = weights_file(spec)
    name = spec.arch if spec.kind == "open_clip" else str(spec.path)
    return {"kind": spec.kind, "name": name, "spec": str(spec), "file": str(file), "sha256": sha256_file(file)}


def check_clip_record(record: dict[str, Any]) -> list[str]:
    """What is wrong with a recorded CLIP on this machine: one sentence per problem (empty when fine)."""
    problems: list[str] = []
    missing = [k for k in ("kind", "spec", "file", "sha256") if k not in record]
    if missing:
        return [f"the CLIP record lacks {', '.join(missing)}; re-train or re-write model.json with clip_record()"]
    if record["kind"] not in KINDS:
        return [f"unknown CLIP kind {record['kind']!r} (known: {', '.join(KINDS)})"]
    file = Path(record["file"])
    if not file.is_file():
        problems.append(
            f"the {record['kind']} CLIP weights file {file} that this model was trained with is missing; put it "
            f"back at that path (SHA-256 {record['sha256'][:16]}...)"
        )
    elif (now := sha256_file(file)) != record["sha256"]:
        problems.append(
            f"the CLIP weights file {file} changed since training (SHA-256 now {now[:16]}..., recorded "
            f"{record['sha256'][:16]}...); restore the original weights"
        )
    return problems


def load_recorded_clip(record: dict[str, Any], device: str | torch.device = "cpu", batch_size: int = 64) -> Any:
    """Load the CLIP a model recorded, after :func:`check_clip_record`; raises CheckpointError naming every problem."""
    problems = check_clip_record(record)
    if problems:
        raise CheckpointError("cannot load this model's CLIP: " + "; ".join(problems))
    return load_clip_spec(record["spec"], device=device, batch_size=batch_size)
