"""Write WebDataset shards in the img2dataset layout from a caption folder or a built-in set.

``unclip data shards SRC --out DIR`` lands here. Shards are ``DIR/00000.tar``,
``DIR/00001.tar``, ... holding ``KEY.png`` (or the folder's original ``.jpg``/``.webp``/...
bytes, untouched), ``KEY.txt`` and ``KEY.json`` (key, caption and where the sample came
from), ``shard_size`` samples each, written with webdataset's ``ShardWriter``. Keys are
img2dataset's nine-digit running numbers. Each shard is written under a hidden temporary
name and renamed into place when complete, so an interrupted run leaves only whole shards;
``DIR/shards.json`` summarises the run.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from ..errors import DataError
from ..storage.checkpoint import atomic_write_json
from ..storage.imageio import tensor_to_pil
from .folder import IMAGE_EXTENSIONS
from .webdataset import require_webdataset

PARTIAL_PREFIX = ".partial-"


def _png(image: Any) -> bytes:
    buffer = io.BytesIO()
    tensor_to_pil(image)[0].save(buffer, format="PNG")
    return buffer.getvalue()


def _builtin_items(
    name: str, split: str, size: int, seed: int, length: int | None
) -> Iterator[tuple[str, bytes, str, dict[str, Any]]]:
    from . import get_dataset

    dataset = get_dataset(name, split=split, size=size, seed=seed, length=length)
    for index in range(len(dataset)):  # type: ignore[arg-type]
        item = dataset[index]
        yield (
            "png",
            _png(item["image"]),
            item["caption"],
            {"dataset": name, "split": split, "seed": seed, "index": index, "attributes": item["attributes"]},
        )


def _folder_items(root: Path, size: int | None, length: int | None) -> Iterator[tuple[str, bytes, str, dict[str, Any]]]:
    from ..storage.imageio import pil_to_tensor
    from .folder import load_image
    from .folder_source import scan_captioned

    pairs, missing, empty = scan_captioned(root)
    if not pairs:
        raise DataError(
            f"no captioned images in {root} ({missing} without a .txt caption, {empty} with an empty one); expected "
            "KEY.jpg + KEY.txt pairs"
        )
    for path, caption in pairs[: length or None]:
        info = {"path": path.relative_to(root).as_posix()}
        if size is None:
            ext = path.suffix.lower().lstrip(".")
            yield ("jpg" if ext == "jpeg" else ext), path.read_bytes(), caption, info
        else:
            yield "png", _png(pil_to_tensor(load_image(path, size))[0]), caption, info


def write_shards(
    src: str | os.PathLike,
    out: str | os.PathLike,
    *,
    shard_size: int = 1000,
    size: int | None = None,
    split: str = "train",
    seed: int = 0,
    length: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Write ``src`` (``shapes``, ``emoji`` or a caption folder) as WebDataset shards in ``out``.

    Args:
        src: the data; for a folder, its ``split`` subfolder when present.
        out: a folder holding no ``.tar`` files yet (created if missing).
        shard_size: samples per shard.
        size: image side; built-in sets default to 64; a folder's images are copied
            byte for byte unless ``size`` is given (then centre-cropped, resized, PNG).
        split, seed, length: as for :func:`unclip.data.get_dataset`.
    Returns:
        the summary written to ``out/shards.json``: shards, samples, source and settings.
    """
    wds = require_webdataset()
    if shard_size < 1:
        raise DataError(f"--shard-size must be >= 1, got {shard_size}")
    out = Path(out)
    if out.is_dir() and any(p.name.endswith(".tar") and not p.name.startswith(".") for p in out.iterdir()):
        raise DataError(f"{out} already holds .tar shards; choose an empty or new --out folder")
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob(f"{PARTIAL_PREFIX}*.tar"):
        stale.unlink()
    text = str(src)
    if text in ("shapes", "emoji"):
        items = _builtin_items(text, split, size or 64, seed, length)
    else:
        root = Path(text).expanduser()
        if not root.is_dir():
            raise DataError(
                f"unknown source {text!r}: give 'shapes', 'emoji' or a folder of images with same-named .txt "
                f"captions ({', '.join(IMAGE_EXTENSIONS)})"
            )
        sub = root / split
        items = _folder_items(sub if sub.is_dir() else root, size, length)

    written: list[str] = []

    def finish(partial: str) -> None:
        final = Path(partial).with_name(Path(partial).name[len(PARTIAL_PREFIX) :])
        os.replace(partial, final)
        written.append(final.name)

    count = 0
    writer = wds.ShardWriter(str(out / f"{PARTIAL_PREFIX}%05d.tar"), maxcount=shard_size, post=finish, verbose=0)
    try:
        for ext, data, caption, info in tqdm(items, desc="shards", unit="sample", disable=not progress):
            key = f"{count:09d}"
            writer.write({"__key__": key, ext: data, "txt": caption, "json": {"key": key, "caption": caption, **info}})
            count += 1
    except BaseException:
        writer.post = None  # the shard being written is incomplete: never rename it into place
        writer.close()
        for partial in out.glob(f"{PARTIAL_PREFIX}*.tar"):
            partial.unlink()
        raise
    writer.close()
    summary = {
        "source": text,
        "split": split,
        "seed": seed,
        "size": size,
        "shard_size": shard_size,
        "samples": count,
        "shards": sorted(written),
    }
    atomic_write_json(out / "shards.json", summary)
    return summary
