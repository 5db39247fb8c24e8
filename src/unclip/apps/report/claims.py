"""The paper's three claims, checked against the report's own numbers.

(a) Section 5.1 / Table 2: the diffusion prior is at least as good as the autoregressive
    prior. Compared on attribute accuracy (both right), Frechet distance (primary space)
    and cosine to the true z_i; it agrees when the diffusion prior is at least as good on
    more than half of them.
(b) Figure 8: generating through a prior's z_i beats conditioning the decoder on the
    caption only. Compared on attribute accuracy and Frechet distance; agrees when the
    prior mode is strictly better on more than half of them (here: on both).
(c) Figures 9-11: as decoder guidance grows, unCLIP keeps its sample diversity while the
    GLIDE-style baseline's falls. With the relative drop ``(d(g_min) - d(g_max)) / d(g_min)``
    of the diversity (CLIP space) from the lowest to the highest scale, it agrees when the
    baseline's diversity does fall and falls by more than unCLIP's.

A claim whose numbers are missing (a component was skipped) has ``holds = None``.
"""

from __future__ import annotations

from typing import Any

from .features import CLIP_SPACE

DIVERSITY_SPACE = CLIP_SPACE  # always available, so claim (c) reads the same with or without Inception


def _comparison(
    measure: str, favoured: float | None, other: float | None, better: str, allow_tie: bool
) -> dict[str, Any]:
    if favoured is None or other is None:
        wins = None
    elif better == "higher":
        wins = favoured >= other if allow_tie else favoured > other
    else:
        wins = favoured <= other if allow_tie else favoured < other
    return {"measure": measure, "favoured": favoured, "other": other, "better": better, "favoured_wins": wins}


def _verdict(comparisons: list[dict[str, Any]]) -> bool | None:
    decided = [c["favoured_wins"] for c in comparisons]
    if any(w is None for w in decided) or not decided:
        return None
    return sum(decided) * 2 > len(decided)


def _words(holds: bool | None) -> str:
    return {True: "agrees", False: "does not agree", None: "not tested"}[holds]


def relative_drop(values: list[float | None]) -> float | None:
    """``(first - last) / first`` of a series (None if either end is missing or the first is 0)."""
    if len(values) < 2 or values[0] is None or values[-1] is None or values[0] == 0:
        return None
    return (values[0] - values[-1]) / values[0]


def claim_prior(results: dict[str, Any], space: str) -> dict[str, Any]:
    """Claim (a): the diffusion prior >= the AR prior."""
    priors = results["prior_comparison"]["priors"]
    d, a = priors.get("diffusion", {}), priors.get("ar", {})
    if "skipped" in d or "skipped" in a:
        comps: list[dict[str, Any]] = []
        note = d.get("skipped") or a.get("skipped")
    else:
        comps = [
            _comparison("attribute accuracy (both right)", d["both_right_rate"], a["both_right_rate"], "higher", True),
            _comparison(f"Frechet distance ({space})", d["frechet"][space], a["frechet"][space], "lower", True),
            _comparison(
                "cosine to the true z_i", d.get("cosine_to_true_z_i"), a.get("cosine_to_true_z_i"), "higher", True
            ),
        ]
        note = None
    holds = _verdict(comps) if comps else None
    return {
        "claim": "the diffusion prior performs at least as well as the autoregressive prior",
        "favoured": "diffusion prior",
        "other": "AR prior",
        "rule": "diffusion prior at least as good on more than half of the measures",
        "comparisons": comps,
        "holds": holds,
        "verdict": _words(holds),
        "note": note,
    }


def claim_conditioning(results: dict[str, Any], space: str) -> dict[str, Any]:
    """Claim (b): generating through the prior's z_i beats the caption alone."""
    modes = results["conditioning"]["modes"]
    p, n = modes.get("prior", {}), modes.get("none", {})
    if "skipped" in p:
        comps, note = [], p["skipped"]
    else:
        comps = [
            _comparison("attribute accuracy (both right)", p["both_right_rate"], n["both_right_rate"], "higher", False),
            _comparison(f"Frechet distance ({space})", p["frechet"][space], n["frechet"][space], "lower", False),
        ]
        note = None
    holds = _verdict(comps) if comps else None
    return {
        "claim": "generating through the prior's z_i beats conditioning on the caption only",
        "favoured": "caption + prior z_i",
        "other": "caption only",
        "rule": "prior mode strictly better on more than half of the measures",
        "comparisons": comps,
        "holds": holds,
        "verdict": _words(holds),
        "note": note,
    }


def claim_diversity(results: dict[str, Any]) -> dict[str, Any]:
    """Claim (c): unCLIP keeps diversity under guidance; the baseline's falls."""
    sweep = results["guidance"]
    u, b = sweep.get("unclip", {}), sweep.get("baseline", {})
    out: dict[str, Any] = {
        "claim": "as decoder guidance grows, unCLIP keeps its diversity while the GLIDE-style baseline's falls",
        "rule": (
            f"relative drop of diversity ({DIVERSITY_SPACE} space) from the lowest to the highest scale: the "
            "baseline's is > 0 and larger than unCLIP's"
        ),
        "space": DIVERSITY_SPACE,
        "scales": [sweep["scales"][0], sweep["scales"][-1]],
    }
    if "skipped" in u or "skipped" in b:
        return {
            **out,
            "holds": None,
            "verdict": _words(None),
            "note": u.get("skipped") or b.get("skipped"),
            "unclip_drop": None,
            "baseline_drop": None,
        }
    du = relative_drop([pt["diversity"][DIVERSITY_SPACE] for pt in u["points"]])
    db = relative_drop([pt["diversity"][DIVERSITY_SPACE] for pt in b["points"]])
    holds = None if du is None or db is None else bool(db > 0 and db > du)
    return {**out, "unclip_drop": du, "baseline_drop": db, "holds": holds, "verdict": _words(holds), "note": None}


def evaluate_claims(results: dict[str, Any], primary_space: str) -> dict[str, Any]:
    """All three claims from ``results`` (keys ``prior_comparison``, ``conditioning``, ``guidance``)."""
    return {
        "a": claim_prior(results, primary_space),
        "b": claim_conditioning(results, primary_space),
        "c": claim_diversity(results),
    }
