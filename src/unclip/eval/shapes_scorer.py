"""Exact-geometry scorer for images of the ``shapes`` dataset (``/work/shared/specs/shapes.md``).

Flat colours on a plain background can be read back without any learned model, so the
colour, shape, size word, extent, centre and region of every object in a generated image
can be checked against its prompt (fidelity), and the spread of the centres measured
(diversity). Outside tools score our images against the same spec, so the reading uses the
spec's numbers. Work is vectorised over pixels; Python loops run only over the components.

1. Background: the palette background nearest to the per-channel median of the border
   pixels. The median itself, not the palette value, is the base colour of step 2, so a
   slightly tinted generated background still works.
2. Pixel colours: each pixel is fitted as a blend ``bg + a (c - bg)`` of the background
   with every object colour ``c`` (``a`` in [0, 1]); the colour with the smallest residual
   wins. This is "nearest palette colour" made exact for the anti-aliased edges of the
   supersampled renders, whose mixed pixels lie on these segments (a red-on-white edge
   pixel is nearer pink than red, but lies on the red-white segment). The pixel takes that
   colour when ``a >= 0.5`` and it is over ``foreground_threshold`` from the background; a
   pixel far from the background that no blend explains is ``other``.
3. Components: 4-connected, per colour, over horizontal runs by min-label propagation with
   pointer jumping (no scipy). Components under ``min_area_fraction`` of the canvas (0.3 %,
   and at least 2 pixels) are not objects; their pixels, like the anti-aliased fringe, are
   offered to an adjacent object of their colour (a star a few pixels across loses its
   thin points to 4-connectivity otherwise).
4. Shape from coverage-weighted moments (coverage = the blend weight, fringe included),
   which stay accurate for objects six pixels across where fill ratio and box aspect of a
   thresholded mask do not (thresholding eats the star's points): compactness, vertical
   skew and cross kurtosis (``_shape_features``), nearest of four prototypes.

Centre and extent follow the ground truth of ``unclip.data.shapes``: the centre of the
object's box ``centre +- extent / 2``, which for the star is its circle centre (not the
centre of its drawn outline, which sits 0.095 R higher), and the extent is the box side
(star: outer diameter). They come from the moments: the centroid for circle, square and
star (five-fold symmetry puts the star's centroid on its circle centre), the centroid
moved up by extent / 6 for the apex-up triangle; the extent from the variance. Coordinates
are x right, y down, in [0, 1]; colours are sRGB 0-255.

Limits: blur adds to every variance, so on blurred images small objects drift towards the
least compact prototype, the star (at 32 px, a Gaussian blur of 0.8 px misreads about a
fifth of the shapes; at 64 px up to 1.2 px is harmless). Same-coloured objects that touch
along an edge are one component.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..data.shapes import BACKGROUNDS, COLORS, SHAPES
from ..errors import InputError
from .connected_components import _label_runs

__all__ = [
    "BACKGROUND_RGB", "OBJECT_RGB", "SHAPE_NAMES", "OTHER", "ScorerConfig", "ObjectScore",
    "SceneScore", "score_images", "region_of", "size_word_of",
]  # fmt: skip

# Palette copied from the spec (sRGB 0-255); a test checks it against unclip.data.shapes.
# The palette and shape names come from the dataset module, the one place that holds the
# spec's numbers (a test still checks them against shapes.md's values).
BACKGROUND_RGB: dict[str, tuple[int, int, int]] = dict(BACKGROUNDS)
OBJECT_RGB: dict[str, tuple[int, int, int]] = dict(COLORS)
SHAPE_NAMES: tuple[str, ...] = tuple(SHAPES)
OTHER = "other"  # colour of a component that no palette blend explains
SMALL_RANGE = (0.18, 0.26)  # spec size ranges, extent / side
LARGE_RANGE = (0.38, 0.50)
CENTER_HALF_WIDTH = 0.15  # spec region "center": |x - 0.5| and |y - 0.5| both below this

# Prototypes in (compactness, vertical skew, cross kurtosis), see _shape_features: the
# values of the exact shapes (measured on 3000 px renders), and how far each feature may
# wobble on an object a few pixels across (it divides the distance to a prototype).
_PROTOTYPES = torch.tensor(
    [
        [1.000, 0.000, 0.667],  # circle
        [0.955, 0.000, 1.000],  # square
        [0.827, -0.566, 0.800],  # triangle
        [0.757, 0.000, 0.832],  # star
    ]
)
_FEATURE_SCALE = torch.tensor([0.03, 0.15, 0.08])
# Variance per axis over extent^2 (circle R^2/4, square e^2/12, triangle vertical h^2/18,
# star 0.12363 R^2 with R = e/2).
_VAR_PER_EXTENT2 = torch.tensor([1 / 16, 1 / 12, 1 / 18, 0.12363 / 4], dtype=torch.float64)
_Q = 1.0 / 12.0  # variance added by sampling positions at pixel centres, px^2


@dataclass(frozen=True)
class ScorerConfig:
    """Thresholds of the scorer; colour distances are Euclidean in sRGB 0-255 units.

    foreground_threshold: least distance from the background of an object pixel (far
        above background noise, far below the nearest object colour: purple on gray, 93).
    other_threshold: largest distance from a background-to-colour segment for a pixel to
        take that colour, else it is ``other`` (palette colours are >= 71 apart; generated
        colours drift, so a little over half that is allowed).
    other_min_distance: least distance from the background of an ``other`` pixel.
    min_area_fraction: components under this share of the canvas, or under 2 pixels (which
        matters below 26 px), are not objects.
    fringe_radius: how far (Chebyshev, pixels) around an object its fringe is collected.
    fringe_min_alpha: coverages within this of 0 or 1 snap to 0 or 1, which keeps pixel
        noise out of the moments.
    size_tolerance: how far outside a spec size range an extent may be and keep its word.
    max_pixels_per_chunk: images are scored in chunks of at most this many pixels.
    """

    foreground_threshold: float = 24.0
    other_threshold: float = 48.0
    other_min_distance: float = 48.0
    min_area_fraction: float = 0.003
    fringe_radius: int = 1
    fringe_min_alpha: float = 0.05
    size_tolerance: float = 0.03
    max_pixels_per_chunk: int = 1 << 21


@dataclass
class ObjectScore:
    """One object read back from an image.

    color: palette name or ``"other"``; shape: one of SHAPE_NAMES; size: ``"small"``,
    ``"large"`` or ``"neither"``; extent: box side over canvas side (star: outer diameter);
    center: (x, y) in [0, 1], x right, y down; region: spec region of the centre;
    area_fraction: covered area (coverage-weighted pixels) over canvas area.
    """

    color: str
    shape: str
    size: str
    extent: float
    center: tuple[float, float]
    region: str
    area_fraction: float


@dataclass
class SceneScore:
    """Everything read back from one image; ``objects`` sorted largest first."""

    background: str
    objects: list[ObjectScore] = field(default_factory=list)
    num_objects: int = 0

    @property
    def main(self) -> ObjectScore | None:
        """The largest object, or None for an image without objects."""
        return self.objects[0] if self.objects else None


def region_of(x: float, y: float) -> str:
    """Spec region of a centre: ``center`` if |x-0.5| and |y-0.5| are below 0.15, else the quadrant."""
    if abs(x - 0.5) < CENTER_HALF_WIDTH and abs(y - 0.5) < CENTER_HALF_WIDTH:
        return "center"
    return ("top" if y < 0.5 else "bottom") + " " + ("left" if x < 0.5 else "right")


def size_word_of(extent: float, tolerance: float = 0.03) -> str:
    """``small`` or ``large`` if ``extent`` is within ``tolerance`` of that spec range, else ``neither``."""
    if SMALL_RANGE[0] - tolerance <= extent <= SMALL_RANGE[1] + tolerance:
        return "small"
    if LARGE_RANGE[0] - tolerance <= extent <= LARGE_RANGE[1] + tolerance:
        return "large"
    return "neither"


# ----------------------------------------------------------------------------- input


def _as_batches(images: Tensor | Sequence[Any]) -> list[tuple[list[int], Tensor]]:
    """Groups of same-sized images as float (n, 3, S, S) in 0-255, with their input positions."""
    if isinstance(images, Tensor):
        x = images.unsqueeze(0) if images.dim() == 3 else images
        if x.dim() != 4 or x.shape[1] != 3 or not x.is_floating_point():
            raise InputError(
                f"images: expected a float tensor (B, 3, H, W) in [-1, 1], got {x.dtype} "
                f"{tuple(images.shape)}; pass RGB channels first, e.g. x.float() / 127.5 - 1"
            )
        _check_side(x.shape[-2], x.shape[-1], "images")
        rgb = (x.detach().to("cpu", torch.float32).clamp(-1.0, 1.0) + 1.0) * 127.5
        return [(list(range(x.shape[0])), rgb)]
    groups: dict[tuple[int, int], list[tuple[int, Tensor]]] = {}
    for i, im in enumerate(images):
        if not hasattr(im, "convert"):
            raise InputError(
                f"images[{i}]: expected a PIL image, got {type(im).__name__}; pass a tensor "
                "(B, 3, H, W) in [-1, 1] or a list of PIL images"
            )
        arr = np.asarray(im.convert("RGB"), dtype=np.float32)
        _check_side(arr.shape[0], arr.shape[1], f"images[{i}]")
        groups.setdefault(arr.shape[:2], []).append((i, torch.from_numpy(arr).permute(2, 0, 1)))
    return [([i for i, _ in g], torch.stack([t for _, t in g])) for g in groups.values()]


def _check_side(h: int, w: int, name: str) -> None:
    if h != w or h < 16:
        raise InputError(f"{name}: expected a square image of side >= 16, got {h}x{w}; resize it")


# ----------------------------------------------------------------------------- pixels

_BG_TABLE = torch.tensor(list(BACKGROUND_RGB.values()), dtype=torch.float32)  # (3, 3)
_OBJ_TABLE = torch.tensor(list(OBJECT_RGB.values()), dtype=torch.float32)  # (8, 3)
_BG_NAMES, _OBJ_NAMES = list(BACKGROUND_RGB), list(OBJECT_RGB)
_OTHER_CLASS = len(_OBJ_NAMES)


def _background(rgb: Tensor) -> tuple[Tensor, Tensor]:
    """Median border colour (B, 3) and the index (B,) of the nearest palette background."""
    border = torch.cat(
        [rgb[:, :, 0, :], rgb[:, :, -1, :], rgb[:, :, 1:-1, 0], rgb[:, :, 1:-1, -1]], dim=2
    )  # (B, 3, 4S - 4)
    base = border.median(dim=2).values
    return base, torch.cdist(base, _BG_TABLE).argmin(dim=1)


def _blend(vv: Tensor, proj: Tensor, dd: Tensor) -> tuple[Tensor, Tensor]:
    """Fit pixels as blends ``bg + a (c - bg)`` of the background with candidate colours.

    With ``v`` = pixel - bg: vv (M, 1) is |v|^2, proj (M, K) <v, c - bg>, dd (M, K)
    |c - bg|^2. Returns alpha (M, K), the unclamped blend weight, and res2 (M, K), the
    squared distance from v to the segment {a (c - bg): 0 <= a <= 1}.
    """
    dd = dd.clamp_min(1.0)
    alpha = proj / dd
    a = alpha.clamp(0.0, 1.0)
    return alpha, (vv - 2 * a * proj + a * a * dd).clamp_min(0.0)


def _dead_zone(alpha: Tensor, low: float) -> Tensor:
    """Coverage from a blend weight: clamped to [0, 1], values within ``low`` of 0 or 1 snapped."""
    a = alpha.clamp(0.0, 1.0)
    a = torch.where(a > 1.0 - low, torch.ones_like(a), a)
    return torch.where(a < low, torch.zeros_like(a), a)


def _classify_pixels(v: Tensor, base: Tensor, per_image: int, cfg: ScorerConfig) -> tuple[Tensor, Tensor]:
    """Per-pixel colour class and coverage.

    v: (N, 3) pixels minus their image's background, images one after another,
    ``per_image`` pixels each; base: (B, 3) background colours. Returns classes (N,) int64
    (object colour 0..7, 8 for ``other``, -1 for background or fringe) and weight (N,), the
    pixel's coverage by its class (1 for ``other``). Only pixels some way from the
    background, a small share, are fitted.
    """
    n = v.shape[0]
    classes = torch.full((n,), -1, dtype=torch.int64)
    weight = torch.zeros(n)
    vv = (v * v).sum(-1)
    least = min(cfg.foreground_threshold, cfg.other_min_distance)
    idx = torch.nonzero(vv > least * least).squeeze(1)
    if idx.numel() == 0:
        return classes, weight
    vp, b, vvp = v[idx], idx // per_image, vv[idx]
    # <v, c - bg> = <v, c> - <v, bg>: no (M, 8, 3) tensor is built.
    proj = vp @ _OBJ_TABLE.T - (vp * base[b]).sum(-1, keepdim=True)  # (M, 8)
    dd = ((_OBJ_TABLE[None] - base[:, None]) ** 2).sum(-1)[b]  # (M, 8)
    alpha, res2 = _blend(vvp[:, None], proj, dd)
    best_res2, best = res2.min(dim=1)
    best_alpha = alpha.gather(1, best[:, None]).squeeze(1)
    explained = best_res2 <= cfg.other_threshold**2
    is_obj = explained & (best_alpha >= 0.5) & (vvp > cfg.foreground_threshold**2)
    is_other = ~explained & (vvp > cfg.other_min_distance**2)
    cls = torch.where(is_obj, best, torch.full_like(best, -1))
    classes[idx] = torch.where(is_other, torch.full_like(best, _OTHER_CLASS), cls)
    cover = _dead_zone(best_alpha, cfg.fringe_min_alpha)
    weight[idx] = torch.where(is_obj, cover, is_other.to(weight.dtype))
    return classes, weight


# ----------------------------------------------------------------------------- geometry


def _fringe(
    v: Tensor, base: Tensor, comp_map: Tensor, comp_cls: Tensor, cfg: ScorerConfig
) -> tuple[Tensor, Tensor, Tensor]:
    """Anti-aliased fringe pixels around objects, with their coverage.

    v: (N, 3) pixels minus background; comp_map: (B, S, S) object id, -1 for none;
    comp_cls: (K,) class of each object. Every other pixel within ``fringe_radius`` of an
    object is offered to the largest and the smallest id in its window (the two objects
    it can lie between) and goes to the one whose colour explains it better.
    Returns flat pixel indices (R,), object ids (R,) and coverage (R,).
    """
    B, S, _ = comp_map.shape
    r = cfg.fringe_radius
    empty = torch.zeros(0, dtype=torch.int64)
    if r <= 0:
        return empty, empty, torch.zeros(0)
    m = comp_map.to(torch.float32)[:, None]  # ids are far below 2^24: exact in float32
    k = 2 * r + 1

    def pool(x: Tensor) -> Tensor:  # separable k x k max filter
        return F.max_pool2d(F.max_pool2d(x, (k, 1), 1, (r, 0)), (1, k), 1, (0, r))

    lmax = pool(m).reshape(-1)
    lmin = -pool(-torch.where(m >= 0, m, torch.full_like(m, 2.0**24))).reshape(-1)
    idx = torch.nonzero((comp_map.reshape(-1) < 0) & (lmax >= 0)).squeeze(1)
    if idx.numel() == 0:
        return empty, empty, torch.zeros(0)
    cand = torch.stack([lmax[idx], lmin[idx]], dim=1).long()  # (R, 2)
    cls = comp_cls[cand]
    d = _OBJ_TABLE[cls.clamp_max(_OTHER_CLASS - 1)] - base[idx // (S * S)][:, None, :]
    vp = v[idx]
    alpha, res2 = _blend((vp * vp).sum(-1, keepdim=True), (d * vp[:, None]).sum(-1), (d * d).sum(-1))
    res2 = torch.where(cls < _OTHER_CLASS, res2, torch.full_like(res2, float("inf")))
    best_res2, best = res2.min(dim=1)
    w = _dead_zone(alpha.gather(1, best[:, None]).squeeze(1), cfg.fringe_min_alpha)
    keep = (w > 0) & (best_res2 <= cfg.other_threshold**2)
    return idx[keep], cand.gather(1, best[:, None]).squeeze(1)[keep], w[keep]


def _measure(rgb: Tensor, cfg: ScorerConfig) -> tuple[Tensor, dict[str, Tensor]]:
    """Background index (B,) and per-object measurements of a chunk (B, 3, S, S) in 0-255.

    Object rows (length K, any image): image, cls, count (core pixels), and moments
    weighted by coverage over core and fringe: m0 (area, px), mx, my (centroid, px, pixel
    centres at +0.5), central mu20, mu02, mu11, mu03, mu22. Components under the area
    floor are not objects; their pixels are offered to adjacent objects like the fringe.
    """
    B, _, S, _ = rgb.shape
    base, bg_index = _background(rgb)
    v = (rgb - base[:, :, None, None]).permute(0, 2, 3, 1).reshape(-1, 3)  # (N, 3)
    classes, core_w = _classify_pixels(v, base, S * S, cfg)
    fg, pixel_run, run_start, run_end, run_root = _label_runs(classes.view(B, S, S))
    roots, run_comp = torch.unique(run_root, return_inverse=True)
    count = torch.zeros(roots.numel(), dtype=torch.int64)
    count.index_add_(0, run_comp, run_end - run_start + 1)
    keep = count >= max(cfg.min_area_fraction * S * S, 2)
    K = int(keep.sum())
    if K == 0:
        return bg_index, {"image": torch.zeros(0, dtype=torch.int64)}
    root_pixel = run_start[roots[keep]]
    st = {"image": root_pixel // (S * S), "cls": classes[root_pixel], "count": count[keep]}
    pixel_comp = torch.where(keep, torch.cumsum(keep, 0) - 1, -1)[run_comp[pixel_run]]
    core = pixel_comp >= 0
    core_idx, core_comp = fg[core], pixel_comp[core]
    comp_map = torch.full((B * S * S,), -1, dtype=torch.int64)
    comp_map[core_idx] = core_comp
    ring_idx, ring_comp, ring_w = _fringe(v, base, comp_map.view(B, S, S), st["cls"], cfg)
    pix, cid = torch.cat([core_idx, ring_idx]), torch.cat([core_comp, ring_comp])
    w = torch.cat([core_w[core_idx], ring_w]).to(torch.float64)
    px = (pix % S).to(torch.float64) + 0.5
    py = ((pix // S) % S).to(torch.float64) + 0.5

    def mean(val: Tensor) -> Tensor:
        return torch.bincount(cid, weights=w * val, minlength=K) / st["m0"]

    st["m0"] = torch.bincount(cid, weights=w, minlength=K).clamp_min(1e-9)
    st["mx"], st["my"] = mean(px), mean(py)
    dx, dy = px - st["mx"][cid], py - st["my"][cid]
    dx2, dy2 = dx * dx, dy * dy
    st.update(mu20=mean(dx2), mu02=mean(dy2), mu11=mean(dx * dy), mu03=mean(dy2 * dy))
    st["mu22"] = mean(dx2 * dy2)
    return bg_index, st


def _shape_features(st: dict[str, Tensor]) -> Tensor:
    """(K, 3) moment invariants: compactness, vertical skew, cross kurtosis.

    Sampling positions at pixel centres adds ~1/12 px^2 to each variance (and its share
    to mu22); it is taken out first, which matters for objects a few pixels across.
      compactness  area / (4 pi sqrt(det Sigma)): circle 1, square 0.955, triangle 0.827, star 0.757
      skew         mu03 / mu02^1.5: 0 for the symmetric shapes, -0.566 for the apex-up triangle
      cross        mu22 / (mu20 mu02): circle 2/3, triangle 0.80, star 0.83, square 1
    """
    mu20, mu02 = (st["mu20"] - _Q).clamp_min(1e-3), (st["mu02"] - _Q).clamp_min(1e-3)
    det = (mu20 * mu02 - st["mu11"] ** 2).clamp_min(1e-6)
    compact = st["m0"] / (4 * math.pi * det.sqrt())
    skew = st["mu03"] / mu02**1.5
    cross = (st["mu22"] - (mu20 + mu02) * _Q - _Q * _Q) / (mu20 * mu02)
    return torch.stack([compact, skew, cross], dim=1).to(torch.float32)


def _classify_shapes(features: Tensor) -> Tensor:
    """Nearest prototype (scaled Euclidean) among circle, square, triangle, star: (K,) index."""
    diff = (features[:, None, :] - _PROTOTYPES[None]) / _FEATURE_SCALE
    return (diff * diff).sum(-1).argmin(dim=1)


def _placement(st: dict[str, Tensor], shapes: Tensor, side: int) -> tuple[Tensor, Tensor, Tensor]:
    """Centre x, centre y and extent per object, in canvas units (see the module docstring).

    Extent comes from the variance: the vertical one for the triangle (its horizontal one
    depends on the apex angle too), the mean of both axes otherwise.
    """
    mu20, mu02 = (st["mu20"] - _Q).clamp_min(0.0), (st["mu02"] - _Q).clamp_min(0.0)
    is_tri = shapes == SHAPE_NAMES.index("triangle")
    var = torch.where(is_tri, mu02, (mu20 + mu02) / 2)
    extent = (var / _VAR_PER_EXTENT2[shapes]).sqrt()
    cy = torch.where(is_tri, st["my"] - extent / 6, st["my"])
    return st["mx"] / side, cy / side, extent / side


# ----------------------------------------------------------------------------- scoring


def score_images(images: Tensor | Sequence[Any], config: ScorerConfig | None = None) -> list[SceneScore]:
    """Read back the background and the objects of each image.

    images: float tensor (B, 3, S, S) in [-1, 1], or a list of PIL images; square, S >= 16.
    Returns one SceneScore per image, in input order, objects largest first. Objects of
    colour ``other`` (no palette colour) are objects too and count in ``num_objects``.
    """
    cfg = config or ScorerConfig()
    batches = _as_batches(images)
    out: list[SceneScore] = [SceneScore("")] * sum(len(p) for p, _ in batches)
    for positions, rgb in batches:
        per_chunk = max(1, cfg.max_pixels_per_chunk // (rgb.shape[-1] ** 2))
        for start in range(0, rgb.shape[0], per_chunk):
            for j, scene in enumerate(_score_chunk(rgb[start : start + per_chunk], cfg)):
                out[positions[start + j]] = scene
    return out


def _score_chunk(rgb: Tensor, cfg: ScorerConfig) -> list[SceneScore]:
    S = rgb.shape[-1]
    bg_index, st = _measure(rgb, cfg)
    scenes = [SceneScore(background=_BG_NAMES[int(i)]) for i in bg_index]
    if st["image"].numel() == 0:
        return scenes
    shapes = _classify_shapes(_shape_features(st))
    cx, cy, extent = (t.tolist() for t in _placement(st, shapes, S))
    area = (st["m0"] / (S * S)).tolist()
    for k, (img, cls, shp) in enumerate(zip(st["image"].tolist(), st["cls"].tolist(), shapes.tolist())):
        scenes[img].objects.append(
            ObjectScore(
                color=_OBJ_NAMES[cls] if cls < _OTHER_CLASS else OTHER,
                shape=SHAPE_NAMES[shp],
                size=size_word_of(extent[k], cfg.size_tolerance),
                extent=extent[k],
                center=(cx[k], cy[k]),
                region=region_of(cx[k], cy[k]),
                area_fraction=area[k],
            )
        )
    for scene in scenes:
        scene.objects.sort(key=lambda o: -o.area_fraction)
        scene.num_objects = len(scene.objects)
    return scenes
