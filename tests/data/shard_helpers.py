"""Build test shards and folders by hand (tarfile as a writer), including broken ones."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

from PIL import Image


def png_bytes(color=(255, 0, 0), size=(12, 10)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


def make_tar(path: Path, members: list[tuple[str, bytes]]) -> Path:
    """A plain tar holding ``members`` (name, data) in order."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def good_members(keys: list[str], color=(0, 0, 255)) -> list[tuple[str, bytes]]:
    members = []
    for key in keys:
        members += [(f"{key}.png", png_bytes(color)), (f"{key}.txt", f"caption {key}".encode()), (f"{key}.json", b"{}")]
    return members


def make_good_shards(root: Path, n_shards: int, per_shard: int) -> list[str]:
    """``n_shards`` shards of ``per_shard`` good samples keyed ``SSPP``; returns all keys."""
    keys = []
    for s in range(n_shards):
        shard_keys = [f"{s:02d}{i:02d}" for i in range(per_shard)]
        make_tar(root / f"{s:05d}.tar", good_members(shard_keys))
        keys += shard_keys
    return keys
