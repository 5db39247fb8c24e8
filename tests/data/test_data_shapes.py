"""The shapes dataset against /work/shared/specs/shapes.md (version 1).

These tests restate the spec independently of the implementation (templates, palette,
geometry, region and relation rules) and check generated scenes and pixels against it.
"""

from __future__ import annotations

import hashlib
import json
import math

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from unclip.data import shapes as S
from unclip.errors import DataError

SPEC_BACKGROUNDS = {"white": (240, 240, 240), "black": (24, 24, 24), "gray": (128, 128, 128)}
SPEC_COLORS = {
    "red": (215, 40, 40),
    "orange": (240, 140, 30),
    "yellow": (240, 210, 40),
    "green": (50, 170, 60),
    "cyan": (40, 190, 210),
    "blue": (40, 80, 220),
    "purple": (140, 60, 190),
    "pink": (240, 120, 180),
}
SPEC_HELD_OUT = {("green", "star"), ("pink", "square"), ("orange", "circle"), ("cyan", "triangle")}
N_SCENES = 2000
EPS = 1e-9


@pytest.fixture(scope="module")
def train_scenes() -> list[S.Scene]:
    return [S.sample_scene("train", i, 0) for i in range(N_SCENES)]


@pytest.fixture(scope="module")
def test_scenes() -> list[S.Scene]:
    return [S.sample_scene("test", i, 0) for i in range(N_SCENES)]


def spec_region(x: float, y: float) -> str:
    if abs(x - 0.5) < 0.15 and abs(y - 0.5) < 0.15:
        return "center"
    return ("top" if y < 0.5 else "bottom") + " " + ("left" if x < 0.5 else "right")


def allowed_captions(scene: S.Scene) -> set[str]:
    """Every caption the spec allows for this scene's ground truth."""
    bg = scene.background
    if len(scene.objects) == 1:
        o = scene.objects[0]
        return {
            f"a {o.size} {o.color} {o.shape}",
            f"a {o.color} {o.shape} on a {bg} background",
            f"a {o.size} {o.color} {o.shape} on a {bg} background",
            f"{o.color} {o.shape}",
            f"a {o.color} {o.shape} in the {spec_region(*o.center)}",
        }
    a, b = scene.objects
    bodies = set()
    for p, q in ((a, b), (b, a)):
        bodies.add(f"a {p.color} {p.shape} and a {q.color} {q.shape}")
        dx, dy = p.center[0] - q.center[0], p.center[1] - q.center[1]
        if abs(dx) > 0.25:
            bodies.add(f"a {p.color} {p.shape} {'left of' if dx < 0 else 'right of'} a {q.color} {q.shape}")
        if abs(dy) > 0.25:
            bodies.add(f"a {p.color} {p.shape} {'above' if dy < 0 else 'below'} a {q.color} {q.shape}")
    return bodies | {t + f" on a {bg} background" for t in bodies}


# ------------------------------------------------------------------------ constants


def test_palette_and_vocabulary_match_spec():
    assert S.BACKGROUNDS == SPEC_BACKGROUNDS
    assert S.COLORS == SPEC_COLORS
    assert set(S.SHAPES) == {"circle", "square", "triangle", "star"}
    assert S.SIZES == {"small": (0.18, 0.26), "large": (0.38, 0.50)}
    assert set(S.HELD_OUT_PAIRS) == SPEC_HELD_OUT
    assert S.SPLITS == ("train", "val", "test")


def test_single_object_prompts():
    prompts = S.single_object_prompts()
    assert len(prompts) == 32 and len(set(prompts)) == 32
    assert set(prompts) == {f"a {c} {s}" for c in SPEC_COLORS for s in S.SHAPES}
    assert set(S.held_out_prompts()) == {f"a {c} {s}" for c, s in SPEC_HELD_OUT}


# ------------------------------------------------------------------------ layout


def test_sizes_margins_regions(train_scenes):
    for sc in train_scenes:
        assert sc.background in SPEC_BACKGROUNDS
        assert 1 <= len(sc.objects) <= 2
        for o in sc.objects:
            lo, hi = {"small": (0.18, 0.26), "large": (0.38, 0.50)}[o.size]
            assert lo - EPS <= o.extent <= hi + EPS
            x, y = o.center
            for v in (x, y):  # box centre +- extent/2 within the 0.04 margin
                assert v - o.extent / 2 >= 0.04 - EPS and v + o.extent / 2 <= 0.96 + EPS
            x0, y0, x1, y1 = o.drawn_bbox()
            assert min(x0, y0) >= 0.04 - EPS and max(x1, y1) <= 0.96 + EPS
            assert o.region == spec_region(x, y)
            assert o.color in SPEC_COLORS and o.shape in S.SHAPES


def test_two_objects_never_touch(train_scenes):
    twos = [sc for sc in train_scenes if len(sc.objects) == 2]
    assert twos
    for sc in twos:
        a, b = sc.objects
        reach = (a.extent + b.extent) / 2
        gap = max(abs(a.center[0] - b.center[0]) - reach, abs(a.center[1] - b.center[1]) - reach)
        assert gap >= 0.04 - EPS
        assert (a.color, a.shape) != (b.color, b.shape)


def test_half_of_train_images_have_two_objects(train_scenes):
    frac = sum(len(sc.objects) == 2 for sc in train_scenes) / len(train_scenes)
    assert 0.45 < frac < 0.55


def test_sizes_and_large_pairs_occur(train_scenes):
    sizes = [tuple(o.size for o in sc.objects) for sc in train_scenes]
    assert ("large", "large") in sizes and ("small", "small") in sizes
    singles = [s[0] for s in sizes if len(s) == 1]
    assert 0.4 < singles.count("large") / len(singles) < 0.6


def test_centres_spread_over_allowed_area(train_scenes):
    xs = np.array([sc.objects[0].center[0] for sc in train_scenes if len(sc.objects) == 1])
    ys = np.array([sc.objects[0].center[1] for sc in train_scenes if len(sc.objects) == 1])
    assert abs(xs.mean() - 0.5) < 0.03 and abs(ys.mean() - 0.5) < 0.03
    assert xs.min() < 0.2 and xs.max() > 0.8 and ys.min() < 0.2 and ys.max() > 0.8


# ------------------------------------------------------------------------ captions


def test_every_caption_is_an_allowed_template_instance(train_scenes, test_scenes):
    for sc in train_scenes + test_scenes:
        assert sc.caption in allowed_captions(sc), sc
        assert sc.caption == sc.caption.lower()


def test_caption_names_objects_in_attribute_order_and_relation_agrees(train_scenes):
    n_rel = 0
    for sc in train_scenes:
        p = S.parse_caption(sc.caption)
        assert p is not None
        assert [(o["color"], o["shape"]) for o in p["objects"]] == [(o.color, o.shape) for o in sc.objects]
        if p["relation"]:
            n_rel += 1
            a, b = sc.objects
            axis = 0 if p["relation"] in ("left of", "right of") else 1
            diff = a.center[axis] - b.center[axis]
            assert abs(diff) > 0.25
            want = {("left of", True), ("right of", False), ("above", True), ("below", False)}
            assert (p["relation"], diff < 0) in want
        assert S.caption_consistent(sc)
    assert n_rel > 100


def test_all_templates_are_used(train_scenes):
    seen = {S.parse_caption(sc.caption)["template"] for sc in train_scenes}
    assert seen == {"size", "background", "size_background", "bare", "region", "and", "relation"}
    two = [sc.caption for sc in train_scenes if len(sc.objects) == 2]
    assert any(c.endswith("background") for c in two) and any(not c.endswith("background") for c in two)
    regions = {o.region for sc in train_scenes for o in sc.objects}
    assert regions == set(S.REGIONS)


def test_parse_caption_rejects_other_text():
    assert S.parse_caption("a red dog") is None
    assert S.parse_caption("an orange circle") is None
    assert S.parse_caption("an orange circle", allow_prompt=True)["objects"] == [{"color": "orange", "shape": "circle"}]
    assert S.parse_caption("a blue star left of a red circle")["relation"] == "left of"


# ------------------------------------------------------------------ held-out pairs


def test_train_never_contains_held_out_pairs(train_scenes):
    for sc in train_scenes:
        for o in sc.objects:
            assert (o.color, o.shape) not in SPEC_HELD_OUT
    seen_colors = {o.color for sc in train_scenes for o in sc.objects}
    assert seen_colors == set(SPEC_COLORS)  # the words themselves are all seen


def test_test_and_val_contain_held_out_pairs(test_scenes):
    pairs = {(o.color, o.shape) for sc in test_scenes for o in sc.objects}
    assert SPEC_HELD_OUT <= pairs
    val_pairs = {(o.color, o.shape) for i in range(600) for o in S.sample_scene("val", i, 0).objects}
    assert SPEC_HELD_OUT & val_pairs


# ------------------------------------------------------------------ determinism


def test_determinism_and_seed_dependence():
    a = S.render_array(S.sample_scene("train", 7, 3), 32)
    b = S.render_array(S.sample_scene("train", 7, 3), 32)
    assert np.array_equal(a, b)
    assert S.sample_scene("train", 7, 3) == S.sample_scene("train", 7, 3)
    differ = sum(S.sample_scene("train", i, 0) != S.sample_scene("train", i, 1) for i in range(20))
    assert differ == 20
    assert sum(S.sample_scene("train", i, 0) != S.sample_scene("val", i, 0) for i in range(20)) == 20
    c = S.render_array(S.sample_scene("train", 7, 4), 32)
    assert not np.array_equal(a, c)


def test_generation_is_pinned():
    """Version 1 of the dataset must not drift: same items on every platform and release."""
    items = [S.sample_scene("train", i, 0) for i in range(10)]
    blob = json.dumps([[sc.caption, sc.attributes()] for sc in items], sort_keys=True)
    blob = blob.encode()
    digest = hashlib.sha256(blob).hexdigest()
    assert items[0].caption == PINNED_FIRST_CAPTION
    assert digest == PINNED_DIGEST


PINNED_FIRST_CAPTION = "a yellow star left of a blue circle on a black background"
PINNED_DIGEST = "7b288868df67e12a3e47c23ccec48c90bfb8527515c9921216c2076448cb852b"


def test_bad_arguments():
    with pytest.raises(DataError, match="split"):
        S.sample_scene("training", 0, 0)
    with pytest.raises(DataError, match=">= 16"):
        S.render_scene(S.sample_scene("train", 0, 0), 15)
    with pytest.raises(DataError, match=">= 16"):
        S.render_scene(S.sample_scene("train", 0, 0), 32.0)
    with pytest.raises(DataError):
        S.ShapesDataset(split="nope")


# --------------------------------------------------------------------- rendering


@pytest.mark.parametrize("size", [16, 17, 31, 64, 100])
def test_any_size_from_16(size):
    im = S.render_scene(S.sample_scene("test", 3, 0), size)
    assert im.size == (size, size) and im.mode == "RGB"


def test_pixels_at_centres_and_corners_are_palette_colours():
    size = 64
    for i in range(300):
        sc = S.sample_scene("test", i, 0)
        arr = S.render_array(sc, size)
        bg = SPEC_BACKGROUNDS[sc.background]
        for r, c in ((0, 0), (0, size - 1), (size - 1, 0), (size - 1, size - 1)):
            assert tuple(arr[r, c]) == bg
        for o in sc.objects:
            r, c = int(o.center[1] * size), int(o.center[0] * size)
            assert tuple(arr[r, c]) == SPEC_COLORS[o.color], (i, o)


def test_flat_fills_only_background_outside_objects():
    size = 48
    for i in range(100):
        sc = S.sample_scene("train", i, 0)
        arr = S.render_array(sc, size)
        outside = np.ones((size, size), dtype=bool)
        for o in sc.objects:
            x0, y0, x1, y1 = o.drawn_bbox()
            outside[math.floor(y0 * size) : math.ceil(y1 * size), math.floor(x0 * size) : math.ceil(x1 * size)] = False
            # inside the object only its colour, the background and mixtures of the two
            region = arr[math.floor(y0 * size) : math.ceil(y1 * size), math.floor(x0 * size) : math.ceil(x1 * size)]
            col, bg = np.array(SPEC_COLORS[o.color], float), np.array(SPEC_BACKGROUNDS[sc.background], float)
            t = (region.astype(float) - bg) @ (col - bg) / ((col - bg) @ (col - bg))
            mix = bg + t[..., None] * (col - bg)
            assert np.abs(region - mix).max() <= 1.0
        assert (arr[outside] == SPEC_BACKGROUNDS[sc.background]).all()


def test_pixel_bounding_boxes_match_geometry():
    size = 64
    for i in range(60):
        sc = S.sample_scene("val", i, 0)
        arr = S.render_array(sc, size)
        ink = (arr != SPEC_BACKGROUNDS[sc.background]).any(-1)
        for o in sc.objects:
            x0, y0, x1, y1 = (v * size for v in o.drawn_bbox())
            win = np.zeros_like(ink)
            win[math.floor(y0) : math.ceil(y1), math.floor(x0) : math.ceil(x1)] = True
            rows, cols = np.nonzero(ink & win)
            # ink reaches within one pixel of each side of the drawn box
            assert rows.min() <= y0 + 1 and rows.max() + 1 >= y1 - 1
            assert cols.min() <= x0 + 1 and cols.max() + 1 >= x1 - 1


def test_shape_geometry():
    o = S.ObjectSpec("red", "triangle", "large", 0.4, (0.5, 0.5), "center")
    apex, right, left = S.shape_polygon(o, 1.0)
    assert (
        apex == pytest.approx((0.5, 0.3)) and left == pytest.approx((0.3, 0.7)) and right == pytest.approx((0.7, 0.7))
    )
    assert right[0] - left[0] == pytest.approx(left[1] - apex[1])  # height == base
    star = S.ObjectSpec("red", "star", "large", 0.4, (0.5, 0.5), "center")
    pts = S.shape_polygon(star, 1.0)
    assert len(pts) == 10 and pts[0] == pytest.approx((0.5, 0.3))  # one point straight up
    radii = [math.hypot(x - 0.5, y - 0.5) for x, y in pts]
    assert radii[0::2] == pytest.approx([0.2] * 5) and radii[1::2] == pytest.approx([0.08] * 5)
    x0, y0, x1, y1 = star.drawn_bbox()
    assert y0 == pytest.approx(0.3) and x1 - x0 < 0.4 and y1 < 0.7  # narrower than the box
    assert x1 - x0 == pytest.approx(0.4 * math.cos(math.radians(18)))


def _reference_render(scene: S.Scene, size: int) -> np.ndarray:
    """Brute force: test every 4x pixel centre (ray casting), then a 4x4 box mean."""
    side = 4 * size
    c = (np.arange(side) + 0.5) / side
    X, Y = np.meshgrid(c, c)
    img = np.empty((side, side, 3))
    img[:] = SPEC_BACKGROUNDS[scene.background]
    for o in scene.objects:
        if o.shape == "circle":
            inside = (X - o.center[0]) ** 2 + (Y - o.center[1]) ** 2 <= (o.extent / 2) ** 2
        else:
            pts = S.shape_polygon(o, 1.0)
            inside = np.zeros_like(X, dtype=bool)
            for (px, py), (qx, qy) in zip(pts, pts[1:] + pts[:1]):
                cross = (py > Y) != (qy > Y)
                with np.errstate(divide="ignore", invalid="ignore"):
                    xint = px + (Y - py) * (qx - px) / (qy - py)
                inside ^= cross & (X < xint)
        img[inside] = SPEC_COLORS[o.color]
    box = img.reshape(size, 4, size, 4, 3).mean(axis=(1, 3))
    return np.floor(box + 0.5).astype(np.uint8)


@pytest.mark.parametrize("size", [16, 23, 40])
def test_render_matches_brute_force_supersampling(size):
    for i in range(12):
        sc = S.sample_scene("test", i, 5)
        got = S.render_array(sc, size).astype(int)
        want = _reference_render(sc, size).astype(int)
        # sample points lying exactly on an edge are measure-zero; allow a stray level
        assert np.abs(got - want).max() <= 16
        assert (got != want).any(-1).sum() <= 1


# ---------------------------------------------------------------------- dataset


def test_dataset_items_and_collate():
    ds = S.ShapesDataset(split="train", size=32, length=10, seed=0)
    assert len(ds) == 10
    item = ds[3]
    assert set(item) == {"image", "caption", "attributes"}
    img = item["image"]
    assert img.shape == (3, 32, 32) and img.dtype == torch.float32
    assert img.min() >= -1 and img.max() <= 1
    attrs = item["attributes"]
    assert set(attrs) == {"background", "objects"}
    for o in attrs["objects"]:
        assert set(o) == {"color", "shape", "size", "extent", "center", "region"}
        assert isinstance(o["center"], list) and len(o["center"]) == 2
    json.dumps(attrs)
    sc = S.sample_scene("train", 3, 0)
    assert item["caption"] == sc.caption and attrs == sc.attributes()
    expected = torch.from_numpy(S.render_array(sc, 32)).permute(2, 0, 1).float() / 127.5 - 1
    assert torch.equal(img, expected)
    with pytest.raises(IndexError):
        ds[10]
    batch = next(iter(DataLoader(ds, batch_size=4, collate_fn=S.collate)))
    assert batch["image"].shape == (4, 3, 32, 32) and len(batch["caption"]) == 4 and len(batch["attributes"]) == 4


def test_render_batch_matches_dataset():
    imgs, caps, attrs = S.render_batch("val", 5, 3, size=24, seed=2)
    ds = S.ShapesDataset(split="val", size=24, length=100, seed=2)
    assert imgs.shape == (3, 3, 24, 24)
    for k in range(3):
        item = ds[5 + k]
        assert torch.equal(imgs[k], item["image"]) and caps[k] == item["caption"] and attrs[k] == item["attributes"]


def test_infinite_sampler_is_seeded_and_resumable():
    def take(sampler, n):
        it = iter(sampler)
        return [next(it) for _ in range(n)]

    a = take(S.ShapesInfiniteSampler(7, seed=1), 21)
    assert a == take(S.ShapesInfiniteSampler(7, seed=1), 21)
    assert a != take(S.ShapesInfiniteSampler(7, seed=2), 21)
    for e in range(3):
        assert sorted(a[7 * e : 7 * e + 7]) == list(range(7))
    assert a[:7] != a[7:14]
    assert take(S.ShapesInfiniteSampler(7, seed=1, start=10), 11) == a[10:21]


def test_scene_for_prompt_satisfies_prompt():
    prompts = [
        "a green star",
        "a small pink square on a black background",
        "a cyan triangle in the top left",
        "a red circle left of a blue square on a gray background",
        "a yellow star below a purple circle",
        "orange circle",
    ]
    for p in prompts:
        sc = S.scene_for_prompt(p, seed=1)
        assert sc.caption == p
        assert S.caption_consistent(sc) or S.parse_caption(p, allow_prompt=True)["template"] == "prompt"
        want = S.parse_caption(p, allow_prompt=True)
        assert [(o.color, o.shape) for o in sc.objects] == [(o["color"], o["shape"]) for o in want["objects"]]
        S.render_scene(sc, 16)
    assert S.scene_for_prompt("a green star", seed=1) == S.scene_for_prompt("a green star", seed=1)
    with pytest.raises(DataError, match="template"):
        S.scene_for_prompt("a photo of a cat")
