"""From scored scenes to figures: does an image match its prompt, and rates over many images.

:func:`score_prompt_match` checks one :class:`~unclip.eval.shapes_scorer.SceneScore` against
the colour and shape a prompt asks for; :func:`summarise` turns many into the rates that
``unclip eval`` reports; :func:`match_truth` compares a reading with a scene's ground truth.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import InputError
from .shapes_scorer import OBJECT_RGB, SHAPE_NAMES, ObjectScore, SceneScore


def score_prompt_match(score: SceneScore, color: str | None, shape: str | None) -> dict[str, bool]:
    """Does the image show what a one-object prompt asks for?

    The main (largest) object is judged; ``None`` for colour or shape counts as right.
    Returns color_ok, shape_ok, single_object (exactly one object found) and both_ok
    (colour and shape both right on the main object).
    """
    main = score.main
    color_ok = main is not None and (color is None or main.color == color)
    shape_ok = main is not None and (shape is None or main.shape == shape)
    return {
        "color_ok": color_ok,
        "shape_ok": shape_ok,
        "single_object": score.num_objects == 1,
        "both_ok": color_ok and shape_ok,
    }


def _wanted(prompt: str | dict[str, Any]) -> tuple[str | None, str | None]:
    """(colour, shape) a prompt asks for: from a caption string, or a dict (its first object)."""
    if isinstance(prompt, str):
        words = re.findall(r"[a-z]+", prompt.lower())
        color = next((w for w in words if w in OBJECT_RGB), None)
        return color, next((w for w in words if w in SHAPE_NAMES), None)
    obj = prompt["objects"][0] if prompt.get("objects") else prompt
    return obj.get("color"), obj.get("shape")


def summarise(scores: Sequence[SceneScore], prompts_attrs: Sequence[str | dict[str, Any]]) -> dict[str, float]:
    """Prompt fidelity and spatial diversity over a set of generated images.

    prompts_attrs: per image, what was asked: ``{"color": ..., "shape": ...}``, a dataset
    attribute dict (its first object), or a prompt string such as ``"a red circle"``.
    Returns n, color_accuracy, shape_accuracy, single_object_rate, both_right_rate (shares
    of images), mean_num_objects, and center_std_x, center_std_y: the population std of
    the main object's centre over the images that have one (the dataset's own test images
    give 0.175; 0 means every image puts it in the same place).
    """
    if len(scores) != len(prompts_attrs) or not scores:
        raise InputError(
            f"prompts_attrs: expected one entry per score ({len(scores)}), got "
            f"{len(prompts_attrs)}; score at least one image and pass what each was asked for"
        )
    n = len(scores)
    hits = [score_prompt_match(s, *_wanted(p)) for s, p in zip(scores, prompts_attrs)]
    centres = np.array([s.main.center for s in scores if s.main is not None], dtype=np.float64)
    std = centres.std(axis=0) if len(centres) else np.zeros(2)
    return {
        "n": float(n),
        "color_accuracy": sum(h["color_ok"] for h in hits) / n,
        "shape_accuracy": sum(h["shape_ok"] for h in hits) / n,
        "single_object_rate": sum(h["single_object"] for h in hits) / n,
        "both_right_rate": sum(h["both_ok"] for h in hits) / n,
        "mean_num_objects": sum(s.num_objects for s in scores) / n,
        "center_std_x": float(std[0]),
        "center_std_y": float(std[1]),
    }


def match_truth(
    score: SceneScore, truth_objects: Sequence[dict[str, Any]]
) -> list[tuple[dict[str, Any], ObjectScore | None]]:
    """Pair each ground-truth object with the found object nearest its centre, each used once.

    truth_objects: dicts with a ``center`` (x, y), e.g. ``attributes["objects"]`` of the
    dataset. Greedy by distance (exact for well-separated objects). Returns
    (truth, found or None) pairs in the order of ``truth_objects``.
    """
    pairs = sorted(
        (math.dist(o.center, t["center"]), ti, oi)
        for ti, t in enumerate(truth_objects)
        for oi, o in enumerate(score.objects)
    )
    found: dict[int, ObjectScore] = {}
    used: set[int] = set()
    for _, ti, oi in pairs:
        if ti not in found and oi not in used:
            found[ti] = score.objects[oi]
            used.add(oi)
    return [(t, found.get(i)) for i, t in enumerate(truth_objects)]
