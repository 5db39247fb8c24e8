"""A folder of images with same-named ``.txt`` captions (the img2dataset layout).

::

    root/00000/000000001.jpg    root/00000/000000001.txt   <- caption, UTF-8
    root/00000/000000002.png    root/00000/000000002.txt
    ...

The folder is searched recursively for ``.png``, ``.jpg``, ``.jpeg``, ``.webp`` and ``.bmp``
files (any letter case). An image without a non-empty caption file beside it is left out
when the dataset is built. An image that cannot be decoded is found only when it is read:
it is then counted in :attr:`CaptionFolderDataset.skipped`, logged once, and the next
readable image is returned instead, so one bad file never stops a training run.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch.utils.data import Dataset

from ..errors import DataError
from ..storage.imageio import center_crop_resize, pil_to_tensor
from .walk import walk_images

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
LAYOUT_HINT = (
    "expected images (.png, .jpg, .jpeg, .webp, .bmp) each with a caption file of the same "
    "name ending in .txt beside it, e.g. 0001.jpg + 0001.txt, in the folder or its subfolders"
)


def read_caption(path: Path) -> str | None:
    """The stripped caption in ``path``, or None if the file is missing, unreadable or empty."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return None
    return text or None


def scan_folder(root: str | os.PathLike) -> tuple[list[tuple[Path, str]], int]:
    """Find captioned images under ``root``, sorted by path.

    Returns ``(pairs, uncaptioned)``: ``(image path, caption)`` pairs and how many images
    had no usable caption.
    """
    root = Path(root)
    pairs: list[tuple[Path, str]] = []
    uncaptioned = 0
    for image in walk_images(root, IMAGE_EXTENSIONS):
        caption = read_caption(image.with_suffix(".txt"))
        if caption is None:
            uncaptioned += 1
        else:
            pairs.append((image, caption))
    return pairs, uncaptioned


def load_image(path: str | os.PathLike, size: int) -> Image.Image:
    """Open ``path`` fully (so corrupt data fails here) and centre-crop-resize it to ``size``."""
    with Image.open(path) as im:
        im.load()
        return center_crop_resize(im, size)


class CaptionFolderDataset(Dataset):
    """Captioned images from a folder, centre-cropped to squares of side ``size``.

    ``ds[i]`` is ``{"image": FloatTensor (3, size, size) in [-1, 1], "caption": str,
    "attributes": {"path": str}}``. Attributes: ``skipped`` (unreadable images met so far),
    ``uncaptioned`` (images left out for want of a caption).
    """

    name = "folder"

    def __init__(self, root: str | os.PathLike, size: int = 64) -> None:
        self.root = Path(root)
        if not isinstance(size, int) or size < 1:
            raise DataError(f"image size must be a positive int, got {size!r}")
        self.size = size
        if not self.root.is_dir():
            raise DataError(f"image folder {self.root} does not exist or is not a folder; {LAYOUT_HINT}")
        self.pairs, self.uncaptioned = scan_folder(self.root)
        if not self.pairs:
            found = f" ({self.uncaptioned} images had no caption file)" if self.uncaptioned else ""
            raise DataError(f"no captioned images found in {self.root}{found}; {LAYOUT_HINT}")
        if self.uncaptioned:
            logger.warning("%s: left out %d images without a .txt caption", self.root, self.uncaptioned)
        self.skipped = 0
        self._bad: set[int] = set()

    def __len__(self) -> int:
        return len(self.pairs)

    def read(self, index: int) -> dict[str, Any] | tuple[str, str]:
        """Item ``index`` itself, or ``(path, reason)`` when its image cannot be read.

        Unlike ``ds[index]``, which stands in the next readable image, this never repeats
        an image: :func:`unclip.data.embeddings.render_training_set` counts and logs (in the
        main process, once per file) what it skips.
        """
        path, caption = self.pairs[range(len(self.pairs))[index]]
        try:
            image = load_image(path, self.size)
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
            reason = "too_large" if isinstance(exc, Image.DecompressionBombError) else "undecodable_image"
            return str(path), f"{reason}: {exc}"
        return {"image": pil_to_tensor(image)[0], "caption": caption, "attributes": {"path": str(path)}}

    def __getitem__(self, index: int) -> dict[str, Any]:
        n = len(self.pairs)
        start = range(n)[index]  # IndexError when out of range; negatives wrap
        for step in range(n):
            i = (start + step) % n
            if i in self._bad:
                continue
            path, caption = self.pairs[i]
            try:
                image = load_image(path, self.size)
            except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
                self._bad.add(i)
                self.skipped += 1
                logger.warning("skipping unreadable image %s (%s)", path, exc)
                continue
            tensor: torch.Tensor = pil_to_tensor(image)[0]
            return {"image": tensor, "caption": caption, "attributes": {"path": str(path)}}
        raise DataError(f"none of the {n} images in {self.root} could be read; check the files")
