"""WebDataset tar shards in the img2dataset layout, read with the ``webdataset`` package.

A shard is a tar of samples grouped by key: ``KEY.jpg`` (or ``.jpeg``/``.png``/``.webp``/
``.bmp``), ``KEY.txt`` (the caption, UTF-8) and optionally ``KEY.json``. Shards are named by
a local path, a folder of ``.tar`` files, a brace pattern (``shards/{00000..00099}.tar``), a
glob, or a list; :func:`resolve_shards` expands them and fails before training when nothing
(or not everything) matches.

The pipeline per epoch: shard list (shuffled with the seed and epoch, identically in every
process) -> ``wds.split_by_node`` (torch.distributed ranks) -> ``wds.split_by_worker``
(DataLoader workers) -> ``wds.tarfile_samples`` per shard -> ``wds.shuffle`` buffer ->
decode, resize and centre-crop. A shard that turns out truncated or corrupt ends there
with one warning naming it: its samples before the damaged one are kept (the sample being
read when the error came, which webdataset has not yet closed, is lost with the rest of
the shard, since it may be incomplete); samples that cannot be used
are skipped and counted (:data:`~unclip.data.sources.SKIP_REASONS`).
"""

from __future__ import annotations

import glob
import io
import os
import random
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from PIL import Image

from ..errors import DataError
from ..storage.imageio import center_crop_resize, pil_to_tensor
from .sources import ImageTextSource, Sample, worker_slot

#: member extensions read as the image, in order of preference
IMAGE_KEYS: tuple[str, ...] = ("jpg", "jpeg", "png", "webp", "bmp")
CAPTION_KEY = "txt"
SHARD_HINT = (
    "give a .tar file, a folder of .tar files, a brace pattern like 'shards/{00000..00009}.tar', "
    "or a glob like 'shards/*.tar'"
)


def require_webdataset() -> Any:
    """The ``webdataset`` module, imported on first use so that training on built-in or folder data
    never needs it; DataError names the install command when it is missing."""
    try:
        import webdataset
    except ImportError as exc:
        raise DataError(
            "reading or writing WebDataset shards needs the `webdataset` package, which is not installed; "
            "install it with `pip install webdataset` (or the project's extra: `pip install -e .[data]`)"
        ) from exc
    return webdataset


def _brace_expand(text: str) -> list[str]:
    require_webdataset()  # braceexpand comes with it
    import braceexpand

    return list(braceexpand.braceexpand(text))


def resolve_shards(spec: str | os.PathLike | Sequence[str | os.PathLike]) -> list[str]:
    """Expand a shard spec into the list of shard paths, all of which exist.

    Raises:
        DataError: the spec matches no file, or names files that do not exist (the first
            few are listed), so a typo is caught before training starts.
    """
    if isinstance(spec, (list, tuple)):
        paths = [str(p) for p in spec]
        what = f"the list of {len(paths)} shards"
    else:
        text = os.path.expanduser(str(spec))
        what = repr(str(spec))
        if "{" in text and "}" in text:
            paths = _brace_expand(text)
        elif any(c in text for c in "*?["):
            paths = sorted(glob.glob(text))
        elif os.path.isdir(text):
            paths = sorted(
                str(p)
                for p in Path(text).iterdir()
                if p.name.endswith((".tar", ".tar.gz", ".tgz")) and not p.name.startswith(".")
            )
            if not paths:
                raise DataError(f"the folder {text} holds no .tar shards; {SHARD_HINT}")
        else:
            paths = [text]
    if not paths:
        raise DataError(f"shard pattern {what} matches no file; {SHARD_HINT}")
    missing = [p for p in paths if not os.path.isfile(p)]
    if len(missing) == len(paths):
        raise DataError(
            f"shard pattern {what} matches no file (looked for {paths[0]}{' ...' if len(paths) > 1 else ''}); "
            f"{SHARD_HINT}"
        )
    if missing:
        shown = ", ".join(missing[:3]) + (" ..." if len(missing) > 3 else "")
        raise DataError(
            f"{len(missing)} of the {len(paths)} shards of {what} do not exist ({shown}); fix the pattern or the files"
        )
    return paths


def decode_image(data: bytes, size: int) -> Any:
    """Decode image bytes fully and centre-crop-resize to ``size``; raises on bad data."""
    with Image.open(io.BytesIO(data)) as im:
        im.load()
        return center_crop_resize(im, size)


class WebDatasetSource(ImageTextSource):
    """Samples of WebDataset shards (see the module docstring), at ``size`` x ``size`` pixels.

    Args:
        shards: a spec accepted by :func:`resolve_shards`.
        size: image side after resize and centre crop.
        shuffle: shuffle the shard order per epoch and samples through a buffer.
        seed: seeds both shuffles (combined with the epoch and, for the buffer, the process's slot).
        repeat: loop over epochs forever.
        shuffle_buffer: samples held by the shuffle buffer (memory grows with it).
    """

    name = "webdataset"

    def __init__(
        self,
        shards: str | os.PathLike | Sequence[str],
        size: int,
        *,
        shuffle: bool = True,
        seed: int = 0,
        repeat: bool = False,
        shuffle_buffer: int = 1000,
    ) -> None:
        super().__init__(size, shuffle=shuffle, seed=seed, repeat=repeat)
        self.spec = shards if isinstance(shards, (list, tuple)) else str(shards)
        self.urls = resolve_shards(shards)
        self.shuffle_buffer = max(1, int(shuffle_buffer))

    def _shard_samples(self, shards: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        """Raw samples of each shard; a reading error ends that shard with one counted warning."""
        tarfile_samples = require_webdataset().tarfile_samples  # outside the try: a missing package is no bad shard
        for shard in shards:
            url = shard["url"]
            try:
                yield from tarfile_samples([{"url": url}])
            except Exception as exc:  # noqa: BLE001 - any reading failure means a bad shard, never a crash
                self.skips.add(
                    "corrupt_shard",
                    f"{url}: truncated or corrupt ({type(exc).__name__}: {exc.args[0] if exc.args else ''}); "
                    "skipped the rest of this shard",
                )

    def _decode(self, raw: Iterable[dict[str, Any]]) -> Iterator[Sample]:
        for sample in raw:
            key, url = sample.get("__key__", "?"), sample.get("__url__", "?")
            where = f"{key} in {url}"
            image_key = next((k for k in IMAGE_KEYS if k in sample), None)
            if image_key is None:
                self.skips.add("no_image", where)
                continue
            if CAPTION_KEY not in sample:
                self.skips.add("no_caption", where)
                continue
            caption = sample[CAPTION_KEY].decode("utf-8", errors="replace").strip()
            if not caption:
                self.skips.add("empty_caption", where)
                continue
            try:
                image = decode_image(sample[image_key], self.size)
            except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
                self.skips.add("undecodable_image", f"{where} ({exc})")
                continue
            yield Sample(pil_to_tensor(image)[0], caption, str(key))

    def _epoch(self, epoch: int) -> Iterator[Sample]:
        wds = require_webdataset()
        slot, _ = worker_slot()
        stages: list[Any] = [
            wds.SimpleShardList(self.urls, seed=f"{self.seed}:{epoch}" if self.shuffle else None),
            wds.split_by_node,
            wds.split_by_worker,
            self._shard_samples,
        ]
        if self.shuffle:
            buffer = self.shuffle_buffer
            stages.append(wds.shuffle(buffer, min(buffer, 100), rng=random.Random(f"{self.seed}:{epoch}:{slot}")))
        stages.append(self._decode)
        yield from wds.DataPipeline(*stages)

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "shards": len(self.urls),
            "spec": self.spec if isinstance(self.spec, str) else f"{len(self.spec)} paths",
        }
