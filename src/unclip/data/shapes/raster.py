"""Rendering ``shapes`` scenes: exact polygon coverage of every pixel, supersampled and box-filtered."""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image

from ...errors import DataError
from .sampling import sample_scene
from .spec import (
    BACKGROUNDS,
    COLORS,
    MIN_SIZE,
    SHAPES,
    STAR_INNER,
    SUPERSAMPLE,
    ObjectSpec,
    Scene,
)


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
