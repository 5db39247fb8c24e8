"""Every number the report gives for one set of generated images.

* Attribute accuracy from the exact shapes scorer (:mod:`unclip.eval.shapes_scorer`):
  colour, shape, both right and the one-object rate, overall and on held-out pairs.
* Frechet distance to the real reference (Heusel et al. 2017) in each feature space, and
  improved precision/recall (Kynkaenniemi et al. 2019) in the primary space.
* Diversity: mean pairwise cosine distance (1 - cos) between samples of the same caption,
  in each feature space, and the spread of the main object's centre across them.
* CLIP score: cosine between each image's and its caption's embeddings under our CLIP.

Numbers that cannot be computed for a set (too few samples, no held-out prompt) are None.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from ...data.shapes import HELD_OUT_PAIRS
from ...eval.metrics import clip_score, frechet_distance, mean_pairwise_distance, precision_recall
from ...eval.shapes_scorer import score_images
from ...eval.shapes_summary import summarise
from .features import CLIP_SPACE, FeatureSpaces, Reference, quantize

ACCURACY_KEYS = ("color_accuracy", "shape_accuracy", "both_right_rate", "single_object_rate")


def prompt_pair(prompt: str) -> tuple[str, str]:
    """``"a red circle"`` -> ``("red", "circle")``."""
    _, color, shape = prompt.split()
    return color, shape


def finite_or_none(x: Any) -> float | None:
    """A plain float, or None for missing / NaN / infinite values (JSON has no NaN)."""
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def _accuracy(scores: list, prompts: list[str]) -> dict[str, Any]:
    held = np.array([prompt_pair(p) in HELD_OUT_PAIRS for p in prompts])

    def subset(mask: np.ndarray) -> dict[str, float] | None:
        idx = np.flatnonzero(mask)
        if len(idx) == 0:
            return None
        s = summarise([scores[i] for i in idx], [prompts[i] for i in idx])
        return {k: s[k] for k in ACCURACY_KEYS}

    out: dict[str, Any] = dict(subset(np.ones(len(prompts), bool)))
    out["held_out_pairs"] = subset(held)
    out["held_out_images"] = int(held.sum())
    return out


def _centre_spread(scores: list, prompts: list[str]) -> float | None:
    """Mean over captions of the std (x and y averaged) of the main object's centre across its samples."""
    by_prompt: dict[str, list[tuple[float, float]]] = {}
    for s, p in zip(scores, prompts):
        if s.main is not None:
            by_prompt.setdefault(p, []).append(s.main.center)
    spreads = [float(np.std(np.array(c), axis=0).mean()) for c in by_prompt.values() if len(c) >= 2]
    return float(np.mean(spreads)) if spreads else None


def evaluate_images(
    images: torch.Tensor, prompts: list[str], spaces: FeatureSpaces, reference: Reference, *, k: int = 3
) -> dict[str, Any]:
    """Score generated images (N, 3, S, S) in [-1, 1] with their prompts (N, ``a {color} {shape}``).

    The reference is restricted to the colour-shape pairs of ``prompts``. Returns a JSON-able
    dict: accuracy keys, ``held_out_pairs``, ``frechet`` {space: value}, ``precision``,
    ``recall`` (in ``pr_space``, k-NN with ``pr_k``), ``diversity`` {space: value},
    ``centre_spread``, ``clip_score``.
    """
    images = images.detach().cpu().float()
    scores = score_images(images)
    result: dict[str, Any] = {"n": len(prompts), **_accuracy(scores, prompts)}
    feats = spaces(images)
    ref = reference.subset({prompt_pair(p) for p in prompts})
    result["reference_n"] = int(ref[CLIP_SPACE].shape[0])
    result["frechet"] = {}
    for space, f in feats.items():
        ok = f.shape[0] >= 2 and ref[space].shape[0] >= 2
        result["frechet"][space] = finite_or_none(frechet_distance(ref[space], f)) if ok else None
    primary = spaces.primary
    k_eff = min(k, len(prompts) - 1, ref[primary].shape[0] - 1)
    if k_eff >= 1:
        pr = precision_recall(ref[primary], feats[primary], k=k_eff)
        result.update(precision=pr["precision"], recall=pr["recall"], pr_k=k_eff, pr_space=primary)
    else:
        result.update(precision=None, recall=None, pr_k=None, pr_space=primary)
    result["diversity"] = {
        space: finite_or_none(mean_pairwise_distance(f, prompts, metric="cosine")) for space, f in feats.items()
    }
    result["centre_spread"] = finite_or_none(_centre_spread(scores, prompts))
    result["clip_score"] = float(clip_score(spaces.clip, quantize(images), prompts).mean())
    return result
