"""A static HTML gallery: sections of captioned images written as PNGs plus ``index.html``."""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from ..storage.checkpoint import atomic_write_bytes


@dataclass
class GallerySection:
    """One titled row group of the gallery; each item is (image, caption)."""

    title: str
    description: str = ""
    items: list[tuple[Image.Image, str]] = field(default_factory=list)


def write_gallery(
    out_dir: str | Path, title: str, sections: list[GallerySection], footer: str = "", display_size: int = 128
) -> Path:
    """Write every image as ``images/SS_III.png`` and an ``index.html`` showing them; returns out_dir."""
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
        "<style>body{font-family:sans-serif;margin:2em;background:#fafafa}figure{display:inline-block;margin:4px;text-align:center}"
        f"img{{width:{display_size}px;height:auto;image-rendering:pixelated;border:1px solid "
        f"#ccc}}figcaption{{font-size:11px;max-width:{display_size}px}}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    for s_index, section in enumerate(sections):
        parts.append(f"<h2>{html.escape(section.title)}</h2>")
        if section.description:
            parts.append(f"<p>{html.escape(section.description)}</p>")
        for i_index, (image, caption) in enumerate(section.items):
            name = f"images/{s_index:02d}_{i_index:03d}.png"
            tmp = out / (name + ".tmp")
            image.save(tmp, format="PNG")
            tmp.replace(out / name)
            parts.append(
                f"<figure><img src='{name}' "
                f"alt='{html.escape(caption)}'><figcaption>{html.escape(caption)}</figcaption></figure>"
            )
    if footer:
        parts.append(f"<hr><p>{html.escape(footer)}</p>")
    parts.append("</body></html>")
    atomic_write_bytes(out / "index.html", "\n".join(parts).encode())
    return out
