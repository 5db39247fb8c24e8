"""The ``shapes`` spec, version 1 (``shared/specs/shapes.md``): palette, sizes, templates,
layout rules, the ground-truth objects, and the per-item random stream.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import random
from typing import Any, Sequence

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
