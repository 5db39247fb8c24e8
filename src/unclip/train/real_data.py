"""Set-up of the real-data paths: priors on an embedding folder, the decoder on a stream (issue 12).

``train/components.py`` calls these when ``--embeddings`` is given or the data is streamed
(:func:`uses_stream`); they build the stage and say what the run summary records. The
in-memory path (render once, encode once; ``data/embeddings.py``) stays the default for
the small built-in sets, where it is faster than decoding images every step.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import torch

from ..data.embed import embed_data
from ..data.embedding_folder import EmbeddingFolder
from ..data.embeddings import TextTable, TrainingSet
from ..data.sources import is_shard_spec
from ..data.streaming import open_source
from ..errors import ConfigError
from ..model_dir import component_done
from ..prior.diffusion_prior import DiffusionPrior, DiffusionPriorConfig
from . import distributed
from .ar_stage import build_ar_prior
from .clip_choice import training_clip
from .presets import get_run_preset
from .step_batches import EmbeddingSteps, StreamSteps
from .stream_stages import EmbeddingARPriorStage, EmbeddingPriorStage, StreamDecoderStage, local_batch

if TYPE_CHECKING:
    from .components import Options

log = logging.getLogger(__name__)

EMBED_RECORD = "embed.json"
STREAM_STATE = "stream_state.json"


def uses_stream(data: str, opts: Options) -> bool:
    """Whether the decoder streams ``data``: always for shards or with ``--embeddings``, else when ``--stream``."""
    return bool(opts.stream) or opts.embeddings is not None or is_shard_spec(data)


def open_embeddings(root: str | os.PathLike, clip: Any, record: dict[str, Any] | None) -> EmbeddingFolder:
    """Open an embedding folder for training on ``clip``, checking it was made with that CLIP.

    ``embed.json`` (written by ``unclip embed``) records the CLIP; a different kind or
    SHA-256 is refused. A folder without a record (a released set) is accepted when its
    dimension fits; the stages then compare its z_t with the CLIP's own on the first batch.
    """
    folder = EmbeddingFolder(root)
    if folder.dim != clip.embed_dim:
        raise ConfigError(
            f"the embeddings in {root} have dimension {folder.dim} but the CLIP's embed_dim is {clip.embed_dim}; "
            "pass the CLIP that made them with --clip"
        )
    path = Path(root) / EMBED_RECORD
    saved = json.loads(path.read_text(encoding="utf-8")).get("clip") if path.is_file() else None
    if saved is None:
        log.warning(
            "%s records no CLIP (no %s); checking its text embeddings against the CLIP on the first batch",
            root,
            EMBED_RECORD,
        )
    elif record is not None and (saved.get("kind"), saved.get("sha256")) != (record.get("kind"), record.get("sha256")):
        raise ConfigError(
            f"{root} holds embeddings of the {saved.get('kind')} CLIP {saved.get('spec') or saved.get('name')} "
            f"(SHA-256 {str(saved.get('sha256'))[:12]}...), but this model trains on the {record.get('kind')} CLIP "
            f"{record.get('spec')} (SHA-256 {str(record.get('sha256'))[:12]}...); pass --clip {saved.get('spec')} "
            "with a new --out, or re-embed the data with this CLIP"
        )
    return folder


def prior_from_embeddings(
    section: dict[str, Any], out: Path, opts: Options, clip: Any, record: dict[str, Any], batch_size: int
) -> tuple[EmbeddingPriorStage, dict[str, Any]]:
    """The diffusion prior's stage on ``opts.embeddings`` and what the summary records of it."""
    folder = open_embeddings(opts.embeddings, clip, record)
    dims = {"embed_dim": clip.embed_dim, "text_width": clip.text_width, "context_length": clip.context_length}
    torch.manual_seed(opts.seed)
    model = DiffusionPrior(DiffusionPriorConfig(**{**section["model"], **dims}))
    stage = EmbeddingPriorStage(model, folder, clip, batch_size, seed=opts.seed, export_root=out)
    return stage, {"embeddings": folder.describe(), "batch_size": batch_size}


def _sample_set(steps: EmbeddingSteps, n: int) -> TrainingSet:
    """``n`` rows of the folder as a TrainingSet holding only what the PCA and code book need."""
    rows = steps.sample(n)
    m = len(rows.keys)
    empty = torch.zeros(m, 0)
    text = TextTable(rows.captions, empty.long(), rows.text_embeds, empty, empty.bool())
    return TrainingSet(torch.zeros(m, 0, dtype=torch.uint8), torch.arange(m), rows.captions, rows.image_embeds, text)


def ar_prior_from_embeddings(
    spec: dict[str, Any], out: Path, opts: Options, clip: Any, record: dict[str, Any], n: int
) -> tuple[EmbeddingARPriorStage, dict[str, Any]]:
    """The AR prior's stage on ``opts.embeddings``: PCA and code book fitted on ``n`` rows
    (a fixed random sample), codes computed per batch; and what the summary records."""
    folder = open_embeddings(opts.embeddings, clip, record)
    sample = _sample_set(EmbeddingSteps(folder, 1, opts.seed), n)
    torch.manual_seed(opts.seed)
    model, _, pca_info = build_ar_prior(
        sample, embed_dim=clip.embed_dim, text_width=clip.text_width, context_length=clip.context_length,
        model_kwargs=spec["model"], rel_error=spec["rel_error"], max_components=spec["max_components"],
    )  # fmt: skip
    batch = opts.batch_size or spec["batch_size"]
    stage = EmbeddingARPriorStage(
        model.to(opts.device), folder, clip, batch, seed=opts.seed, export_root=out, extra={"pca": pca_info}
    )
    info = {"pca": pca_info, "pca_rows": len(sample), "embeddings": folder.describe(), "batch_size": batch}
    return stage, info


def stream_decoder_stage(
    data: str,
    preset: str,
    out: Path,
    opts: Options,
    model: Any,
    settings: Any,
    clip: Any,
    record: dict[str, Any],
    batch_size: int,
    *,
    name: str,
    **drops: float,
) -> StreamDecoderStage:
    """The decoder's stage on ``data`` streamed in epochs (:class:`StreamSteps`), z_i from
    ``opts.embeddings`` when given, else encoded by ``clip`` from images read at its size."""
    folder = open_embeddings(opts.embeddings, clip, record) if opts.embeddings is not None else None
    side = model.config.image_size
    size = side if folder is not None else max(side, int(clip.image_size))
    length = get_run_preset(preset)["data"]["num_images"] if str(data) == "shapes" else opts.num_images
    source = open_source(data, size, split="train", seed=opts.seed, shuffle=True, repeat=False, length=length)
    identity = {"data": str(data), "size": size, "seed": opts.seed, "length": length}
    run_dir = out / "runs" / name
    run_dir.mkdir(parents=True, exist_ok=True)
    ctx = distributed.context()  # under torchrun each rank reads its own part of the stream
    state = run_dir / (STREAM_STATE if not ctx.enabled else f"stream_state.rank{ctx.rank}.json")
    local = local_batch(batch_size)
    steps = StreamSteps(source, local, num_workers=opts.num_workers, state_path=state, identity=identity)
    return StreamDecoderStage(model, steps, clip, settings, folder=folder, export_root=out, name=name, **drops)


def train_all_streamed(
    data: str,
    preset: str,
    out: Path,
    opts: Options,
    options: dict[str, Any],
    train_one: Callable[..., Any],
    timings: dict[str, float],
) -> tuple[dict[str, Any], dict[str, Any]]:
    """``train all`` on streamed data (shards, ``--stream``, or with ``--embeddings``).

    Our CLIP trains on in-memory sets, so a frozen CLIP must be given (``--clip``) or be in
    ``out`` already. The data is embedded once into ``out/embeddings`` (resumable; skipped
    when ``--embeddings`` names a folder), then ``train_one`` (``train_component``) trains the
    prior on the embeddings and the decoder on the stream with z_i looked up by key.
    Returns the CLIP's record and what the summary adds (the embedding run, with its skip counts).
    """
    t0 = time.perf_counter()
    clip, record = training_clip(out, opts.clip, opts.device, component="model")
    timings["clip_s"] = time.perf_counter() - t0
    extra: dict[str, Any] = {}
    embeddings = opts.embeddings
    if embeddings is None:
        embeddings = str(out / "embeddings")
        length = get_run_preset(preset)["data"]["num_images"] if str(data) == "shapes" else opts.num_images
        t0 = time.perf_counter()
        with distributed.main_first():  # rank 0 embeds; the others find every part finished
            extra["embed"] = embed_data(
                data, clip, embeddings, seed=opts.seed, length=length, clip_record=record, progress=opts.progress
            )
        timings["embed_s"] = time.perf_counter() - t0
    del clip  # each stage loads its own
    for name, component in (("prior", "prior_diffusion"), ("decoder", "decoder")):
        t0 = time.perf_counter()
        if not (opts.resume and component_done(out, component)):
            train_one(name, data, preset, out, **{**options, "embeddings": embeddings})
        timings[f"{name}_s"] = time.perf_counter() - t0
    return record, extra
