"""Exact-geometry scorer for images of the ``shapes`` dataset (``/work/shared/specs/shapes.md``).

The ``shapes`` dataset is flat-filled geometry on a plain background, so a generated image
can be read back without any learned model: find the background, split the foreground by
palette colour, label connected components, and measure each component's bounding box,
area and mass distribution. The reading gives colour, shape, size word, extent, centre and
region of every object, which is what caption fidelity (does ``a red star`` give one red
star?) and diversity (do the centres spread over the canvas?) are measured with.

Pipeline, vectorised over pixels (loops run only over a handful of components):

1. **Background**: the palette background nearest to the per-channel median of the border
   pixels. The measured median (not the palette value) is used as the base colour below,
   so a slightly tinted generated background still works.
2. **Pixel colours**: every pixel is explained as a blend ``bg + a * (c - bg)`` of the
   background with each object colour ``c`` (``a`` clamped to ``[0, 1]``). The colour with
   the smallest residual wins; this is the "nearest palette colour" rule made robust to the
   anti-aliased fringes of the 4x-supersampled renders, whose mixed pixels sit on exactly
   these segments (a red/white fringe pixel is closer to pink than to red, but lies on the
   red-white segment). A pixel is foreground of that colour when ``a >= 0.5`` (so areas and
   bounding boxes are unbiased) and it differs from the background by more than
   ``foreground_threshold``; a pixel far from the background that no blend explains is
   ``other``.
3. **Components**: 4-connected components of equal colour, by min-label propagation over
   an edge list with pointer jumping (no scipy). Components under ``min_area_fraction`` of
   the canvas (about 0.3 %: leftover fringes, noise specks) are dropped.
4. **Geometry** per component: fill ratio ``area / bbox area`` (square 1, circle pi/4,
   triangle 1/2, star with inner radius 0.4: 0.342), the share of the area in the top half
   of the box (square and circle 0.5, star 0.44, apex-up triangle 0.25) and the box aspect
   (star 1.05, others 1); the nearest of four prototypes in that feature space is the shape.

Centres follow the spec's ground truth: the bounding-box centre for circle, square and
triangle, and for the star its circle centre, measured as the area centroid (the star's
five-fold symmetry puts its centroid exactly on the circle centre, whereas its box centre
sits 0.095 R too high). Extent is ``max(box w, box h) / side``, except for the star whose
extent is its outer diameter, ``box w / sin 72 deg``. Coordinates are x right, y down, in
``[0, 1]``. All colour numbers are sRGB 0-255.
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

from unclip.errors import InputError

__all__ = [
    "BACKGROUND_RGB",
    "OBJECT_RGB",
    "SHAPE_NAMES",
    "OTHER",
    "ScorerConfig",
    "ObjectScore",
    "SceneScore",
    "score_images",
    "label_components",
    "region_of",
    "size_word_of",
    "score_prompt_match",
    "summarise",
    "match_truth",
]

# Palette copied from the spec (sRGB 0-255); a test checks it against unclip.data.shapes.
BACKGROUND_RGB: dict[str, tuple[int, int, int]] = {
    "white": (240, 240, 240),
    "black": (24, 24, 24),
    "gray": (128, 128, 128),
}
OBJECT_RGB: dict[str, tuple[int, int, int]] = {
    "red": (215, 40, 40),
    "orange": (240, 140, 30),
    "yellow": (240, 210, 40),
    "green": (50, 170, 60),
    "cyan": (40, 190, 210),
    "blue": (40, 80, 220),
    "purple": (140, 60, 190),
    "pink": (240, 120, 180),
}
SHAPE_NAMES: tuple[str, ...] = ("circle", "square", "triangle", "star")
OTHER = "other"  # colour of a component no palette blend explains

# Spec constants.
SMALL_RANGE = (0.18, 0.26)
LARGE_RANGE = (0.38, 0.50)
CENTER_HALF_WIDTH = 0.15
STAR_INNER_RATIO = 0.4
_SIN72 = math.sin(math.radians(72.0))  # star box width = 2 R sin 72 deg

# Shape prototypes in (compactness, vertical skew, cross kurtosis), see _shape_features;
# the values are those of the exact shapes (measured on 4000 px renders).
_PROTOTYPES = torch.tensor(
    [
        [1.000, 0.000, 0.667],  # circle
        [0.955, 0.000, 1.000],  # square
        [0.827, -0.566, 0.800],  # triangle
        [0.757, 0.000, 0.832],  # star
    ]
)
# How far each feature may wobble on a few-pixel object; divides the prototype distance.
_FEATURE_SCALE = torch.tensor([0.03, 0.15, 0.08])


@dataclass(frozen=True)
class ScorerConfig:
    """Thresholds of the scorer; colour distances are Euclidean in sRGB 0-255 units.

    foreground_threshold: least distance from the background for a foreground pixel
        (well above the noise of a generated background, well below half the distance
        of the nearest object colour, purple on gray at 93).
    other_threshold: largest distance from the nearest background-to-colour segment for a
        pixel to take that colour; beyond it the pixel is ``other`` (half the smallest gap
        between two palette colours, orange-yellow at 71, is 35; generated colours drift,
        so a little more is allowed).
    other_min_distance: least distance from the background for an ``other`` pixel.
    min_area_fraction: components smaller than this share of the canvas are dropped.
    size_tolerance: how far outside the spec's size ranges an extent may fall and still
        get the size word (the ranges are [0.18, 0.26] and [0.38, 0.50]).
    max_pixels_per_chunk: images are processed in chunks of at most this many pixels.
    """

    foreground_threshold: float = 24.0
    other_threshold: float = 48.0
    other_min_distance: float = 48.0
    min_area_fraction: float = 0.003
    size_tolerance: float = 0.03
    fringe_radius: int = 2
    fringe_min_alpha: float = 0.15
    max_pixels_per_chunk: int = 1 << 22


@dataclass
class ObjectScore:
    """One object read back from an image.

    color: palette name or ``"other"``; shape: one of SHAPE_NAMES; size: ``"small"``,
    ``"large"`` or ``"neither"``; extent: box side over canvas side (star: outer diameter);
    center: (x, y) in [0, 1], x right, y down; region: spec region of the centre;
    area_fraction: component pixels over canvas pixels.
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
    """Everything read back from one image; ``objects`` are sorted largest first."""

    background: str
    objects: list[ObjectScore] = field(default_factory=list)
    num_objects: int = 0

    @property
    def main(self) -> ObjectScore | None:
        """The largest object, or None for an empty image."""
        return self.objects[0] if self.objects else None


def region_of(x: float, y: float) -> str:
    """Spec region of a centre: ``center`` if both offsets from 0.5 are below 0.15, else the quadrant."""
    if abs(x - 0.5) < CENTER_HALF_WIDTH and abs(y - 0.5) < CENTER_HALF_WIDTH:
        return "center"
    return ("top" if y < 0.5 else "bottom") + " " + ("left" if x < 0.5 else "right")


def size_word_of(extent: float, tolerance: float = 0.03) -> str:
    """``small`` / ``large`` if ``extent`` is within ``tolerance`` of the spec range, else ``neither``."""
    if SMALL_RANGE[0] - tolerance <= extent <= SMALL_RANGE[1] + tolerance:
        return "small"
    if LARGE_RANGE[0] - tolerance <= extent <= LARGE_RANGE[1] + tolerance:
        return "large"
    return "neither"


# ----------------------------------------------------------------------------- input


def _as_batches(images: Tensor | Sequence[Any]) -> list[tuple[list[int], Tensor]]:
    """Turn the input into groups of same-sized images, float (n, 3, S, S) in 0-255.

    Returns (positions in the input, tensor) pairs so results can be put back in order.
    """
    if isinstance(images, Tensor):
        if images.dim() == 3:
            images = images.unsqueeze(0)
        if images.dim() != 4 or images.shape[1] != 3:
            raise InputError(
                f"images: expected a float tensor (B, 3, H, W) in [-1, 1], got shape "
                f"{tuple(images.shape)}; pass RGB images, channels first"
            )
        if not images.is_floating_point():
            raise InputError(
                f"images: expected a float tensor in [-1, 1], got dtype {images.dtype}; "
                "convert with x.float() / 127.5 - 1"
            )
        _check_side(images.shape[-2], images.shape[-1], "images")
        rgb = (images.detach().to("cpu", torch.float32).clamp(-1.0, 1.0) + 1.0) * 127.5
        return [(list(range(images.shape[0])), rgb)]
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
        raise InputError(
            f"{name}: expected a square image with side >= 16, got {h}x{w}; resize or pad it"
        )


# ----------------------------------------------------------------------------- pixels

_BG_TABLE = torch.tensor(list(BACKGROUND_RGB.values()), dtype=torch.float32)  # (3, 3)
_OBJ_TABLE = torch.tensor(list(OBJECT_RGB.values()), dtype=torch.float32)  # (8, 3)
_BG_NAMES = list(BACKGROUND_RGB)
_OBJ_NAMES = list(OBJECT_RGB)
_OTHER_CLASS = len(_OBJ_NAMES)


def _background(rgb: Tensor) -> tuple[Tensor, Tensor]:
    """Median border colour (B, 3) and the index (B,) of the nearest palette background."""
    border = torch.cat(
        [rgb[:, :, 0, :], rgb[:, :, -1, :], rgb[:, :, 1:-1, 0], rgb[:, :, 1:-1, -1]], dim=2
    )  # (B, 3, 4S - 4)
    base = border.median(dim=2).values
    return base, torch.cdist(base, _BG_TABLE).argmin(dim=1)


def _blend(v: Tensor, d: Tensor) -> tuple[Tensor, Tensor]:
    """Fit pixels as background-colour blends.

    v: (M, 3) pixel minus background; d: (M, K, 3) colour minus background for K
    candidate colours. Returns alpha (M, K), the unclamped blend weight <v, d> / |d|^2,
    and res2 (M, K), the squared distance from v to the segment {a d : 0 <= a <= 1}.
    """
    dd = (d * d).sum(-1).clamp_min(1.0)
    proj = (d * v[:, None, :]).sum(-1)
    alpha = proj / dd
    a = alpha.clamp(0.0, 1.0)
    res2 = ((v * v).sum(-1, keepdim=True) - 2 * a * proj + a * a * dd).clamp_min(0.0)
    return alpha, res2


def _classify_pixels(v: Tensor, dirs: Tensor, cfg: ScorerConfig) -> tuple[Tensor, Tensor]:
    """Per-pixel colour class and coverage.

    v: (B, S, S, 3) pixels minus the background colour; dirs: (B, 8, 3) object colours
    minus the background colour. Returns classes (B, S, S) int64 (object colour 0..7,
    8 for ``other``, -1 for background or fringe) and weight (B, S, S) float, the
    coverage of the pixel by its class (blend weight, 1 for ``other``, 0 elsewhere).
    Only pixels far enough from the background are fitted, which is a small share.
    """
    B, S, _, _ = v.shape
    classes = torch.full((B * S * S,), -1, dtype=torch.int64)
    weight = torch.zeros(B * S * S)
    vv = (v * v).sum(-1).reshape(-1)
    least = min(cfg.foreground_threshold, cfg.other_min_distance)
    idx = torch.nonzero(vv > least * least).squeeze(1)
    if idx.numel() == 0:
        return classes.view(B, S, S), weight.view(B, S, S)
    vp = v.reshape(-1, 3)[idx]
    alpha, res2 = _blend(vp, dirs[idx // (S * S)])
    best_res2, best = res2.min(dim=1)
    best_alpha = alpha.gather(1, best[:, None]).squeeze(1)
    dist = vv[idx].sqrt()
    explained = best_res2 <= cfg.other_threshold**2
    is_obj = explained & (best_alpha >= 0.5) & (dist > cfg.foreground_threshold)
    is_other = ~explained & (dist > cfg.other_min_distance)
    cls = torch.where(is_obj, best, torch.full_like(best, -1))
    cls = torch.where(is_other, torch.full_like(best, _OTHER_CLASS), cls)
    w = torch.where(is_obj, _dead_zone(best_alpha, cfg.fringe_min_alpha), is_other.float())
    classes[idx] = cls
    weight[idx] = w
    return classes.view(B, S, S), weight.view(B, S, S)


def _dead_zone(alpha: Tensor, low: float) -> Tensor:
    """Coverage from a blend weight: clamp to [0, 1], snap values within ``low`` of 0 or 1.

    Snapping keeps the noise of generated or noisy images out of the moments: a flat
    interior reads exactly 1 and a flat background exactly 0.
    """
    a = alpha.clamp(0.0, 1.0)
    a = torch.where(a > 1.0 - low, torch.ones_like(a), a)
    return torch.where(a < low, torch.zeros_like(a), a)


def _fringe(
    v: Tensor, dirs: Tensor, labels: Tensor, classes: Tensor, cfg: ScorerConfig
) -> tuple[Tensor, Tensor, Tensor]:
    """Anti-aliased fringe pixels next to components, with their coverage.

    Unlabelled pixels within ``fringe_radius`` (Chebyshev) of a component are offered to
    the nearest components by label (the largest and the smallest label in the window,
    which covers the two objects a pixel can lie between) and go to the one whose colour
    explains them best. Returns flat pixel indices (R,), their labels (R,) and coverage (R,).
    """
    B, S, _, _ = v.shape
    r = cfg.fringe_radius
    empty = torch.zeros(0, dtype=torch.int64)
    if r <= 0 or not bool((labels >= 0).any()):
        return empty, empty, torch.zeros(0)
    lab = labels.to(torch.float64)[:, None]  # labels < 2^53, exact in float64
    big = float(labels.numel())
    lmax = F.max_pool2d(lab, 2 * r + 1, 1, r).squeeze(1)
    lmin = -F.max_pool2d(-torch.where(lab >= 0, lab, big), 2 * r + 1, 1, r).squeeze(1)
    ring = (labels < 0) & (lmax >= 0)
    idx = torch.nonzero(ring.reshape(-1)).squeeze(1)
    if idx.numel() == 0:
        return empty, empty, torch.zeros(0)
    cand = torch.stack([lmax.reshape(-1)[idx], lmin.reshape(-1)[idx]], dim=1).long()  # (R, 2)
    cand_cls = classes.reshape(-1)[cand]  # class of each candidate's root pixel
    is_obj = cand_cls < _OTHER_CLASS
    d = dirs[(idx // (S * S))[:, None], cand_cls.clamp_max(_OTHER_CLASS - 1)]  # (R, 2, 3)
    alpha, res2 = _blend(v.reshape(-1, 3)[idx], d)
    res2 = torch.where(is_obj, res2, torch.full_like(res2, float("inf")))
    best_res2, best = res2.min(dim=1)
    w = _dead_zone(alpha.gather(1, best[:, None]).squeeze(1), cfg.fringe_min_alpha)
    w = torch.where(best_res2 <= cfg.other_threshold**2, w, torch.zeros_like(w))
    keep = w > 0
    return idx[keep], cand.gather(1, best[:, None]).squeeze(1)[keep], w[keep]


# ----------------------------------------------------------------------------- labels


def label_components(classes: Tensor) -> Tensor:
    """4-connected components of equal class, vectorised.

    classes: (B, H, W) int, negative where there is no object. Returns (B, H, W) int64
    labels: for every pixel of a component the same id, unique over the whole batch
    (the flat index ``b*H*W + y*W + x`` of one of its pixels); -1 where ``classes`` < 0.

    Min-label propagation over the list of same-class neighbour pairs, each round
    followed by pointer jumping (``lab = lab[lab]``), which shortens label chains
    geometrically, so a component of diameter D converges in far fewer than D rounds.
    """
    if classes.dim() != 3:
        raise InputError(f"classes: expected (B, H, W), got shape {tuple(classes.shape)}")
    fg = classes >= 0
    labels = torch.full(classes.shape, -1, dtype=torch.int64)
    n = int(fg.sum())
    if n == 0:
        return labels
    local = torch.full(classes.shape, -1, dtype=torch.int64)
    local[fg] = torch.arange(n)
    us, vs = [], []
    for a, b, ca, cb in (
        (local[:, :, :-1], local[:, :, 1:], classes[:, :, :-1], classes[:, :, 1:]),
        (local[:, :-1, :], local[:, 1:, :], classes[:, :-1, :], classes[:, 1:, :]),
    ):
        m = (a >= 0) & (ca == cb)
        us.append(a[m])
        vs.append(b[m])
    u = torch.cat(us + vs)
    v = torch.cat(vs + us)  # both directions
    lab = torch.arange(n)
    while True:
        new = lab.scatter_reduce(0, u, lab[v], reduce="amin", include_self=True)
        new = new[new]
        new = new[new]
        if torch.equal(new, lab):
            break
        lab = new
    flat_index = torch.nonzero(fg.reshape(-1)).squeeze(1)  # local id -> flat pixel index
    labels[fg] = flat_index[lab]
    return labels


# ----------------------------------------------------------------------------- geometry


def _measure(rgb: Tensor, cfg: ScorerConfig) -> tuple[Tensor, dict[str, Tensor]]:
    """Background index (B,) and per-component measurements of a chunk (B, 3, S, S) 0-255.

    Component rows (length K, any image): image, cls, count (core pixels), x0, x1, y0, y1
    (inclusive core box), and coverage-weighted moments m0, mx, my (centroid, pixel
    units, pixel centres at +0.5), mu20, mu02, mu11, mu03, mu22 (central).
    """
    B, _, S, _ = rgb.shape
    base, bg_index = _background(rgb)
    v = (rgb - base[:, :, None, None]).permute(0, 2, 3, 1).contiguous()  # (B, S, S, 3)
    dirs = _OBJ_TABLE[None] - base[:, None, :]  # (B, 8, 3)
    classes, core_w = _classify_pixels(v, dirs, cfg)
    labels = label_components(classes)
    core_idx = torch.nonzero(labels.reshape(-1) >= 0).squeeze(1)
    if core_idx.numel() == 0:
        return bg_index, {"image": torch.zeros(0, dtype=torch.int64)}
    core_lab = labels.reshape(-1)[core_idx]
    uniq, comp, count = torch.unique(core_lab, return_inverse=True, return_counts=True)
    K = uniq.numel()
    x, y = core_idx % S, (core_idx // S) % S

    def reduce(val: Tensor, how: str) -> Tensor:
        init = torch.full((K,), S if how == "amin" else -1, dtype=torch.int64)
        return init.scatter_reduce(0, comp, val, reduce=how, include_self=True)

    st = {
        "image": uniq // (S * S),
        "cls": classes.reshape(-1)[uniq],
        "count": count,
        "x0": reduce(x, "amin"),
        "x1": reduce(x, "amax"),
        "y0": reduce(y, "amin"),
        "y1": reduce(y, "amax"),
    }
    # Coverage-weighted moments over core and fringe pixels.
    ring_idx, ring_lab, ring_w = _fringe(v, dirs, labels, classes, cfg)
    pix = torch.cat([core_idx, ring_idx])
    cid = torch.cat([comp, torch.searchsorted(uniq, ring_lab)])
    w = torch.cat([core_w.reshape(-1)[core_idx], ring_w]).to(torch.float64)
    px = (pix % S).to(torch.float64) + 0.5
    py = ((pix // S) % S).to(torch.float64) + 0.5

    def wsum(val: Tensor) -> Tensor:
        return torch.bincount(cid, weights=w * val, minlength=K)

    m0 = torch.bincount(cid, weights=w, minlength=K).clamp_min(1e-9)
    mx, my = wsum(px) / m0, wsum(py) / m0
    dx, dy = px - mx[cid], py - my[cid]
    st.update(
        m0=m0,
        mx=mx,
        my=my,
        mu20=wsum(dx * dx) / m0,
        mu02=wsum(dy * dy) / m0,
        mu11=wsum(dx * dy) / m0,
        mu03=wsum(dy * dy * dy) / m0,
        mu22=wsum(dx * dx * dy * dy) / m0,
    )
    keep = count >= cfg.min_area_fraction * S * S
    return bg_index, {k: t[keep] for k, t in st.items()}


def _shape_features(st: dict[str, Tensor]) -> Tensor:
    """(K, 3) moment invariants: compactness, vertical skew, cross kurtosis.

    Sampling a shape on the pixel grid adds about 1/12 px^2 to each variance (the
    rounding of positions to pixel centres); that is taken out first, which matters for
    objects a few pixels across.
      compactness  area / (4 pi sqrt(det Sigma)): circle 1, square 0.955, triangle 0.827, star 0.757
      skew         mu03 / mu02^1.5: 0 for symmetric shapes, -0.566 for the apex-up triangle
      cross        mu22 / (mu20 mu02): square 1, circle 2/3, triangle 0.80, star 0.83
    """
    q = 1.0 / 12.0
    mu20 = (st["mu20"] - q).clamp_min(1e-3)
    mu02 = (st["mu02"] - q).clamp_min(1e-3)
    det = (mu20 * mu02 - st["mu11"] ** 2).clamp_min(1e-6)
    mu22 = st["mu22"] - (mu20 + mu02) * q - q * q
    compact = st["m0"] / (4 * math.pi * det.sqrt())
    skew = st["mu03"] / mu02**1.5
    cross = mu22 / (mu20 * mu02)
    return torch.stack([compact, skew, cross], dim=1).to(torch.float32)


def _classify_shapes(features: Tensor) -> Tensor:
    """Nearest prototype (scaled Euclidean) among circle, square, triangle, star -> (K,) index."""
    diff = (features[:, None, :] - _PROTOTYPES[None]) / _FEATURE_SCALE
    return (diff * diff).sum(-1).argmin(dim=1)


# ----------------------------------------------------------------------------- scoring


def score_images(
    images: Tensor | Sequence[Any], config: ScorerConfig | None = None
) -> list[SceneScore]:
    """Read back background and objects of each image.

    images: float tensor (B, 3, S, S) in [-1, 1], or a list of PIL images; square, S >= 16.
    Returns one SceneScore per image, in input order, objects sorted by area (largest first).
    """
    cfg = config or ScorerConfig()
    batches = _as_batches(images)
    out: list[SceneScore | None] = [None] * sum(len(p) for p, _ in batches)
    for positions, rgb in batches:
        side = rgb.shape[-1]
        per_chunk = max(1, cfg.max_pixels_per_chunk // (side * side))
        for start in range(0, rgb.shape[0], per_chunk):
            for j, scene in enumerate(_score_chunk(rgb[start : start + per_chunk], cfg)):
                out[positions[start + j]] = scene
    return out  # type: ignore[return-value]


def _score_chunk(rgb: Tensor, cfg: ScorerConfig) -> list[SceneScore]:
    S = rgb.shape[-1]
    bg_index, st = _measure(rgb, cfg)
    scenes = [SceneScore(background=_BG_NAMES[int(i)]) for i in bg_index]
    if st["image"].numel() == 0:
        return scenes
    shapes = _classify_shapes(_shape_features(st))
    geo = _placement(st, shapes, S)
    for k in range(st["image"].numel()):
        cls = int(st["cls"][k])
        e = float(geo["extent"][k])
        c = (float(geo["cx"][k]), float(geo["cy"][k]))
        scenes[int(st["image"][k])].objects.append(
            ObjectScore(
                color=_OBJ_NAMES[cls] if cls < _OTHER_CLASS else OTHER,
                shape=SHAPE_NAMES[int(shapes[k])],
                size=size_word_of(e, cfg.size_tolerance),
                extent=e,
                center=c,
                region=region_of(*c),
                area_fraction=float(st["count"][k]) / (S * S),
            )
        )
    for scene in scenes:
        scene.objects.sort(key=lambda o: -o.area_fraction)
        scene.num_objects = len(scene.objects)
    return scenes


# Variance of each shape per unit extent squared (extent: box side; star: outer diameter).
_VAR_PER_EXTENT2 = torch.tensor(
    [
        1.0 / 16.0,  # circle: R^2 / 4 with R = e / 2
        1.0 / 12.0,  # square
        1.0 / 18.0,  # triangle, vertical: h^2 / 18
        0.12363 / 4.0,  # star: 0.12363 R^2 per axis, R = e / 2
    ],
    dtype=torch.float64,
)


def _placement(st: dict[str, Tensor], shapes: Tensor, side: int) -> dict[str, Tensor]:
    """Centre (x, y) and extent per component, in canvas units, from the moments.

    The coverage-weighted moments are sub-pixel exact, unlike the thresholded box. The
    centroid is the spec's centre for circle, square and star (the star's circle centre);
    the apex-up triangle's centroid lies h/6 below its box centre. Extent comes from the
    variance: the vertical one for the triangle, the mean of both axes otherwise.
    """
    q = 1.0 / 12.0
    mu20 = (st["mu20"] - q).clamp_min(0.0)
    mu02 = (st["mu02"] - q).clamp_min(0.0)
    is_tri = shapes == SHAPE_NAMES.index("triangle")
    var = torch.where(is_tri, mu02, (mu20 + mu02) / 2)
    extent = (var / _VAR_PER_EXTENT2[shapes]).sqrt()
    cy = torch.where(is_tri, st["my"] - extent / 6, st["my"])
    return {"cx": st["mx"] / side, "cy": cy / side, "extent": extent / side}

# ----------------------------------------------------------------------------- metrics


def score_prompt_match(score: SceneScore, color: str | None, shape: str | None) -> dict[str, bool]:
    """Does the image show what a one-object prompt asked for?

    The main (largest) object is compared; ``None`` for colour or shape counts as right.
    Returns color_ok, shape_ok, single_object (exactly one object found) and both_ok
    (colour and shape right on the main object).
    """
    main = score.main
    color_ok = main is not None and (color is None or main.color == color)
    shape_ok = main is not None and (shape is None or main.shape == shape)
    return {
        "color_ok": bool(color_ok),
        "shape_ok": bool(shape_ok),
        "single_object": score.num_objects == 1,
        "both_ok": bool(color_ok and shape_ok),
    }


def _prompt_color_shape(attrs: dict[str, Any]) -> tuple[str | None, str | None]:
    if "objects" in attrs and attrs["objects"]:
        first = attrs["objects"][0]
        return first.get("color"), first.get("shape")
    return attrs.get("color"), attrs.get("shape")


def summarise(scores: Sequence[SceneScore], prompts_attrs: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Aggregate prompt fidelity and spatial diversity over a set of generated images.

    prompts_attrs: per image, ``{"color": ..., "shape": ...}`` of the prompt, or a dataset
    attribute dict with ``"objects"`` (its first object is used).
    Returns color_accuracy, shape_accuracy, single_object_rate, both_right_rate (shares of
    images), mean_num_objects, center_std_x and center_std_y (population std of the main
    object's centre over the images that have one; 0.29 is uniform over [0, 1], 0 is every
    image alike), and n.
    """
    if len(scores) != len(prompts_attrs):
        raise InputError(
            f"prompts_attrs: expected one entry per score ({len(scores)}), got "
            f"{len(prompts_attrs)}; pass the prompt attributes of every scored image"
        )
    n = len(scores)
    if n == 0:
        raise InputError("scores: empty; score at least one image before summarising")
    matches = [score_prompt_match(s, *_prompt_color_shape(a)) for s, a in zip(scores, prompts_attrs)]
    centres = np.array([s.main.center for s in scores if s.main is not None], dtype=np.float64)
    std = centres.std(axis=0) if len(centres) else np.zeros(2)
    return {
        "n": float(n),
        "color_accuracy": sum(m["color_ok"] for m in matches) / n,
        "shape_accuracy": sum(m["shape_ok"] for m in matches) / n,
        "single_object_rate": sum(m["single_object"] for m in matches) / n,
        "both_right_rate": sum(m["both_ok"] for m in matches) / n,
        "mean_num_objects": sum(s.num_objects for s in scores) / n,
        "center_std_x": float(std[0]),
        "center_std_y": float(std[1]),
    }


def match_truth(
    score: SceneScore, truth_objects: Sequence[dict[str, Any]]
) -> list[tuple[dict[str, Any], ObjectScore | None]]:
    """Pair each ground-truth object with the found object nearest its centre (each used once).

    truth_objects: dicts with a ``center`` (x, y). Greedy by distance, which is exact for
    the dataset's well-separated objects. Returns (truth, found or None) pairs in input order.
    """
    pairs = []
    for ti, t in enumerate(truth_objects):
        tx, ty = t["center"]
        for oi, o in enumerate(score.objects):
            pairs.append((math.hypot(o.center[0] - tx, o.center[1] - ty), ti, oi))
    pairs.sort()
    found: dict[int, ObjectScore] = {}
    used: set[int] = set()
    for _, ti, oi in pairs:
        if ti not in found and oi not in used:
            found[ti] = score.objects[oi]
            used.add(oi)
    return [(t, found.get(i)) for i, t in enumerate(truth_objects)]
