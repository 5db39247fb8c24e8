"""Captions of ``shapes`` scenes: written from the spec's templates, and read back exactly."""

from __future__ import annotations

import random
import re
from typing import Any, Sequence

from .spec import (
    BACKGROUND_SUFFIX,
    BACKGROUNDS,
    COLORS,
    HELD_OUT_PAIRS,
    ONE_OBJECT_TEMPLATES,
    P_BACKGROUND_SUFFIX,
    P_RELATION_TEMPLATE,
    REGIONS,
    RELATIONS,
    SHAPES,
    SIZES,
    TWO_OBJECT_TEMPLATES,
    ObjectSpec,
    Scene,
    _choice,
    eligible_relation_axes,
    relation_between,
)


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
