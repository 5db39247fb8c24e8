"""The procedural ``shapes`` dataset, version 1 (``/work/shared/specs/shapes.md``).

Flat-coloured circles, squares, triangles and stars on a plain background, with a caption
drawn from fixed templates and exact ground truth (colour, shape, size, extent, centre,
region of each object). Every item is a pure function of ``(split, index, seed)``, so the
dataset needs no files, and a generated image can be scored against what its caption asks
for without any outside model.

Geometry, in canvas units (x right, y down, both in [0, 1]): every object owns the square
``centre +- extent / 2`` (its *box*). Circle and square fill it; the triangle's base is the
box's bottom edge and its apex the middle of the top edge (height == base); the star is
inscribed in the box's circle (outer radius ``extent / 2``, inner radius 0.4 of that, one
point straight up), so its drawn outline is a little narrower than the box
(:meth:`ObjectSpec.drawn_bbox`). Margins and the no-touching rule are enforced on the box,
which contains everything drawn, so they hold for the drawn pixels as well.

Randomness: one ``random.Random`` per item, seeded from a BLAKE2 hash of
``(split, seed, index)`` (never Python's salted ``hash()``), and only ``random()`` is called
on it, whose output is the same on every platform and Python version.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import random
import re
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset, Sampler

from ..errors import DataError

SPEC_VERSION = 1

BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "white": (240, 240, 240),
    "black": (24, 24, 24),
    "gray": (128, 128, 128),
}
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (215, 40, 40),
    "orange": (240, 140, 30),
    "yellow": (240, 210, 40),
    "green": (50, 170, 60),
    "cyan": (40, 190, 210),
    "blue": (40, 80, 220),
    "purple": (140, 60, 190),
    "pink": (240, 120, 180),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star")
SIZES: dict[str, tuple[float, float]] = {"small": (0.18, 0.26), "large": (0.38, 0.50)}
REGIONS: tuple[str, ...] = ("center", "top left", "top right", "bottom left", "bottom right")
RELATIONS: tuple[str, ...] = ("left of", "right of", "above", "below")
SPLITS: tuple[str, ...] = ("train", "val", "test")
HELD_OUT_PAIRS: frozenset[tuple[str, str]] = frozenset(
    {("green", "star"), ("pink", "square"), ("orange", "circle"), ("cyan", "triangle")}
)

MARGIN = 0.04  # every box lies at least this far inside the canvas
GAP = 0.04  # two boxes are separated by at least this much along some axis
CENTER_BAND = 0.15  # region "center": |x - 0.5| and |y - 0.5| both below this
RELATION_MIN = 0.25  # a relation is stated only if centres differ by more than this
STAR_INNER = 0.4  # inner radius / outer radius
SUPERSAMPLE = 4  # draw at 4x, then box-filter down
MIN_SIZE = 16

ONE_OBJECT_TEMPLATES: tuple[str, ...] = (
    "a {size} {color} {shape}",
    "a {color} {shape} on a {background} background",
    "a {size} {color} {shape} on a {background} background",
    "{color} {shape}",
    "a {color} {shape} in the {region}",
)
TWO_OBJECT_TEMPLATES: tuple[str, ...] = (
    "a {colorA} {shapeA} and a {colorB} {shapeB}",
    "a {colorA} {shapeA} {relation} a {colorB} {shapeB}",
)
BACKGROUND_SUFFIX = " on a {background} background"
P_TWO_OBJECTS = 0.5
P_RELATION_TEMPLATE = 0.5
P_BACKGROUND_SUFFIX = 0.5
_MAX_LAYOUT_TRIES = 100_000

_ALL_PAIRS: tuple[tuple[str, str], ...] = tuple((c, s) for c in COLORS for s in SHAPES)
_TRAIN_PAIRS: tuple[tuple[str, str], ...] = tuple(p for p in _ALL_PAIRS if p not in HELD_OUT_PAIRS)


@dataclasses.dataclass(frozen=True)
class ObjectSpec:
    """One object of a scene. ``center`` is (x, y) in [0, 1], x right, y down."""

    color: str
    shape: str
    size: str
    extent: float
    center: tuple[float, float]
    region: str

    def bbox(self) -> tuple[float, float, float, float]:
        """The object's box ``(x0, y0, x1, y1)``: centre +- extent / 2 (contains the drawing)."""
        h = self.extent / 2
        return (self.center[0] - h, self.center[1] - h, self.center[0] + h, self.center[1] + h)

    def drawn_bbox(self) -> tuple[float, float, float, float]:
        """The tight bounding box of what is drawn (smaller than :meth:`bbox` for the star)."""
        if self.shape != "star":
            return self.bbox()
        r = self.extent / 2
        cx, cy = self.center
        half_w = r * math.cos(math.radians(18))  # the two side points
        bottom = r * math.cos(math.radians(36))  # the two lower points
        return (cx - half_w, cy - r, cx + half_w, cy + bottom)

    def to_dict(self) -> dict[str, Any]:
        return {
            "color": self.color,
            "shape": self.shape,
            "size": self.size,
            "extent": self.extent,
            "center": [self.center[0], self.center[1]],
            "region": self.region,
        }


@dataclasses.dataclass(frozen=True)
class Scene:
    """A full item: background name, objects (in caption order) and caption."""

    background: str
    objects: tuple[ObjectSpec, ...]
    caption: str

    def attributes(self) -> dict[str, Any]:
        """Ground truth as JSON-able dict: ``{"background", "objects": [...]}``."""
        return {"background": self.background, "objects": [o.to_dict() for o in self.objects]}


# ----------------------------------------------------------------------------- sampling


def region_of(x: float, y: float) -> str:
    """Region word of a centre: ``center`` inside the middle band, else its quadrant."""
    if abs(x - 0.5) < CENTER_BAND and abs(y - 0.5) < CENTER_BAND:
        return "center"
    return ("top " if y < 0.5 else "bottom ") + ("left" if x < 0.5 else "right")


def is_held_out(color: str, shape: str) -> bool:
    """True for the colour-shape pairs that never appear in the train split."""
    return (color, shape) in HELD_OUT_PAIRS


def boxes_separated(a: ObjectSpec, b: ObjectSpec, gap: float = GAP) -> bool:
    """True if the boxes of ``a`` and ``b`` are at least ``gap`` apart along x or along y."""
    reach = (a.extent + b.extent) / 2
    gx = abs(a.center[0] - b.center[0]) - reach
    gy = abs(a.center[1] - b.center[1]) - reach
    return max(gx, gy) >= gap


def relation_between(a: ObjectSpec, b: ObjectSpec, axis: str) -> str:
    """Where ``a`` is relative to ``b`` along ``axis`` ("x" or "y"; y grows downwards)."""
    if axis == "x":
        return "left of" if a.center[0] < b.center[0] else "right of"
    return "above" if a.center[1] < b.center[1] else "below"


def eligible_relation_axes(a: ObjectSpec, b: ObjectSpec) -> list[str]:
    """Axes along which the centres differ by more than ``RELATION_MIN``."""
    axes = []
    if abs(a.center[0] - b.center[0]) > RELATION_MIN:
        axes.append("x")
    if abs(a.center[1] - b.center[1]) > RELATION_MIN:
        axes.append("y")
    return axes


def item_rng(split: str, index: int, seed: int) -> random.Random:
    """The item's private RNG, from a platform-independent hash of (split, seed, index)."""
    key = f"unclip-shapes-v{SPEC_VERSION}|{split}|{int(seed)}|{int(index)}".encode()
    return random.Random(int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "big"))


def _choice(rng: random.Random, seq: Sequence[Any]) -> Any:
    # Only rng.random() is used: its stream is stable across Python versions.
    return seq[min(int(rng.random() * len(seq)), len(seq) - 1)]


def _uniform(rng: random.Random, lo: float, hi: float) -> float:
    return lo + (hi - lo) * rng.random()


def _layout(rng: random.Random, attrs: Sequence[tuple[str, str, str]]) -> tuple[ObjectSpec, ...]:
    """Place objects with given (colour, shape, size word) by joint rejection sampling.

    Each try draws every extent (uniform in its size range) and every centre (uniform over
    the square the margin allows for that extent); the try is kept only if no two boxes
    touch. The accepted layout is therefore uniform over the valid ones, which is the
    spec's "centre otherwise uniform over the allowed area". Extents that cannot fit side
    by side at all are rejected before drawing centres (same distribution, fewer draws).
    """
    rand = rng.random
    ranges = [SIZES[a[2]] for a in attrs]
    room = 1.0 - 2 * MARGIN - GAP
    for _ in range(_MAX_LAYOUT_TRIES):
        ext = [lo + (hi - lo) * rand() for lo, hi in ranges]
        if len(ext) == 2 and ext[0] + ext[1] > room:
            continue
        cen = []
        for e in ext:
            lo = MARGIN + e / 2
            cen.append((lo + (1 - 2 * lo) * rand(), lo + (1 - 2 * lo) * rand()))
        if len(ext) == 2:  # the only multi-object case; same test as boxes_separated
            half = (ext[0] + ext[1]) / 2
            if max(abs(cen[0][0] - cen[1][0]) - half, abs(cen[0][1] - cen[1][1]) - half) < GAP:
                continue
        elif len(ext) != 1:
            raise DataError(f"shapes scenes hold 1 or 2 objects, got {len(ext)}")
        return tuple(
            ObjectSpec(c, s, z, e, (x, y), region_of(x, y)) for (c, s, z), e, (x, y) in zip(attrs, ext, cen)
        )
    raise DataError(f"could not place objects {list(attrs)} without overlap")  # pragma: no cover


def _caption(rng: random.Random, background: str, objs: Sequence[ObjectSpec]) -> str:
    if len(objs) == 1:
        o = objs[0]
        template = _choice(rng, ONE_OBJECT_TEMPLATES)
        return template.format(size=o.size, color=o.color, shape=o.shape, background=background, region=o.region)
    a, b = objs
    text = TWO_OBJECT_TEMPLATES[0].format(colorA=a.color, shapeA=a.shape, colorB=b.color, shapeB=b.shape)
    if rng.random() < P_RELATION_TEMPLATE:
        axes = eligible_relation_axes(a, b)
        if axes:
            rel = relation_between(a, b, _choice(rng, axes))
            text = TWO_OBJECT_TEMPLATES[1].format(
                colorA=a.color, shapeA=a.shape, relation=rel, colorB=b.color, shapeB=b.shape
            )
    if rng.random() < P_BACKGROUND_SUFFIX:
        text += BACKGROUND_SUFFIX.format(background=background)
    return text


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise DataError(f"unknown shapes split {split!r}; choose one of {', '.join(SPLITS)}")


def sample_scene(split: str, index: int, seed: int = 0) -> Scene:
    """The scene of item ``index`` of ``split`` under ``seed`` (pure function).

    One or two objects with probability 1/2 each; colour-shape pairs uniform over the 32
    (over the 28 not held out, in ``train``); two objects never share both colour and shape
    so captions name them unambiguously; size words uniform; the objects' order (A, B of the
    caption) is random because they are drawn exchangeably.
    """
    _check_split(split)
    if int(index) < 0:
        raise DataError(f"shapes index must be >= 0, got {index}")
    rng = item_rng(split, index, seed)
    pairs = _TRAIN_PAIRS if split == "train" else _ALL_PAIRS
    background = _choice(rng, tuple(BACKGROUNDS))
    n = 2 if rng.random() < P_TWO_OBJECTS else 1
    first = _choice(rng, pairs)
    chosen = [first]
    if n == 2:
        chosen.append(_choice(rng, tuple(p for p in pairs if p != first)))
    attrs = [(c, s, _choice(rng, tuple(SIZES))) for c, s in chosen]
    objs = _layout(rng, attrs)
    return Scene(background, objs, _caption(rng, background, objs))


# ---------------------------------------------------------------------------- rendering


def shape_polygon(obj: ObjectSpec, side: float) -> list[tuple[float, float]]:
    """Outline of ``obj`` (not the circle) in continuous pixel coordinates of a canvas ``side`` wide.

    Continuous coordinates: pixel (i, j) covers [i, i+1) x [j, j+1), its centre is
    (i + 0.5, j + 0.5). The star's ten vertices alternate outer and inner radius, starting
    with the point straight up.
    """
    cx, cy = obj.center[0] * side, obj.center[1] * side
    h = obj.extent * side / 2
    if obj.shape == "square":
        return [(cx - h, cy - h), (cx + h, cy - h), (cx + h, cy + h), (cx - h, cy + h)]
    if obj.shape == "triangle":
        return [(cx, cy - h), (cx + h, cy + h), (cx - h, cy + h)]
    if obj.shape == "star":
        pts = []
        for k in range(10):
            ang = -math.pi / 2 + k * math.pi / 5
            r = h if k % 2 == 0 else h * STAR_INNER
            pts.append((cx + r * math.cos(ang), cy + r * math.sin(ang)))
        return pts
    raise DataError(f"shape {obj.shape!r} has no polygon outline; polygons exist for square, triangle and star")


def _polygon_spans(pts: Sequence[tuple[float, float]], ys: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """Even-odd scanline spans of a simple polygon on rows ``ys`` (shape (R,)).

    Returns pairs ``(left, right)`` of (R,) arrays; a row lies inside the polygon on the
    union of ``[left, right]`` over the pairs (``inf`` marks an empty span). Edges use the
    half-open rule ``min(y) <= row < max(y)`` so vertices are never counted twice.
    """
    p = np.asarray(pts, dtype=np.float64)
    q = np.roll(p, -1, axis=0)
    y = ys[:, None]
    crosses = (p[:, 1] <= y) != (q[:, 1] <= y)  # (R, n)
    dy = np.where(q[:, 1] == p[:, 1], 1.0, q[:, 1] - p[:, 1])
    xi = np.where(crosses, p[:, 0] + (y - p[:, 1]) / dy * (q[:, 0] - p[:, 0]), np.inf)
    npairs = int(crosses.sum(axis=1).max(initial=0)) // 2
    if npairs == 0:
        return []
    xs = np.sort(xi, axis=1)
    return [(xs[:, 2 * k], xs[:, 2 * k + 1]) for k in range(npairs)]


def object_coverage(obj: ObjectSpec, size: int) -> tuple[int, int, np.ndarray]:
    """How many of the 4 x 4 sub-pixel centres of each pixel ``obj`` covers.

    This is drawing at 4x (each 4x pixel takes the object's colour if its centre is inside
    the shape) followed by a 4x box filter, computed span by span instead of pixel by
    pixel. Returns ``(row0, col0, counts)``: ``counts`` is a float array (h, w) of integers
    in 0..16 for the pixels ``row0 .. row0+h-1``, ``col0 .. col0+w-1`` (the object's box,
    clipped to the canvas). The disc is exact; polygons are filled by the even-odd rule.
    """
    ss = SUPERSAMPLE
    x0, y0, x1, y1 = (v * size for v in obj.bbox())
    c0, c1 = max(0, math.floor(x0)), min(size, math.ceil(x1))
    r0, r1 = max(0, math.floor(y0)), min(size, math.ceil(y1))
    if c1 <= c0 or r1 <= r0:
        return r0, c0, np.zeros((max(r1 - r0, 0), max(c1 - c0, 0)))
    ys = np.arange(ss * r0, ss * r1, dtype=np.float64) + 0.5  # sub-row centres, 4x units
    if obj.shape == "circle":
        cx, cy, r = obj.center[0] * size * ss, obj.center[1] * size * ss, obj.extent * size * ss / 2
        d2 = r * r - (ys - cy) ** 2
        half = np.sqrt(np.maximum(d2, 0.0))
        spans = [(np.where(d2 >= 0, cx - half, np.inf), np.where(d2 >= 0, cx + half, np.inf))]
    elif obj.shape in SHAPES:
        spans = _polygon_spans(shape_polygon(obj, size * ss), ys)
    else:
        raise DataError(f"unknown shape {obj.shape!r}; choose one of {', '.join(SHAPES)}")
    col = (ss * np.arange(c0, c1, dtype=np.float64))[None, :]  # first sub-column of each pixel
    counts = np.zeros((len(ys), c1 - c0))
    for left, right in spans:
        # sub-columns k with left <= k + 0.5 <= right
        k0 = np.ceil(left - 0.5)[:, None]
        k1 = np.floor(right - 0.5)[:, None] + 1
        counts += np.clip(np.minimum(k1, col + ss) - np.maximum(k0, col), 0, ss)
    return r0, c0, counts.reshape(r1 - r0, ss, c1 - c0).sum(axis=1)


def _check_size(size: int) -> None:
    if not isinstance(size, (int, np.integer)) or isinstance(size, bool) or size < MIN_SIZE:
        raise DataError(f"shapes image size must be an int >= {MIN_SIZE}, got {size!r}")


def render_array(scene: Scene, size: int = 64) -> np.ndarray:
    """Render ``scene`` as a uint8 array (size, size, 3); see :func:`render_scene`."""
    _check_size(size)
    size = int(size)
    if scene.background not in BACKGROUNDS:
        raise DataError(f"unknown background {scene.background!r}; choose one of {', '.join(BACKGROUNDS)}")
    full = SUPERSAMPLE * SUPERSAMPLE
    total = np.zeros((size, size))
    paint = np.zeros((size, size, 3))
    for obj in scene.objects:
        if obj.color not in COLORS:
            raise DataError(f"unknown colour {obj.color!r}; choose one of {', '.join(COLORS)}")
        r0, c0, counts = object_coverage(obj, size)
        h, w = counts.shape
        total[r0 : r0 + h, c0 : c0 + w] += counts
        paint[r0 : r0 + h, c0 : c0 + w] += counts[..., None] * np.asarray(COLORS[obj.color], dtype=np.float64)
    # Objects of a sampled scene never share a sub-pixel; should a hand-made scene overlap,
    # normalise instead of overflowing.
    norm = np.maximum(total, full)[..., None]
    bg = np.asarray(BACKGROUNDS[scene.background], dtype=np.float64)
    out = (paint + np.maximum(full - total, 0.0)[..., None] * bg) / norm
    return np.floor(out + 0.5).astype(np.uint8)


def render_scene(scene: Scene, size: int = 64) -> Image.Image:
    """Render ``scene`` as an RGB ``size`` x ``size`` PIL image.

    Drawn at 4x with flat fills and no outline (each 4x pixel takes the colour of whatever
    covers its centre), then reduced 4x with a box filter (mean of the 16, rounded), so
    every pixel wholly inside an object, or wholly background, has exactly its palette
    colour and edges are anti-aliased. See :func:`object_coverage`.
    """
    return Image.fromarray(render_array(scene, size))


def _to_tensor(arrays: list[np.ndarray]) -> torch.Tensor:
    x = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).to(torch.float32)
    return x.div_(127.5).sub_(1.0)


def render_batch(
    split: str, start: int, count: int, size: int = 64, seed: int = 0
) -> tuple[torch.Tensor, list[str], list[dict[str, Any]]]:
    """Items ``start .. start + count - 1``: images (N, 3, size, size) in [-1, 1], captions, attributes."""
    _check_size(size)
    if count < 1:
        raise DataError(f"render_batch count must be >= 1, got {count}")
    arrays, captions, attrs = [], [], []
    for i in range(int(start), int(start) + int(count)):
        scene = sample_scene(split, i, seed)
        arrays.append(render_array(scene, size))
        captions.append(scene.caption)
        attrs.append(scene.attributes())
    return _to_tensor(arrays), captions, attrs


# ----------------------------------------------------------------------------- captions

_C = "|".join(COLORS)
_S = "|".join(SHAPES)
_Z = "|".join(SIZES)
_B = "|".join(BACKGROUNDS)
_R = "|".join(REGIONS)
_REL = "|".join(RELATIONS)
_BG_SUFFIX = rf"(?: on a (?P<background>{_B}) background)?"
_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("size", re.compile(rf"a (?P<size>{_Z}) (?P<color>{_C}) (?P<shape>{_S})")),
    ("background", re.compile(rf"a (?P<color>{_C}) (?P<shape>{_S}) on a (?P<background>{_B}) background")),
    (
        "size_background",
        re.compile(rf"a (?P<size>{_Z}) (?P<color>{_C}) (?P<shape>{_S}) on a (?P<background>{_B}) background"),
    ),
    ("bare", re.compile(rf"(?P<color>{_C}) (?P<shape>{_S})")),
    ("region", re.compile(rf"a (?P<color>{_C}) (?P<shape>{_S}) in the (?P<region>{_R})")),
    ("and", re.compile(rf"a (?P<colorA>{_C}) (?P<shapeA>{_S}) and a (?P<colorB>{_C}) (?P<shapeB>{_S}){_BG_SUFFIX}")),
    (
        "relation",
        re.compile(
            rf"a (?P<colorA>{_C}) (?P<shapeA>{_S}) (?P<relation>{_REL}) a (?P<colorB>{_C}) (?P<shapeB>{_S}){_BG_SUFFIX}"
        ),
    ),
)
_PROMPT_PATTERN = re.compile(rf"an? (?P<color>{_C}) (?P<shape>{_S})")


def parse_caption(caption: str, allow_prompt: bool = False) -> dict[str, Any] | None:
    """Parse a caption against the spec's templates; None if it matches none.

    Returns ``{"template": name, "objects": [{"color", "shape", ["size"], ["region"]}],
    "background": str | None, "relation": str | None}``; objects are in caption order (A, B).
    Template names: ``size``, ``background``, ``size_background``, ``bare``, ``region``
    (one object), ``and``, ``relation`` (two). With ``allow_prompt`` the evaluation prompt
    form ``a {color} {shape}`` (template ``prompt``) is accepted too.
    """
    text = caption.strip()
    for name, pat in _PATTERNS:
        m = pat.fullmatch(text)
        if m is None:
            continue
        g = m.groupdict()
        if "colorA" in g:
            objects = [{"color": g["colorA"], "shape": g["shapeA"]}, {"color": g["colorB"], "shape": g["shapeB"]}]
        else:
            obj = {"color": g["color"], "shape": g["shape"]}
            if g.get("size"):
                obj["size"] = g["size"]
            if g.get("region"):
                obj["region"] = g["region"]
            objects = [obj]
        return {"template": name, "objects": objects, "background": g.get("background"), "relation": g.get("relation")}
    if allow_prompt:
        m = _PROMPT_PATTERN.fullmatch(text)
        if m is not None:
            obj = {"color": m["color"], "shape": m["shape"]}
            return {"template": "prompt", "objects": [obj], "background": None, "relation": None}
    return None


def caption_consistent(scene: Scene) -> bool:
    """True if ``scene.caption`` parses and agrees with the scene's ground truth."""
    p = parse_caption(scene.caption)
    if p is None or len(p["objects"]) != len(scene.objects):
        return False
    if p["background"] is not None and p["background"] != scene.background:
        return False
    for want, obj in zip(p["objects"], scene.objects):
        if any(getattr(obj, k) != v for k, v in want.items()):
            return False
    if p["relation"] is not None:
        a, b = scene.objects
        axis = "x" if p["relation"] in ("left of", "right of") else "y"
        if axis not in eligible_relation_axes(a, b) or relation_between(a, b, axis) != p["relation"]:
            return False
    return True


def single_object_prompts() -> list[str]:
    """The 32 prompts ``a {color} {shape}`` in palette order (colours outer, shapes inner)."""
    return [f"a {c} {s}" for c in COLORS for s in SHAPES]


def held_out_prompts() -> list[str]:
    """``a {color} {shape}`` for the four held-out pairs (sorted)."""
    return [f"a {c} {s}" for c, s in sorted(HELD_OUT_PAIRS)]


def scene_for_prompt(prompt: str, seed: int = 0, max_tries: int = 10_000) -> Scene:
    """A random scene that satisfies ``prompt`` (any caption template, or ``a {color} {shape}``).

    Attributes the prompt names are fixed; the rest are drawn as in :func:`sample_scene`
    (centres by rejection until the region or relation holds). The scene's caption is the
    prompt. Useful for reference images of a prompt, held-out pairs included.
    """
    p = parse_caption(prompt, allow_prompt=True)
    if p is None:
        raise DataError(
            f"prompt {prompt!r} matches no shapes caption template; try e.g. 'a red circle' or "
            "'a small blue star on a black background'"
        )
    rng = item_rng("prompt", int.from_bytes(hashlib.blake2b(prompt.encode(), digest_size=6).digest(), "big"), seed)
    background = p["background"] or _choice(rng, tuple(BACKGROUNDS))
    attrs = [(o["color"], o["shape"], o.get("size") or _choice(rng, tuple(SIZES))) for o in p["objects"]]
    region = p["objects"][0].get("region")
    for _ in range(max_tries):
        objs = _layout(rng, attrs)
        if region is not None and objs[0].region != region:
            continue
        if p["relation"] is not None:
            axis = "x" if p["relation"] in ("left of", "right of") else "y"
            a, b = objs
            if axis not in eligible_relation_axes(a, b) or relation_between(a, b, axis) != p["relation"]:
                continue
        return Scene(background, objs, prompt.strip())
    raise DataError(f"could not lay out a scene for prompt {prompt!r} in {max_tries} tries")  # pragma: no cover


# ------------------------------------------------------------------------------ dataset


class ShapesDataset(Dataset):
    """Items ``0 .. length - 1`` of a shapes split, rendered on the fly.

    ``ds[i]`` is ``{"image": FloatTensor (3, size, size) in [-1, 1], "caption": str,
    "attributes": {"background", "objects": [{"color", "shape", "size", "extent",
    "center": [x, y], "region"}]}}``. Use :func:`collate` with a DataLoader (the attribute
    lists differ in length between items).
    """

    name = "shapes"

    def __init__(self, split: str = "train", size: int = 64, length: int = 10_000, seed: int = 0) -> None:
        _check_split(split)
        _check_size(size)
        if int(length) < 1:
            raise DataError(f"shapes length must be >= 1, got {length}")
        self.split, self.size, self.length, self.seed = split, int(size), int(length), int(seed)

    def __len__(self) -> int:
        return self.length

    def scene(self, index: int) -> Scene:
        if not -self.length <= index < self.length:
            raise IndexError(f"index {index} out of range for shapes {self.split} of length {self.length}")
        return sample_scene(self.split, index % self.length, self.seed)

    def __getitem__(self, index: int) -> dict[str, Any]:
        scene = self.scene(int(index))
        image = _to_tensor([render_array(scene, self.size)])[0]
        return {"image": image, "caption": scene.caption, "attributes": scene.attributes()}


def collate(items: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Batch dataset items: ``{"image": (B, 3, H, W), "caption": [str], "attributes": [dict]}``.

    Works for every dataset of :mod:`unclip.data` (all items have these three keys).
    """
    return {
        "image": torch.stack([it["image"] for it in items]),
        "caption": [it["caption"] for it in items],
        "attributes": [it["attributes"] for it in items],
    }


class ShapesInfiniteSampler(Sampler[int]):
    """An endless, seeded stream of indices into a dataset of ``length`` items.

    Epoch ``e`` is a permutation of ``range(length)`` drawn from a ``torch.Generator`` seeded
    with ``(seed, e)``; the stream is the concatenation of epochs. ``start`` skips that many
    indices, so a resumed run continues the exact stream (pass the number of samples seen).
    """

    def __init__(self, length: int, seed: int = 0, start: int = 0, shuffle: bool = True) -> None:
        if int(length) < 1:
            raise DataError(f"sampler length must be >= 1, got {length}")
        if int(start) < 0:
            raise DataError(f"sampler start must be >= 0, got {start}")
        self.length, self.seed, self.start, self.shuffle = int(length), int(seed), int(start), shuffle

    def _epoch(self, epoch: int) -> list[int]:
        if not self.shuffle:
            return list(range(self.length))
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(self.length, generator=g).tolist()

    def __iter__(self) -> Iterator[int]:
        epoch, offset = divmod(self.start, self.length)
        while True:
            order = self._epoch(epoch)
            yield from order[offset:]
            epoch, offset = epoch + 1, 0
