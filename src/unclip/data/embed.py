"""Encode a data source with a frozen CLIP into an embedding folder (``unclip embed``).

One part per input shard (WebDataset shards), or per ``part_size`` items in order (caption
folders and the built-in sets). Resumable: a finished part (its three files present, see
:func:`~unclip.data.embedding_folder.is_part_finished`) is never read or written again, and
every file is renamed into place only when complete, so an interrupted run continues at
the first unfinished part. ``ROOT/embed.json`` records the CLIP used; resuming with a
different CLIP is refused, since one folder must hold one CLIP's embeddings.

Images are read at the CLIP's input size and encoded in batches; z_i and z_t are stored
as unit-norm float16 (the clip-retrieval convention).
"""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from ..errors import DataError
from ..storage.checkpoint import atomic_write_json
from .embedding_folder import is_part_finished, write_part
from .sources import ImageTextSource, collate_samples, is_shard_spec
from .streaming import open_source

logger = logging.getLogger(__name__)

RECORD_NAME = "embed.json"


def _encode_part(
    source: ImageTextSource, clip: Any, batch_size: int, bar: Any
) -> tuple[torch.Tensor, torch.Tensor, list[str], list[str]]:
    images, texts, keys, captions = [], [], [], []
    pending: list[Any] = []

    def flush() -> None:
        batch = collate_samples(pending)
        images.append(clip.encode_image(batch.images.to(clip.device)).float().cpu())
        texts.append(clip.encode_text(batch.captions).float().cpu())
        keys.extend(batch.keys)
        captions.extend(batch.captions)
        bar.update(len(pending))
        pending.clear()

    for sample in source:
        pending.append(sample)
        if len(pending) == batch_size:
            flush()
    if pending:
        flush()
    if not images:
        empty = torch.zeros(0, clip.embed_dim)
        return empty, empty, [], []
    return torch.cat(images), torch.cat(texts), keys, captions


def _check_record(out: Path, clip_record: dict[str, Any] | None) -> None:
    path = out / RECORD_NAME
    if clip_record is None or not path.is_file():
        return
    old = json.loads(path.read_text(encoding="utf-8")).get("clip")
    if old and (old.get("sha256"), old.get("kind")) != (clip_record.get("sha256"), clip_record.get("kind")):
        raise DataError(
            f"{out} holds embeddings of another CLIP ({old.get('kind')} {old.get('name')}, sha256 "
            f"{str(old.get('sha256'))[:12]}); use a new --out folder or the same --clip"
        )


def embed_data(
    src: str | os.PathLike,
    clip: Any,
    out: str | os.PathLike,
    *,
    batch_size: int = 256,
    part_size: int = 10_000,
    split: str = "train",
    seed: int = 0,
    length: int | None = None,
    clip_record: dict[str, Any] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Write the embeddings of every sample of ``src`` into ``out`` (clip-retrieval layout).

    Args:
        src: any ``--data`` (see :func:`~unclip.data.streaming.open_source`).
        clip: a frozen CLIP (``FrozenCLIP`` or a pretrained adapter): ``encode_image``,
            ``encode_text``, ``image_size``, ``embed_dim``, ``device``.
        out: the embedding folder (created; an existing one is resumed).
        batch_size: images per forward pass.
        part_size: items per part for sources that are not shards.
        clip_record: what :func:`unclip.clip.spec.clip_record` says about ``clip``; stored
            in ``embed.json`` and compared on resume.
    Returns:
        the summary also written to ``out/embed.json``: parts, rows, parts done now and
        skipped samples by reason.
    """
    if batch_size < 1 or part_size < 1:
        raise DataError(f"batch size and part size must be >= 1, got {batch_size} and {part_size}")
    out = Path(out)
    _check_record(out, clip_record)
    out.mkdir(parents=True, exist_ok=True)
    size = int(clip.image_size)
    if is_shard_spec(src):
        from .webdataset import WebDatasetSource, resolve_shards  # noqa: PLC0415

        urls = resolve_shards(src)
        parts = [(i, lambda url=url: WebDatasetSource([url], size, shuffle=False)) for i, url in enumerate(urls)]
        total = None
    else:
        whole = open_source(src, size, split=split, seed=seed, shuffle=False, length=length)
        n = len(whole)  # type: ignore[arg-type]
        parts = [
            (i, lambda i=i: whole.select(i * part_size, (i + 1) * part_size)) for i in range(math.ceil(n / part_size))
        ]
        total = n
    record: dict[str, Any] = {
        "format": "clip-retrieval",
        "source": str(src),
        "split": split,
        "seed": seed,
        "clip": clip_record,
        "parts": len(parts),
    }
    atomic_write_json(out / RECORD_NAME, record)
    skipped: dict[str, int] = {}
    used: dict[int, ImageTextSource] = {}
    done_now = 0
    with tqdm(total=total, desc="embed", unit="img", disable=not progress) as bar:
        for index, make in parts:
            if is_part_finished(out, index):
                if total is not None:
                    bar.update(min(part_size, total - index * part_size))
                continue
            source = make()
            img, txt, keys, captions = _encode_part(source, clip, batch_size, bar)
            write_part(out, index, img, txt, keys, captions)
            done_now += 1
            used[id(source)] = source  # a folder or built-in set is one source for all its parts
    for source in used.values():
        for reason, count in source.skips.as_dict().items():
            skipped[reason] = skipped.get(reason, 0) + count
    record.update(parts_written_now=done_now, skipped=skipped)
    atomic_write_json(out / RECORD_NAME, record)
    return record
