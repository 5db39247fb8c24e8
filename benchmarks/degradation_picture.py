"""Draw what each upsampler-training corruption does to an image: docs/degradations.png.

Rows: a ``shapes`` image and a photo (matplotlib's bundled sample ``grace_hopper.jpg``),
both at 128 px. Columns: the original; the first stage's corruption (antialiased bicubic
down to 32 px, then Gaussian blur); each step of the BSR model (BSRGAN, see
``unclip.upsampler.bsr``) on its own, at fixed, visible settings: an isotropic and an
anisotropic blur, the two downsampling kinds (a nearest resize, and the shifted Gaussian
blur followed by strided nearest sampling), the three kinds of Gaussian noise
(channel-independent, grey, correlated across channels), JPEG at quality 30, and
camera-sensor noise (reverse-ISP round trip at the highest shot-noise level); then three
seeds of the whole BSR pipeline (a random plan per image) down to 32 px, with the order of
their steps written under them, and three of its light variant (``BSR_LIGHT``).
Low-resolution results are enlarged with nearest-neighbour so their pixels stay visible.

    PYTHONPATH=src python benchmarks/degradation_picture.py [--out docs/degradations.png]
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from unclip.data.shapes import render_batch  # noqa: E402
from unclip.storage.imageio import tensor_to_pil  # noqa: E402
from unclip.upsampler import bsr as B  # noqa: E402
from unclip.upsampler import camera as C  # noqa: E402
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
    im = im.crop(((im.width - s) // 2, (im.height - s) // 2, (im.width + s) // 2, (im.height + s) // 2)).resize(
        (side, side), Image.LANCZOS
    )
    return torch.from_numpy(np.array(im)).permute(2, 0, 1).float().div(127.5).sub(1)[None]


ABBREV = {
    "downsample1": "d1",
    "blur": "b",
    "downsample2": "d2",
    "downsample3": "d3",
    "noise": "n",
    "jpeg": "j",
    "camera": "cam",
    "final_jpeg": "J",
}


def columns(x: torch.Tensor) -> list[tuple[str, torch.Tensor, str]]:
    """(column title, image, caption under the image) for one row."""
    g = lambda s: torch.Generator().manual_seed(s)  # noqa: E731
    one = lambda step: B.apply_plan(x, [step], SIDE, g(0))  # noqa: E731
    draws = g(6)
    correlated = next(p for p in (B.draw_noise(draws, B.BSRConfig()) for _ in range(100)) if p["kind"] == "correlated")
    cam = C.draw_camera(g(7))
    cam.shot, cam.read = 0.012, math.exp(2.18 * math.log(0.012) + 1.20)
    cols = [
        ("original 128px", x, ""),
        ("stage 1: blur ->32px", D.blur_degradation(x, LOW, g(0), sigma_range=(0.8, 0.8)), ""),
    ]
    cols += [
        (
            "blur, isotropic",
            one(B.Step("blur", {"kind": "iso", "size": 15, "sigma_x": 2.5, "sigma_y": 2.5, "theta": 0.0})),
            "",
        ),
        (
            "blur, anisotropic",
            one(B.Step("blur", {"kind": "aniso", "size": 21, "sigma_x": 3.5, "sigma_y": 0.6, "theta": 0.7})),
            "",
        ),
        ("down: nearest ->32", D.resize(x, LOW, "nearest"), ""),
        ("down: blur+stride ->32", B.blur_nearest_downsample(x, 1.2, 4), ""),
        ("noise, colour", one(B.Step("noise", {"kind": "colour", "sigma": 20 / 255})), "sigma 20/255"),
        ("noise, grey", one(B.Step("noise", {"kind": "gray", "sigma": 20 / 255})), "sigma 20/255"),
        ("noise, correlated", one(B.Step("noise", correlated)), "L = 25/255"),
        ("JPEG q=30", one(B.Step("jpeg", {"quality": 30})), ""),
        ("camera noise", one(B.Step("camera", {"camera": cam})), "shot 0.012"),
    ]
    for s in range(3):
        plan = B.draw_plan(SIDE / LOW, g(10 + s))
        order = " ".join(ABBREV[step.name] for step in plan)
        cols.append((f"BSR ->32px, seed {s}", B.apply_plan(x, plan, LOW, g(20 + s)), order))
    for s in range(3):
        plan = B.draw_plan(SIDE / LOW, g(10 + s), B.BSR_LIGHT)
        order = " ".join(ABBREV[step.name] for step in plan)
        cols.append((f"light BSR, seed {s}", B.apply_plan(x, plan, LOW, g(20 + s)), order))
    return cols


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "docs" / "degradations.png"))
    args = ap.parse_args()
    shapes, _, _ = render_batch("test", 3, 1, SIDE, 0)
    rows = [("shapes", shapes)] + ([("photo", p)] if (p := photo(SIDE)) is not None else [])
    label_h, caption_h, pad = 28, 14, 4
    table = [columns(x) for _, x in rows]
    ncol = len(table[0])
    row_h = SIDE + caption_h + pad
    canvas = Image.new("RGB", (ncol * (SIDE + pad) + pad, len(rows) * row_h + label_h + 2 * caption_h + pad), "white")
    draw = ImageDraw.Draw(canvas)
    for c, (name, _, _) in enumerate(table[0]):
        draw.text((pad + c * (SIDE + pad), 4), name, fill="black")
    for r, cols in enumerate(table):
        for c, (_, img, caption) in enumerate(cols):
            pil = tensor_to_pil(img.clamp(-1, 1))[0].resize((SIDE, SIDE), Image.NEAREST)
            top = label_h + r * row_h
            canvas.paste(pil, (pad + c * (SIDE + pad), top))
            draw.text((pad + c * (SIDE + pad), top + SIDE + 1), caption, fill="black")
    legend = (
        "BSR step order under each seed: d1 halve first, b blur, d2 downsample (resize or blur+stride), "
        "d3 resize to 32, n Gaussian noise, j JPEG, cam camera noise, J final JPEG"
    )
    draw.text((pad, canvas.height - caption_h - 2), legend, fill="black")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(out)
    print(f"wrote {out} ({canvas.width}x{canvas.height})")


if __name__ == "__main__":
    main()
