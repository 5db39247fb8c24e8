"""An in-memory training set rendered once, with its frozen-CLIP embeddings cached.

The prior and the decoder train on CLIP embeddings of a fixed set of images. Running the
image tower every step would dominate their cost, so the images are rendered once, the
frozen CLIP encodes them (and every distinct caption) once, and the stages index into
these tensors. Captions repeat a lot in ``shapes``, so text encodings are stored per
distinct caption and referenced by ``caption_ids``.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from ..errors import CheckpointError, DataError
from ..storage.checkpoint import atomic_write_json, load_tensors, read_json, save_tensors

log = logging.getLogger(__name__)


@dataclass
class TextTable:
    """CLIP encodings of the distinct captions of a training set."""

    captions: list[str]
    token_ids: torch.Tensor  # (U, L) long, CLIP tokenizer ids
    text_embeds: torch.Tensor  # (U, E) unit vectors
    token_encodings: torch.Tensor  # (U, L, W) per-token CLIP encodings (float16)
    token_mask: torch.Tensor  # (U, L) bool


@dataclass
class TrainingSet:
    """Rendered images (uint8) with caption ids and, once encoded, CLIP embeddings."""

    images: torch.Tensor  # (N, 3, S, S) uint8
    caption_ids: torch.Tensor  # (N,) long, index into captions
    captions: list[str]
    image_embeds: torch.Tensor | None = None  # (N, E) unit vectors
    text: TextTable | None = None
    # images of the source left out while rendering: {"count": n, "reasons": {reason: n}, "examples": [...]}
    skipped: dict | None = None

    def __len__(self) -> int:
        return self.images.shape[0]

    def images_float(self, index: torch.Tensor, size: int | None = None) -> torch.Tensor:
        """Images at ``index`` as floats in [-1, 1], optionally resized to ``size``."""
        x = self.images[index].float().div_(127.5).sub_(1.0)
        if size is not None and size != x.shape[-1]:
            x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        return x


def _collate(items: list[dict | tuple]) -> tuple[torch.Tensor | None, list[str], list[tuple[str, str]]]:
    """Stack the readable items; an unreadable one arrives as ``(path, reason)`` and is passed on to be counted."""
    good = [it for it in items if isinstance(it, dict)]
    skipped = [it for it in items if not isinstance(it, dict)]
    images = torch.stack([it["image"] for it in good]) if good else None
    return images, [it["caption"] for it in good], skipped


class _EachOnce(Dataset):
    """Item ``i`` of a dataset with ``read(i)`` (which gives ``(path, reason)`` for an unreadable
    item instead of standing in the next readable one): every source item is used at most once."""

    def __init__(self, dataset: Dataset, n: int) -> None:
        self.dataset, self.n = dataset, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int):
        return self.dataset.read(index)


def render_training_set(
    dataset: Dataset, n: int, *, batch_size: int = 256, workers: int | None = None, progress: bool = True
) -> TrainingSet:
    """Render the first ``n`` items of ``dataset`` into a :class:`TrainingSet` (uint8 images)."""
    n = min(n, len(dataset)) if hasattr(dataset, "__len__") else n
    each_once = callable(getattr(dataset, "read", None))
    subset = _EachOnce(dataset, n) if each_once else torch.utils.data.Subset(dataset, range(n))
    workers = workers if workers is not None else max(0, min(8, (os.cpu_count() or 1) - 1))
    loader = DataLoader(subset, batch_size=batch_size, shuffle=False, num_workers=workers, collate_fn=_collate)
    chunks, all_captions, skipped = [], [], []
    for images, captions, bad in tqdm(loader, desc="render", disable=not progress, unit="batch"):
        for path, why in bad:
            log.warning("skipping unreadable image %s (%s)", path, why)
            skipped.append((path, why.split(":", 1)[0]))
        if images is not None:
            chunks.append(((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8))
            all_captions.extend(captions)
    if not chunks:
        source = getattr(dataset, "root", "the data")
        raise DataError(f"none of the {n} images of {source} could be read; check the files")
    summary = skip_summary(skipped)
    if skipped:
        reasons = ", ".join(f"{k}: {v}" for k, v in summary["reasons"].items())
        log.warning("left out %d unreadable image(s) of %d (%s)", len(skipped), n, reasons)
    distinct = sorted(set(all_captions))
    lookup = {c: i for i, c in enumerate(distinct)}
    ids = torch.tensor([lookup[c] for c in all_captions], dtype=torch.long)
    return TrainingSet(images=torch.cat(chunks), caption_ids=ids, captions=distinct, skipped=summary)


def skip_summary(skipped: list[tuple[str, str]]) -> dict:
    """``{"count", "reasons": {reason: count}, "examples": [first 5 paths]}`` of unreadable items."""
    reasons: dict[str, int] = {}
    for _, reason in skipped:
        reasons[reason] = reasons.get(reason, 0) + 1
    return {"count": len(skipped), "reasons": reasons, "examples": [path for path, _ in skipped[:5]]}


@torch.no_grad()
def encode_training_set(data: TrainingSet, clip, *, batch_size: int = 512, progress: bool = True) -> TrainingSet:
    """Fill ``image_embeds`` and ``text`` using a frozen CLIP (see ``unclip.clip.FrozenCLIP``)."""
    device = clip.device
    embeds = []
    for start in tqdm(range(0, len(data), batch_size), desc="clip images", disable=not progress):
        idx = torch.arange(start, min(start + batch_size, len(data)))
        embeds.append(clip.encode_image(data.images_float(idx).to(device)).float().cpu())
    data.image_embeds = torch.cat(embeds)
    ids, emb, enc, mask = [], [], [], []
    for start in tqdm(range(0, len(data.captions), batch_size), desc="clip captions", disable=not progress):
        chunk = data.captions[start : start + batch_size]
        tokens = clip.tokenize(chunk)
        out = clip.encode_text_full(tokens.to(device))
        ids.append(tokens.cpu())
        emb.append(out.embed.float().cpu())
        enc.append(out.tokens.half().cpu())
        mask.append(out.mask.cpu())
    data.text = TextTable(data.captions, torch.cat(ids), torch.cat(emb), torch.cat(enc), torch.cat(mask))
    return data


def save_training_set(data: TrainingSet, directory: str | os.PathLike) -> None:
    """Cache a training set (tensors as safetensors, captions as JSON) for re-use."""
    directory = Path(directory)
    tensors = {"images": data.images, "caption_ids": data.caption_ids}
    if data.image_embeds is not None:
        tensors["image_embeds"] = data.image_embeds
    if data.text is not None:
        tensors.update(
            token_ids=data.text.token_ids,
            text_embeds=data.text.text_embeds,
            token_encodings=data.text.token_encodings,
            token_mask=data.text.token_mask,
        )
    save_tensors(directory / "training_set.safetensors", tensors)
    atomic_write_json(directory / "training_set.json", {"captions": data.captions, "skipped": data.skipped})


def load_training_set(directory: str | os.PathLike) -> TrainingSet:
    """Inverse of :func:`save_training_set`."""

    directory = Path(directory)
    t = load_tensors(directory / "training_set.safetensors")
    meta = read_json(directory / "training_set.json", "training cache: ")
    captions = meta.get("captions") if isinstance(meta, dict) else None
    fix = f"the training cache {directory} is damaged; delete it (or pass --overwrite) to render it again"
    if not isinstance(captions, list) or not all(isinstance(c, str) for c in captions):
        raise CheckpointError(f"{directory / 'training_set.json'}: no list of captions; {fix}")
    if "images" not in t or "caption_ids" not in t or t["images"].dtype != torch.uint8 or t["images"].dim() != 4:
        raise CheckpointError(f"{directory / 'training_set.safetensors'}: no uint8 (N, 3, S, S) 'images'; {fix}")
    ids = t["caption_ids"]
    in_range = not ids.numel() or (int(ids.min()) >= 0 and int(ids.max()) < len(captions))
    if ids.shape != (t["images"].shape[0],) or not in_range:
        name = directory / "training_set.safetensors"
        raise CheckpointError(f"{name}: 'caption_ids' do not index the captions; {fix}")
    data = TrainingSet(images=t["images"], caption_ids=ids, captions=captions, image_embeds=t.get("image_embeds"))
    data.skipped = meta.get("skipped")
    if "text_embeds" in t:
        data.text = TextTable(captions, t["token_ids"], t["text_embeds"], t["token_encodings"], t["token_mask"])
    return data
