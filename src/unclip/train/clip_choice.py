"""Which frozen CLIP a prior or decoder trains on, and the record of it in the model directory.

unCLIP trains its prior and decoder on a frozen CLIP (Ramesh et al. 2022, section 2). A
model directory holds exactly one: our own (the ``clip`` component, trained by ``unclip
train clip`` or copied in from ``--clip MODEL``) or a pretrained one named by ``--clip
open_clip:ARCH:FILE`` / ``hf:DIR``, which is not copied but recorded in ``model.json``
(``clip_record``: kind, name, spec, file, SHA-256) so that :meth:`unclip.UnCLIP.load` finds
it again. Every stage of one model must use the same CLIP; :func:`training_clip` refuses a
``--clip`` that differs from the one the directory already holds.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from ..clip.frozen import FrozenCLIP
from ..clip.spec import ClipSpec, clip_record, load_clip_spec, load_recorded_clip, parse_clip_spec
from ..errors import CheckpointError, ConfigError
from ..model_dir import component_done, read_clip_record, read_model_json, record_clip, register_component
from . import distributed

log = logging.getLogger(__name__)


def _copy_component(src: Path, dst: Path) -> None:
    """Copy a ``clip`` component folder to ``dst`` atomically (a temporary folder renamed into place)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dst.parent, prefix=f".{dst.name}."))
    try:
        for name in ("config.json", "weights.safetensors"):
            shutil.copyfile(src / name, tmp / name)
        os.replace(tmp, dst)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _same(a: dict[str, Any] | None, b: dict[str, Any]) -> bool:
    return a is not None and (a.get("kind"), a.get("sha256")) == (b.get("kind"), b.get("sha256"))


def _describe(record: dict[str, Any]) -> str:
    return f"{record.get('kind')} CLIP {record.get('spec')} (SHA-256 {str(record.get('sha256'))[:12]}...)"


def training_clip(
    out: str | os.PathLike, spec: str | os.PathLike | ClipSpec | None, device: str, *, component: str
) -> tuple[Any, dict[str, Any]]:
    """The frozen CLIP that ``component`` trains on in model directory ``out``, and its record.

    Without ``spec``: ``out/clip`` (our CLIP), else the pretrained CLIP that ``out/model.json``
    records. With ``spec``: our CLIP is copied to ``out/clip``; a pretrained one is recorded
    in ``out/model.json``. Returns ``(clip, record)``; ``record`` is what
    :func:`unclip.clip.spec.clip_record` says about the CLIP now used.

    Raises:
        CheckpointError: no CLIP at all (the message says how to get one), or a recorded
            pretrained CLIP that is missing or changed.
        ConfigError: ``spec`` names another CLIP than the one ``out`` already holds.
    """
    with distributed.main_first():  # rank 0 copies or records the CLIP; the others then find it
        return _training_clip(Path(out), spec, device, component=component, write=distributed.is_main())


def _training_clip(out: Path, spec: Any, device: str, *, component: str, write: bool) -> tuple[Any, dict[str, Any]]:
    recorded = read_clip_record(out)
    own = component_done(out, "clip")
    if spec is None:
        if own:
            registered = read_model_json(out).get("components", {}) if (out / "model.json").is_file() else {}
            if write and "clip" not in registered:
                register_component(out, "clip")  # e.g. a clip/ trained before `train clip` registered itself
            return FrozenCLIP.load(out / "clip", device=device), clip_record(out / "clip")
        if recorded is not None:
            return load_recorded_clip(recorded, device=device), recorded
        raise CheckpointError(
            f"training the {component} needs a frozen CLIP: {out / 'clip'} does not exist and {out / 'model.json'} "
            f"records none; run `unclip train clip --out {out}` first (or `unclip train all`), or pass --clip "
            "(a model directory, open_clip:ARCH:WEIGHTS or hf:DIRECTORY)"
        )
    parsed = parse_clip_spec(spec)
    record = clip_record(parsed)
    here = clip_record(out / "clip") if own else recorded
    if here is not None and not _same(here, record):
        raise ConfigError(
            f"{out} was trained with the {_describe(here)}, not the --clip {_describe(record)}; every stage of a "
            "model uses one CLIP: pass the same --clip (or none), or train into a new --out"
        )
    if parsed.kind == "unclip":
        if not own and write:
            _copy_component(parsed.path, out / "clip")
            register_component(out, "clip")
        clip = FrozenCLIP.load(out / "clip", device=device)
    else:
        clip = load_clip_spec(parsed, device=device)
    if write:
        record_clip(out, record)
    log.info("%s: training on the frozen %s", component, _describe(record))
    return clip, record


def text_dims(clip: Any) -> dict[str, int]:
    """The decoder's text settings that come from the CLIP's tokenizer: vocabulary, context, padding id.

    Our tokenizer pads with id 0; a transformers tokenizer pads with its ``pad_token_id``
    (CLIP's end-of-text token), and its vocabulary includes added tokens (``len(tokenizer)``).
    """
    tokenizer = clip.tokenizer
    if isinstance(clip, FrozenCLIP):
        vocab, pad = tokenizer.vocab_size, tokenizer.pad_id
    else:
        vocab, pad = len(tokenizer), tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    return {
        "clip_embed_dim": clip.embed_dim,
        "vocab_size": int(vocab),
        "context_length": clip.context_length,
        "pad_token_id": int(pad),
    }
