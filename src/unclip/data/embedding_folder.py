"""Precomputed CLIP embeddings in the clip-retrieval layout: writer and memory-mapped reader.

::

    ROOT/img_emb/img_emb_{i}.npy          (N_i, E) float16, unit norm   z_i
    ROOT/text_emb/text_emb_{i}.npy        (N_i, E) float16, unit norm   z_t
    ROOT/metadata/metadata_{i}.parquet    N_i rows: key, caption (and any other columns)

This is what clip-retrieval writes and embedding-reader reads, so released sets (LAION's)
plug in unchanged; part numbers may be zero-padded (``img_emb_0000.npy``) or not.

The reader never loads a whole array: each batch opens the part's ``.npy`` files with
``np.load(mmap_mode="r")``, copies out its rows and drops the mapping, so the pages it
touched leave the process and peak memory is bounded by one part's metadata (the caption
column, held as Arrow) plus a batch, not by the number of embeddings. Rows of every part
are dealt to processes by :func:`~unclip.data.sources.worker_slot` (ranks, then
DataLoader workers), so they read disjoint rows that together cover the folder.

The writer makes every file under a temporary name and renames it into place, metadata
last: a part is finished exactly when its three files exist (:func:`is_part_finished`).
"""

from __future__ import annotations

import bisect
import logging
import os
import random
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from ..errors import DataError
from ..storage.checkpoint import atomic_write_with
from .sources import worker_slot

logger = logging.getLogger(__name__)

IMG_DIR, TEXT_DIR, META_DIR = "img_emb", "text_emb", "metadata"
_PART_RE = re.compile(r"^img_emb_(\d+)\.npy$")


def part_paths(root: str | os.PathLike, index: int, digits: str | None = None) -> tuple[Path, Path, Path]:
    """The three files of part ``index``: ``(img_emb, text_emb, metadata)``.

    ``digits`` is the number as spelled on disk (released sets zero-pad it)."""
    root, n = Path(root), digits if digits is not None else str(index)
    return (
        root / IMG_DIR / f"img_emb_{n}.npy",
        root / TEXT_DIR / f"text_emb_{n}.npy",
        root / META_DIR / f"metadata_{n}.parquet",
    )


def is_part_finished(root: str | os.PathLike, index: int) -> bool:
    """True when all three files of part ``index`` exist (the writer renames metadata last)."""
    return all(p.is_file() for p in part_paths(root, index))


def _unit_float16(x: Any, what: str) -> np.ndarray:
    arr = x.detach().cpu().float().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, dtype=np.float32)
    if arr.ndim != 2:
        raise DataError(f"{what} must be a (N, E) array, got shape {arr.shape}")
    norm = np.linalg.norm(arr, axis=1, keepdims=True)
    return (arr / np.maximum(norm, 1e-12)).astype(np.float16)


def write_part(
    root: str | os.PathLike,
    index: int,
    image_embeds: Any,
    text_embeds: Any,
    keys: Sequence[str],
    captions: Sequence[str],
    extra: dict[str, Sequence[Any]] | None = None,
) -> None:
    """Write part ``index``: embeddings renormalised to unit length and stored as float16,
    metadata with ``key``, ``caption`` (and ``extra`` columns); metadata last."""
    import pyarrow as pa  # noqa: PLC0415 - optional until embeddings are used
    import pyarrow.parquet as pq  # noqa: PLC0415

    img, txt = _unit_float16(image_embeds, "image_embeds"), _unit_float16(text_embeds, "text_embeds")
    n = len(keys)
    if img.shape != txt.shape or img.shape[0] != n or len(captions) != n:
        raise DataError(
            f"part {index}: {img.shape[0]} image and {txt.shape[0]} text embeddings for {n} keys and "
            f"{len(captions)} captions; they must match"
        )
    columns = {
        "key": pa.array([str(k) for k in keys], pa.string()),
        "caption": pa.array([str(c) for c in captions], pa.string()),
    }
    for name, values in (extra or {}).items():
        columns[name] = pa.array(list(values))
    table = pa.table(columns)
    img_path, text_path, meta_path = part_paths(root, index)
    atomic_write_with(img_path, lambda tmp: _save_npy(tmp, img))
    atomic_write_with(text_path, lambda tmp: _save_npy(tmp, txt))
    atomic_write_with(meta_path, lambda tmp: pq.write_table(table, tmp))  # last: its presence marks the part finished


def _save_npy(path: str, arr: np.ndarray) -> None:
    with open(path, "wb") as f:
        np.save(f, arr)


class EmbeddingRow(NamedTuple):
    """One row: ``text_embed`` z_t and ``image_embed`` z_i as (E,) float32 tensors, its ``caption`` and ``key``."""

    text_embed: torch.Tensor
    image_embed: torch.Tensor
    caption: str
    key: str


class EmbeddingBatch(NamedTuple):
    """A batch: ``text_embeds`` and ``image_embeds`` (B, E) float32 tensors, ``captions`` and ``keys``."""

    text_embeds: torch.Tensor
    image_embeds: torch.Tensor
    captions: list[str]
    keys: list[str]


@dataclass(frozen=True)
class Part:
    """A finished part: its number, files, row count and first global row."""

    index: int
    img: Path
    text: Path | None
    meta: Path | None
    rows: int
    offset: int


def _gather(path: Path, rows: np.ndarray) -> torch.Tensor:
    """Rows of a ``.npy`` file as float32, through a memory map that is dropped on return
    (so the pages read leave this process's resident set)."""
    return torch.from_numpy(np.load(path, mmap_mode="r")[rows]).float()


def _npy_shape(path: Path) -> tuple[tuple[int, ...], np.dtype]:
    arr = np.load(path, mmap_mode="r")
    return arr.shape, arr.dtype


class EmbeddingFolder:
    """Read a clip-retrieval embedding folder (see the module docstring).

    Args:
        root: the folder holding ``img_emb/`` (and ``text_emb/``, ``metadata/``).
        require_text: fail when ``text_emb`` files are missing (the prior needs z_t);
            with False, ``text_embeds`` of a batch are empty (0, E) tensors.
        require_metadata: fail when ``metadata`` files are missing (captions, keys).
    Raises:
        DataError: no parts, a part whose files disagree in length, or dimensions that differ.
    """

    def __init__(self, root: str | os.PathLike, *, require_text: bool = True, require_metadata: bool = True) -> None:
        self.root = Path(root)
        img_dir = self.root / IMG_DIR
        if not img_dir.is_dir():
            raise DataError(
                f"{self.root} is not an embedding folder: it has no {IMG_DIR}/ (expected img_emb/img_emb_{{i}}.npy, "
                f"text_emb/text_emb_{{i}}.npy, metadata/metadata_{{i}}.parquet, as `unclip embed` or clip-retrieval "
                "write)"
            )
        found = sorted((int(m.group(1)), m.group(1)) for p in img_dir.iterdir() if (m := _PART_RE.match(p.name)))
        self.parts: list[Part] = []
        incomplete, offset, dim = [], 0, None
        for index, digits in found:
            img, text, meta = part_paths(self.root, index, digits)
            if (require_text and not text.is_file()) or (require_metadata and not meta.is_file()):
                incomplete.append(index)
                continue
            shape, dtype = _npy_shape(img)
            rows = self._check_part(
                index, img, text if text.is_file() else None, meta if meta.is_file() else None, shape
            )
            if dim is not None and shape[1] != dim:
                raise DataError(
                    f"{img} has dimension {shape[1]} but earlier parts have {dim}; an embedding folder holds one "
                    "CLIP's embeddings"
                )
            dim = shape[1]
            self.parts.append(
                Part(index, img, text if text.is_file() else None, meta if meta.is_file() else None, rows, offset)
            )
            offset += rows
        if incomplete:
            logger.warning(
                "%s: ignoring %d unfinished part(s) %s (missing text_emb or metadata); run `unclip embed` again to "
                "finish them",
                self.root,
                len(incomplete),
                incomplete[:10],
            )
        if not self.parts:
            raise DataError(
                f"{self.root} holds no finished embedding part (img_emb_{{i}}.npy with text_emb_{{i}}.npy and "
                f"metadata_{{i}}.parquet)"
            )
        self.dim = int(dim or 0)
        self._offsets = [p.offset for p in self.parts]
        self._length = offset
        self._meta_cache: tuple[int, Any] | None = None
        self._key_index: tuple[np.ndarray, np.ndarray] | None = None

    @staticmethod
    def _check_part(index: int, img: Path, text: Path | None, meta: Path | None, shape: tuple[int, ...]) -> int:
        if len(shape) != 2:
            raise DataError(f"{img} holds an array of shape {shape}; expected (N, E)")
        if text is not None and _npy_shape(text)[0] != shape:
            raise DataError(
                f"part {index}: {text} has shape {_npy_shape(text)[0]} but {img} has {shape}; re-create this part"
            )
        if meta is not None:
            import pyarrow.parquet as pq  # noqa: PLC0415

            rows = pq.ParquetFile(meta).metadata.num_rows
            if rows != shape[0]:
                raise DataError(
                    f"part {index}: {meta} has {rows} rows but {img} has {shape[0]} embeddings; re-create this part"
                )
        return int(shape[0])

    def __len__(self) -> int:
        return self._length

    def describe(self) -> dict[str, Any]:
        """JSON-able facts for the run summary."""
        return {"embeddings": str(self.root), "parts": len(self.parts), "rows": len(self), "dim": self.dim}

    # ----------------------------------------------------------------- reading
    def _metadata(self, part: Part) -> Any:
        """The ``key`` and ``caption`` columns of one part (Arrow; the last part read is cached)."""
        if self._meta_cache is not None and self._meta_cache[0] == part.index:
            return self._meta_cache[1]
        if part.meta is None:
            table = None
        else:
            import pyarrow.parquet as pq  # noqa: PLC0415

            names = pq.ParquetFile(part.meta).schema_arrow.names
            if "caption" not in names:
                raise DataError(f"{part.meta} has no 'caption' column (columns: {names})")
            table = pq.read_table(part.meta, columns=[c for c in ("key", "caption") if c in names])
        self._meta_cache = (part.index, table)
        return table

    def _rows(self, part: Part, rows: np.ndarray) -> EmbeddingBatch:
        """Rows ``rows`` (indices within ``part``) as a batch; the memory maps live only inside this call."""
        img = _gather(part.img, rows)
        if part.text is not None:
            txt = _gather(part.text, rows)
        else:
            txt = torch.zeros(0, self.dim)
        table = self._metadata(part)
        if table is None:
            captions = [""] * len(rows)
            keys = [f"{part.index}_{r}" for r in rows]
        else:
            taken = table.take(rows)
            captions = taken.column("caption").to_pylist()
            keys = (
                taken.column("key").to_pylist() if "key" in taken.column_names else [f"{part.index}_{r}" for r in rows]
            )
        return EmbeddingBatch(txt, img, [c or "" for c in captions], [str(k) for k in keys])

    def read(self, part: Part, rows: np.ndarray) -> EmbeddingBatch:
        """Rows ``rows`` (indices within ``part``, one of :attr:`parts`) as a batch, in that order."""
        return self._rows(part, np.asarray(rows, dtype=np.int64))

    def __getitem__(self, index: int) -> EmbeddingRow:
        """Row ``index`` (0 <= index < len): random access through the memory maps."""
        index = range(self._length)[index]
        part = self.parts[bisect.bisect_right(self._offsets, index) - 1]
        b = self._rows(part, np.array([index - part.offset]))
        return EmbeddingRow(
            b.text_embeds[0] if len(b.text_embeds) else b.text_embeds, b.image_embeds[0], b.captions[0], b.keys[0]
        )

    def batches(
        self,
        batch_size: int,
        *,
        shuffle: bool = True,
        seed: int = 0,
        epoch: int = 0,
        repeat: bool = False,
        drop_last: bool = False,
    ) -> Iterator[EmbeddingBatch]:
        """Batches of this process's rows (see :func:`worker_slot`), one pass per epoch or forever with ``repeat``.

        Shuffling is by part: the part order and the rows within each part are permuted
        (seeded by ``seed`` and the epoch), so only one part's metadata is in memory at a
        time. A batch never spans two parts.
        """
        if batch_size < 1:
            raise DataError(f"batch size must be >= 1, got {batch_size}")
        slot, slots = worker_slot()
        while True:
            rng = random.Random(f"{seed}:{epoch}")
            order = list(self.parts)
            if shuffle:
                rng.shuffle(order)
            for part in order:
                rows = np.arange(part.rows, dtype=np.int64)
                if shuffle:
                    rows = np.random.default_rng(rng.getrandbits(63)).permutation(part.rows)
                mine = rows[slot::slots]
                for start in range(0, len(mine), batch_size):
                    chunk = mine[start : start + batch_size]
                    if drop_last and len(chunk) < batch_size:
                        break
                    # A batch is a random set of rows; reading them in file order is faster.
                    yield self._rows(part, np.sort(chunk))
            if not repeat:
                return
            epoch += 1

    # ----------------------------------------------------------------- lookup by key
    def _keys(self) -> tuple[np.ndarray, np.ndarray]:
        """Sorted keys (fixed-width bytes) and their global rows, built on first use:
        about (key length + 8) bytes per row."""
        if self._key_index is None:
            import pyarrow.parquet as pq  # noqa: PLC0415

            chunks = []
            for part in self.parts:
                if part.meta is None or "key" not in pq.ParquetFile(part.meta).schema_arrow.names:
                    raise DataError(
                        "looking up embeddings by key needs a 'key' column in every metadata file; "
                        f"{part.meta or part.img} has none"
                    )
                column = pq.read_table(part.meta, columns=["key"]).column("key").to_pylist()
                chunks.append(np.array([str(k).encode() for k in column], dtype=np.bytes_))
            keys = np.concatenate(chunks) if chunks else np.zeros(0, dtype="S1")
            order = np.argsort(keys, kind="stable")
            keys = keys[order]
            if len(keys) > 1 and (dup := np.flatnonzero(keys[1:] == keys[:-1])).size:
                raise DataError(
                    f"{self.root}: key {keys[dup[0]].decode()!r} appears more than once; keys must be unique to "
                    "look up z_i"
                )
            self._key_index = (keys, order.astype(np.int64))
        return self._key_index

    def lookup_image_embeds(self, keys: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """z_i of the samples named ``keys``: ``(embeds (B, E) float32, found (B,) bool)``;
        rows of missing keys are zero."""
        sorted_keys, rows = self._keys()
        raw = [str(k).encode() for k in keys]
        fits = np.array([len(r) <= sorted_keys.dtype.itemsize for r in raw], dtype=bool)
        wanted = np.array(raw, dtype=sorted_keys.dtype)  # longer keys are cut here and masked by `fits`
        pos = np.searchsorted(sorted_keys, wanted)
        pos_clipped = np.minimum(pos, max(len(sorted_keys) - 1, 0))
        found = (
            fits & (pos < len(sorted_keys)) & (sorted_keys[pos_clipped] == wanted)
            if len(sorted_keys)
            else np.zeros(len(raw), bool)
        )
        out = torch.zeros(len(raw), self.dim)
        global_rows = rows[pos_clipped]
        for part in self.parts:
            sel = np.flatnonzero(found & (global_rows >= part.offset) & (global_rows < part.offset + part.rows))
            if sel.size:
                local = global_rows[sel] - part.offset
                out[torch.from_numpy(sel)] = _gather(part.img, local)
        return out, torch.from_numpy(found)


class EmbeddingBatches(torch.utils.data.IterableDataset):
    """:meth:`EmbeddingFolder.batches` as an IterableDataset, for ``DataLoader(..., batch_size=None)``.

    Each DataLoader worker (and each torch.distributed rank) reads its own rows, so
    ``num_workers`` > 0 overlaps reading with training without repeating rows.
    """

    def __init__(self, folder: EmbeddingFolder, batch_size: int, **kwargs: Any) -> None:
        super().__init__()
        self.folder, self.batch_size, self.kwargs = folder, batch_size, kwargs

    def __iter__(self) -> Iterator[EmbeddingBatch]:
        return self.folder.batches(self.batch_size, **self.kwargs)
