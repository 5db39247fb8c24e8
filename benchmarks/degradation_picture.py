"""Draw what each upsampler-training corruption does to an image: docs/degradations.png.

Rows: a ``shapes`` image and a photo (matplotlib's bundled sample ``grace_hopper.jpg``),
both at 128 px. Columns: the original; the first stage's corruption (antialiased bicubic
down to 32 px, then Gaussian blur); each step of the BSR pipeline on its own (random
isotropic/anisotropic blur, random-interpolation resize, Gaussian noise, JPEG), each
shown at 128 px; and three seeds of the whole BSR pipeline (random order) down to 32 px.
Low-resolution results are enlarged with nearest-neighbour so their pixels stay visible.

    PYTHONPATH=src python benchmarks/degradation_picture.py [--out docs/degradations.png]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from unclip.data.shapes import render_batch  # noqa: E402
from unclip.storage.imageio import tensor_to_pil  # noqa: E402
from unclip.upsampler import degradations as D  # noqa: E402

SIDE, LOW = 128, 32


def photo(side: int) -> torch.Tensor | None:
    try:
        from matplotlib import cbook

        with cbook.get_sample_data("grace_hopper.jpg") as f:
            im = Image.open(f).convert("RGB")
    except Exception:  # matplotlib or its sample data absent: draw the shapes row only
        return None
    s = min(im.size)
    im = im.crop(((im.width - s) // 2, (im.height - s) // 2, (im.width + s) // 2, (im.height + s) // 2)).resize((side, side), Image.LANCZOS)
    return torch.from_numpy(np.array(im)).permute(2, 0, 1).float().div(127.5).sub(1)[None]


def columns(x: torch.Tensor) -> list[tuple[str, torch.Tensor]]:
    g = lambda s: torch.Generator().manual_seed(s)  # noqa: E731
    cols = [("original 128px", x), ("stage 1: blur ->32px", D.blur_degradation(x, LOW, g(0), sigma_range=(0.8, 0.8)))]
    cols += [
        ("BSR blur (aniso.)", D.random_blur(x, g(1), sigma_range=(1.0, 2.5), anisotropic_prob=1.0)),
        ("BSR resize (nearest)", D.resize(D.resize(x, 48, "nearest"), SIDE, "nearest")),
        ("BSR noise", D.gaussian_noise(x, g(2), sigma_range=(20 / 255, 20 / 255), gray_prob=0.0)),
        ("BSR JPEG q=30", D.jpeg_compress(x, g(3), quality_range=(30, 30))),
    ]
    cols += [(f"BSR ->32px, seed {s}", D.bsr_degradation(x, LOW, g(10 + s))) for s in range(3)]
    return cols


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "docs" / "degradations.png"))
    args = ap.parse_args()
    shapes, _, _ = render_batch("test", 3, 1, SIDE, 0)
    rows = [("shapes", shapes)] + ([("photo", p)] if (p := photo(SIDE)) is not None else [])
    label_h, pad = 28, 4
    table = [columns(x) for _, x in rows]
    ncol = len(table[0])
    canvas = Image.new("RGB", (ncol * (SIDE + pad) + pad, len(rows) * (SIDE + pad) + label_h + pad), "white")
    draw = ImageDraw.Draw(canvas)
    for c, (name, _) in enumerate(table[0]):
        draw.text((pad + c * (SIDE + pad), 4), name, fill="black")
    for r, cols in enumerate(table):
        for c, (_, img) in enumerate(cols):
            pil = tensor_to_pil(img.clamp(-1, 1))[0].resize((SIDE, SIDE), Image.NEAREST)
            canvas.paste(pil, (pad + c * (SIDE + pad), label_h + r * (SIDE + pad)))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(out)
    print(f"wrote {out} ({canvas.width}x{canvas.height})")


if __name__ == "__main__":
    main()
