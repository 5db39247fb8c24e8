"""Rebuild the committed outside-image set (issue 16, item 6): 128 px PNGs beside this file.

Images far from the ``shapes`` training distribution, to test inversion as a new user
would: a photo and a piece of clip art from matplotlib's sample data, OpenMoji emoji
(outlines, colours off the shapes palette), and clip art drawn here (white background,
black outlines, a grey mouse). Sources and licences: README.md beside this file.

    PYTHONPATH=src python benchmarks/outside_images/make.py
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw

from unclip.data.emoji import render_emoji

HERE = Path(__file__).resolve().parent
SIDE = 128
MATPLOTLIB = {"photo_grace_hopper": "grace_hopper.jpg", "clipart_present": "Minduka_Present_Blue_Pack.png"}
OPENMOJI = {
    "emoji_mouse": "\U0001f401",
    "emoji_apple": "\U0001f34e",
    "emoji_sunflower": "\U0001f33b",
    "emoji_car": "\U0001f697",
}


def centre_square(im: Image.Image, side: int = SIDE) -> Image.Image:
    """Composite onto white, centre-crop to a square and resize to ``side``."""
    im = im.convert("RGBA")
    white = Image.new("RGBA", im.size, "white")
    im = Image.alpha_composite(white, im).convert("RGB")
    s = min(im.size)
    left, top = (im.width - s) // 2, (im.height - s) // 2
    return im.crop((left, top, left + s, top + s)).resize((side, side), Image.Resampling.LANCZOS)


def grey_mouse() -> Image.Image:
    """Clip art: a grey mouse with black outlines on white."""
    im = Image.new("RGB", (SIDE, SIDE), "white")
    d = ImageDraw.Draw(im)
    grey, pink = (150, 150, 155), (240, 170, 180)
    d.ellipse((30, 50, 100, 100), fill=grey, outline="black", width=3)  # body
    d.ellipse((78, 40, 112, 72), fill=grey, outline="black", width=3)  # head
    d.ellipse((80, 26, 100, 46), fill=pink, outline="black", width=3)  # ear
    d.ellipse((100, 52, 106, 58), fill="black")  # eye
    d.line((30, 80, 14, 96, 22, 110), fill="black", width=3)  # tail
    return im


def house() -> Image.Image:
    """Clip art: an outlined house in colours off the shapes palette."""
    im = Image.new("RGB", (SIDE, SIDE), "white")
    d = ImageDraw.Draw(im)
    d.rectangle((30, 60, 98, 108), fill=(222, 184, 135), outline="black", width=3)
    d.polygon([(22, 62), (64, 22), (106, 62)], fill=(139, 69, 19), outline="black")
    d.rectangle((56, 80, 72, 108), fill=(85, 107, 47), outline="black", width=2)
    d.rectangle((38, 70, 50, 82), fill=(176, 224, 230), outline="black", width=2)
    return im


def main() -> None:
    from matplotlib import cbook

    for name, sample in MATPLOTLIB.items():
        with Image.open(cbook.get_sample_data(sample, asfileobj=False)) as im:
            centre_square(im).save(HERE / f"{name}.png")
    for name, ch in OPENMOJI.items():
        render_emoji(ch, "openmoji", size=SIDE).convert("RGB").save(HERE / f"{name}.png")
    grey_mouse().save(HERE / "clipart_grey_mouse.png")
    house().save(HERE / "clipart_house.png")


if __name__ == "__main__":
    main()
