"""Sampling ``shapes`` scenes: layouts that obey the spec, one seeded stream per item."""

from __future__ import annotations

import hashlib
import random
from typing import Sequence

from ...errors import DataError
from .captions import _caption, parse_caption
from .spec import (
    _ALL_PAIRS,
    _MAX_LAYOUT_TRIES,
    _TRAIN_PAIRS,
    BACKGROUNDS,
    GAP,
    MARGIN,
    P_TWO_OBJECTS,
    SIZES,
    SPLITS,
    ObjectSpec,
    Scene,
    _choice,
    eligible_relation_axes,
    item_rng,
    region_of,
    relation_between,
)


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
        return tuple(ObjectSpec(c, s, z, e, (x, y), region_of(x, y)) for (c, s, z), e, (x, y) in zip(attrs, ext, cen))
    raise DataError(f"could not place objects {list(attrs)} without overlap")  # pragma: no cover


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
