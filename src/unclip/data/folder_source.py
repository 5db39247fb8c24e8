"""A caption folder (``KEY.jpg`` + ``KEY.txt``, as img2dataset writes without tar) as a stream.

Unlike :class:`~unclip.data.folder.CaptionFolderDataset`, which stands in the next readable
image for an unreadable one, this source skips and counts: images without a ``.txt`` file
(``no_caption``) and with an empty one (``empty_caption``) are counted once when the folder
is scanned; undecodable images (``undecodable_image``) each time they are met.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from PIL import Image

from ..errors import DataError
from ..storage.imageio import pil_to_tensor
from .folder import IMAGE_EXTENSIONS, LAYOUT_HINT, load_image
from .sources import ImageTextSource, Sample
from .walk import walk_images


def scan_captioned(root: Path) -> tuple[list[tuple[Path, str]], int, int]:
    """``(pairs, no_caption, empty_caption)``: captioned images under ``root`` sorted by path,
    and the counts of images left out."""
    pairs: list[tuple[Path, str]] = []
    missing = empty = 0
    for image in walk_images(root, IMAGE_EXTENSIONS):
        try:
            caption = image.with_suffix(".txt").read_text(encoding="utf-8", errors="replace").strip()
        except OSError:
            missing += 1
            continue
        if caption:
            pairs.append((image, caption))
        else:
            empty += 1
    return pairs, missing, empty


class FolderSource(ImageTextSource):
    """Captioned images of a folder (searched recursively), keyed by their path relative to it without the extension."""

    name = "folder"

    def __init__(
        self,
        root: str | os.PathLike,
        size: int,
        *,
        shuffle: bool = True,
        seed: int = 0,
        repeat: bool = False,
        limit: int | None = None,
    ) -> None:
        super().__init__(size, shuffle=shuffle, seed=seed, repeat=repeat)
        self.root = Path(root)
        if not self.root.is_dir():
            raise DataError(f"image folder {self.root} does not exist or is not a folder; {LAYOUT_HINT}")
        self.pairs, missing, empty = scan_captioned(self.root)
        if missing:
            self.skips.add("no_caption", f"{missing} image(s) in {self.root} without a .txt caption", n=missing)
        if empty:
            self.skips.add("empty_caption", f"{empty} image(s) in {self.root} with an empty .txt caption", n=empty)
        if limit is not None:
            self.pairs = self.pairs[: int(limit)]
        if not self.pairs:
            raise DataError(
                f"no captioned images found in {self.root} ({missing} without a caption file, {empty} with an empty "
                f"one); {LAYOUT_HINT}"
            )

    def __len__(self) -> int:
        return len(self.pairs)

    def key(self, path: Path) -> str:
        """``sub/dir/0001`` for ``root/sub/dir/0001.jpg``."""
        return path.relative_to(self.root).with_suffix("").as_posix()

    def _epoch(self, epoch: int) -> Iterator[Sample]:
        for index in self._order(len(self.pairs), epoch):
            path, caption = self.pairs[index]
            try:
                image = load_image(path, self.size)
            except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
                self.skips.add("undecodable_image", f"{path} ({exc})")
                continue
            yield Sample(pil_to_tensor(image)[0], caption, self.key(path))

    def describe(self) -> dict:
        return {**super().describe(), "root": str(self.root), "length": len(self.pairs)}
