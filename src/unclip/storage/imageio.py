"""Conversions between PIL images and tensors, grids, and the on-disk image-set layout.

The library works on float tensors in [-1, 1] of shape (B, 3, H, W); PIL appears only at
the edges (reading user images, writing results). Every command that writes images writes
the same layout (DESIGN.md section 4): ``000.png``, ``001.png``, ..., a ``grid.png`` of all
of them, and a ``manifest.json`` whose ``images`` list has one entry per file. All of that
goes through :func:`write_image_set`, and every file is written to a temporary name and
renamed into place, so an interrupted run never leaves a truncated PNG behind.
"""

from __future__ import annotations

import io
import logging
import math
import os
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch
from PIL import Image, ImageOps

from ..errors import InputError, NumericalError
from .checkpoint import atomic_write_bytes, atomic_write_json
from .outputs import replace_dir

logger = logging.getLogger(__name__)

__all__ = [
    "tensor_to_pil",
    "pil_to_tensor",
    "to_rgb",
    "center_crop_resize",
    "make_grid",
    "save_png",
    "write_image_set",
]


def tensor_to_pil(images: torch.Tensor) -> list[Image.Image]:
    """Convert images in [-1, 1] to 8-bit RGB PIL images.

    Args:
        images: float tensor (B, 3, H, W) or a single (3, H, W), values in [-1, 1]
            (values outside are clipped). Any device or dtype.
    Returns:
        A list of B RGB images of size (W, H). Values are rounded to the nearest level, so
        ``tensor_to_pil(pil_to_tensor(im))`` gives back ``im`` exactly.
    """
    if not isinstance(images, torch.Tensor):
        raise InputError(f"tensor_to_pil expects a torch.Tensor, got {type(images).__name__}")
    if images.dim() == 3:
        images = images.unsqueeze(0)
    if images.dim() != 4 or images.shape[1] != 3:
        raise InputError(f"tensor_to_pil expects images of shape (B, 3, H, W), got {tuple(images.shape)}")
    x = images.detach().to("cpu", torch.float32)
    if not bool(torch.isfinite(x).all()):
        bad = int((~torch.isfinite(x)).sum())
        raise NumericalError(
            f"the images hold {bad} non-finite value(s) (NaN or inf), which would be written as black pixels; "
            "the model's weights may be damaged or a setting is extreme: check the model with `unclip eval`"
        )
    x = ((x.clamp(-1.0, 1.0) + 1.0) * 127.5).round().to(torch.uint8)
    arr = x.permute(0, 2, 3, 1).contiguous().numpy()
    return [Image.fromarray(a, mode="RGB") for a in arr]


def to_rgb(image: Image.Image, background: tuple[int, int, int] = (255, 255, 255)) -> Image.Image:
    """Return ``image`` as RGB; transparent images are composited onto ``background``.

    EXIF orientation is applied, so photos appear the right way up.
    """
    image = ImageOps.exif_transpose(image)
    if image.mode.startswith("I") or image.mode == "F":
        image = _high_depth_to_l(image)
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, background + (255,))
        canvas.alpha_composite(rgba)
        return canvas.convert("RGB")
    if image.mode != "RGB":
        return image.convert("RGB")
    return image


def _high_depth_to_l(image: Image.Image) -> Image.Image:
    """A 16-bit ("I;16*"), 32-bit integer ("I") or float ("F") grey image as 8-bit "L", by scaling.

    PIL's own ``convert`` clips these to 0..255, which turns a 16-bit PNG almost entirely
    white. 16-bit data is scaled by 255/65535; "I" images are taken as 16-bit when any value
    exceeds 255 (PNG and TIFF decode 16-bit grey to "I"), else as 8-bit; "F" images as 0..1
    when every value is at most 1, else as 0..255.
    """
    arr = np.asarray(image).astype(np.float64)
    if image.mode.startswith("I;16") or (image.mode == "I" and arr.size and arr.max() > 255):
        arr = arr * (255.0 / 65535.0)
    elif image.mode == "F" and arr.size and np.nanmax(np.abs(arr)) <= 1.0:
        arr = arr * 255.0
    arr = np.nan_to_num(arr, nan=0.0, posinf=255.0, neginf=0.0)
    return Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), mode="L")


def center_crop_resize(image: Image.Image, size: int) -> Image.Image:
    """Centre-crop ``image`` to a square and resize it to ``size`` x ``size`` (RGB).

    Downscaling uses Lanczos (with PIL's ``reducing_gap`` shortcut for large reductions),
    upscaling bicubic.
    """
    if not isinstance(size, int) or size < 1:
        raise InputError(f"image size must be a positive int, got {size!r}")
    image = to_rgb(image)
    w, h = image.size
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    image = image.crop((left, top, left + side, top + side))
    if side == size:
        return image
    if side > size:
        return image.resize((size, size), Image.LANCZOS, reducing_gap=3.0)
    return image.resize((size, size), Image.BICUBIC)


def pil_to_tensor(images: Image.Image | Sequence[Image.Image], size: int | None = None) -> torch.Tensor:
    """Convert PIL image(s) to a float tensor (B, 3, H, W) in [-1, 1].

    Args:
        images: one PIL image or a sequence of them. Any mode; converted to RGB.
        size: if given, each image is centre-cropped to a square and resized to
            ``size`` x ``size`` (see :func:`center_crop_resize`). If None, the images must
            already share one size.
    Returns:
        float32 tensor (B, 3, H, W) with ``value / 127.5 - 1``.
    """
    if isinstance(images, Image.Image):
        images = [images]
    images = list(images)
    if not images:
        raise InputError("pil_to_tensor got an empty list of images")
    for im in images:
        if not isinstance(im, Image.Image):
            raise InputError(f"pil_to_tensor expects PIL images, got {type(im).__name__}")
    if size is not None:
        images = [center_crop_resize(im, size) for im in images]
    else:
        images = [to_rgb(im) for im in images]
    sizes = {im.size for im in images}
    if len(sizes) != 1:
        raise InputError(f"pil_to_tensor got images of different sizes {sorted(sizes)}; pass size= to resize them")
    arr = np.stack([np.asarray(im, dtype=np.uint8) for im in images])  # (B, H, W, 3)
    x = torch.from_numpy(arr).permute(0, 3, 1, 2).to(torch.float32)
    return x / 127.5 - 1.0


def make_grid(
    images: Sequence[Image.Image],
    ncols: int | None = None,
    pad: int = 2,
    background: tuple[int, int, int] = (255, 255, 255),
) -> Image.Image:
    """Tile images into one picture, row by row.

    Args:
        images: PIL images; they may differ in size (each is centred in a cell as large as
            the largest image).
        ncols: number of columns; default ``ceil(sqrt(len(images)))``.
        pad: pixels of ``background`` between cells and around the border.
    Returns:
        An RGB image.
    """
    images = list(images)
    if not images:
        raise InputError("make_grid needs at least one image")
    if pad < 0:
        raise InputError(f"make_grid pad must be >= 0, got {pad}")
    n = len(images)
    if ncols is None:
        ncols = int(math.ceil(math.sqrt(n)))
    if ncols < 1:
        raise InputError(f"make_grid ncols must be >= 1, got {ncols}")
    ncols = min(ncols, n)
    nrows = int(math.ceil(n / ncols))
    cw = max(im.size[0] for im in images)
    ch = max(im.size[1] for im in images)
    grid = Image.new("RGB", (pad + ncols * (cw + pad), pad + nrows * (ch + pad)), background)
    for k, im in enumerate(images):
        r, c = divmod(k, ncols)
        x = pad + c * (cw + pad) + (cw - im.size[0]) // 2
        y = pad + r * (ch + pad) + (ch - im.size[1]) // 2
        grid.paste(to_rgb(im), (x, y))
    return grid


def save_png(image: Image.Image, path: str | os.PathLike) -> Path:
    """Save ``image`` as PNG at ``path`` atomically (temporary file + rename)."""
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    path = Path(path)
    atomic_write_bytes(path, buf.getvalue())
    return path


def _file_names(n: int) -> list[str]:
    width = max(3, len(str(max(n - 1, 0))))
    return [f"{i:0{width}d}.png" for i in range(n)]


def write_image_set(
    out_dir: str | os.PathLike,
    images: Sequence[Image.Image],
    entries: Iterable[dict[str, Any]],
    meta: dict[str, Any] | None = None,
    ncols: int | None = None,
    inputs: Iterable[str | os.PathLike] = (),
) -> Path:
    """Write ``NNN.png`` for each image, ``grid.png`` and ``manifest.json`` into ``out_dir``.

    ``out_dir`` must be new, empty or an earlier output set, which is replaced whole (see
    :mod:`unclip.storage.outputs`); ``inputs`` (files the command read) may not lie inside it.

    This is the one writer for every command that produces images (DESIGN.md section 4).

    Args:
        out_dir: directory, created if missing.
        images: PIL images, one per entry.
        entries: one JSON-able dict per image (e.g. ``{"prompt": ..., "seed": ...}``); each
            is copied with ``"file"`` (the PNG's name) added in front.
        meta: JSON-able dict of run-wide facts (command, model, settings); written at the
            top level of the manifest next to ``images``.
        ncols: columns of the grid (default: about square).
    Returns:
        ``out_dir`` as a Path.
    """
    images = list(images)
    entries = list(entries)
    if not images:
        raise InputError("write_image_set got no images to write")
    if len(entries) != len(images):
        raise InputError(
            f"write_image_set got {len(images)} images but {len(entries)} manifest entries; they must match"
        )
    meta = dict(meta or {})
    if "images" in meta:
        raise InputError("write_image_set meta must not contain the key 'images' (it is the list of files)")
    names = _file_names(len(images))
    manifest_images = [{"file": n, **{k: v for k, v in e.items() if k != "file"}} for n, e in zip(names, entries)]

    def write(folder: Path) -> None:
        for name, im in zip(names, images):
            save_png(im, folder / name)
        save_png(make_grid(images, ncols=ncols), folder / "grid.png")
        atomic_write_json(folder / "manifest.json", {**meta, "images": manifest_images})  # last: the set is complete

    out = replace_dir(out_dir, write, inputs)
    logger.info("wrote %d images, grid.png and manifest.json to %s", len(images), out)
    return Path(out_dir)
