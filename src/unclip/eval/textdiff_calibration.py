"""How often a text diff reaches its target, as theta grows (unCLIP section 3.3, Figure 5 as a number).

A text diff moves an image's z_i towards z_d = norm(z_t(to) - z_t(from)) by slerp with
weight theta and decodes from the image's inverted x_T (:func:`unclip.manipulate.text_diff`).
On ``shapes`` images the exact scorer (:mod:`unclip.eval.shapes_scorer`) reads back the
edited object's colour and shape, so for every source image and every target the frames
say whether the edit *reached* the target attribute and *kept* the other one:

- colour diffs: "a {c} {s}" -> "a {c'} {s}" for every pair of colours c != c' (shape s kept);
- shape diffs: "a {c} {s}" -> "a {c} {s'}" for every pair of shapes s != s' (colour c kept).

Sources are single-object images of the test split, ``per_value`` of each source colour
(or shape); several sources per value play the role of seeds (DDIM inversion and eta-0
decoding are deterministic). The calibrated default maximum theta of a model is the
smallest theta whose fraction reached-and-kept is at least ``target`` (else the best
theta); :func:`store_default_max_theta` writes it into ``model.json``'s ``defaults`` as
``text_diff_max_theta``, which ``UnCLIP.load`` reads into ``SamplingDefaults``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from ..data.shapes import COLORS, SHAPES, render_batch
from ..errors import InputError
from ..manipulate import (
    DEFAULT_REFINE,
    BipartiteLatent,
    decode_latent,
    invert,
    slerp,
    text_diff_direction,
)
from ..storage.checkpoint import atomic_write_json
from .shapes_scorer import score_images

KINDS = ("colour", "shape")
DEFAULT_KEY = "text_diff_max_theta"


@dataclass(frozen=True)
class DiffPair:
    """One edit: source image ``source`` (an index), captions, and the attributes to check."""

    kind: str
    source: int
    from_text: str
    to_text: str
    target: str  # the colour (kind "colour") or shape (kind "shape") the edit should reach
    keep: str  # the other attribute, which should stay


def single_object_sources(
    size: int, kind: str, per_value: int, *, values: list[str] | None = None, limit: int = 20000
) -> tuple[torch.Tensor, list[dict]]:
    """``per_value`` single-object test images of every colour (kind "colour") or shape (kind "shape").

    ``values`` restricts the source colours (shapes); targets are still every other value.
    Returns images (N, 3, size, size) in [-1, 1] and their object attributes, grouped by value.
    """
    if kind not in KINDS:
        raise InputError(f"kind must be one of {KINDS}, got {kind!r}")
    every = list(COLORS) if kind == "colour" else list(SHAPES)
    values = every if values is None else [v for v in every if v in values]
    if not values:
        raise InputError(f"no source {kind} among {every} was asked for")
    key = "color" if kind == "colour" else "shape"
    found: dict[str, list[tuple[torch.Tensor, dict]]] = {v: [] for v in values}
    for start in range(0, limit, 500):
        x, _, attrs = render_batch("test", start, 500, size=size)
        for i, a in enumerate(attrs):
            objs = a["objects"]
            if len(objs) == 1 and objs[0][key] in found and len(found[objs[0][key]]) < per_value:
                found[objs[0][key]].append((x[i], objs[0]))
        if all(len(v) == per_value for v in found.values()):
            break
    missing = [v for v, items in found.items() if len(items) < per_value]
    if missing:
        raise InputError(f"found fewer than {per_value} single-object test images for {missing} in the first {limit}")
    items = [item for v in values for item in found[v]]
    return torch.stack([x for x, _ in items]), [a for _, a in items]


def diff_pairs(attrs: list[dict], kind: str) -> list[DiffPair]:
    """Every edit of ``kind`` from every source to every other value of that attribute."""
    pairs = []
    for i, a in enumerate(attrs):
        colour, shape = a["color"], a["shape"]
        if kind == "colour":
            pairs += [
                DiffPair(kind, i, f"a {colour} {shape}", f"a {c} {shape}", c, shape) for c in COLORS if c != colour
            ]
        else:
            pairs += [
                DiffPair(kind, i, f"a {colour} {shape}", f"a {colour} {s}", s, colour) for s in SHAPES if s != shape
            ]
    return pairs


@torch.no_grad()
def text_diff_frames(
    pipe,
    latent: BipartiteLatent,
    pairs: list[DiffPair],
    thetas: list[float],
    *,
    batch_size: int = 64,
    progress: bool = False,
) -> torch.Tensor:
    """Frames (P, F, 3, S, S) of every pair's text diff at every theta, decoded in batches.

    The same computation as :func:`unclip.manipulate.text_diff` (same z_d, slerp, x_T,
    steps, guidance and captions), batched over pairs and thetas.
    """
    to_z = pipe.clip.encode_text([p.to_text for p in pairs]).float().cpu()
    from_z = pipe.clip.encode_text([p.from_text for p in pairs]).float().cpu()
    idx = torch.tensor([p.source for p in pairs])
    z_i = latent.image_embed.float().cpu()[idx]
    z_d = torch.stack([text_diff_direction(a, b) for a, b in zip(to_z, from_z)])
    th = torch.tensor(thetas, dtype=torch.float32)
    z = torch.stack([slerp(z_i[k], z_d[k], th) for k in range(len(pairs))]).flatten(0, 1)  # (P*F, E)
    noise = latent.noise.cpu()[idx].repeat_interleave(len(thetas), dim=0)
    caps = None if latent.captions is None else [latent.captions[p.source] for p in pairs for _ in thetas]
    out = []
    for s in tqdm(range(0, z.shape[0], batch_size), desc="text-diff frames", disable=not progress, leave=False):
        chunk = slice(s, s + batch_size)
        frames = decode_latent(
            pipe,
            z[chunk],
            noise[chunk],
            steps=latent.steps,
            guidance=latent.guidance,
            captions=None if caps is None else caps[chunk],
            min_alpha_bar=latent.min_alpha_bar,
        )
        out.append(frames.cpu())
    return torch.cat(out).view(len(pairs), len(thetas), *out[0].shape[1:])


def score_frames(frames: torch.Tensor, pairs: list[DiffPair]) -> dict[str, torch.Tensor]:
    """(P, F) bool tensors ``reached`` (target attribute read back) and ``kept`` (other attribute unchanged)."""
    scores = score_images(frames.flatten(0, 1))
    p, f = frames.shape[:2]
    reached = torch.zeros(p, f, dtype=torch.bool)
    kept = torch.zeros(p, f, dtype=torch.bool)
    for n, s in enumerate(scores):
        k, j = divmod(n, f)
        main = s.main
        if main is None:
            continue
        pair = pairs[k]
        target_attr, keep_attr = (main.color, main.shape) if pair.kind == "colour" else (main.shape, main.color)
        reached[k, j] = target_attr == pair.target
        kept[k, j] = keep_attr == pair.keep
    return {"reached": reached, "kept": kept}


def calibrate(thetas: list[float], success: list[float], target: float = 0.9) -> float:
    """The smallest theta whose success fraction is at least ``target``; else the theta of the best fraction."""
    if len(thetas) != len(success) or not thetas:
        raise InputError("calibrate needs one success fraction per theta")
    for t, s in sorted(zip(thetas, success)):
        if s >= target:
            return float(t)
    best = max(success)
    return float(min(t for t, s in zip(thetas, success) if s == best))


def measure_text_diffs(
    pipe,
    thetas: list[float],
    *,
    kinds: tuple[str, ...] = KINDS,
    per_value: int = 2,
    steps: int = 50,
    batch_size: int = 64,
    target: float = 0.9,
    values: list[str] | None = None,
    refine: int = DEFAULT_REFINE,
    progress: bool = False,
) -> dict[str, Any]:
    """The fraction of text diffs that reach their target (and keep the other attribute) per theta.

    Returns a JSON-able dict: per kind, ``per_theta`` rows of ``reached``, ``kept`` and
    ``reached_and_kept`` fractions, per-target-value ``reached`` at each theta, the number
    of edits, and ``calibrated_max_theta`` over all kinds together. ``values`` restricts the
    source colours and shapes (for a quick run). The sources are inverted with ``steps``
    and ``refine`` as ``unclip textdiff`` does (its defaults: 50 steps, refine 2).
    """
    if not thetas or min(thetas) < 0:
        raise InputError(f"thetas must be a non-empty list of values >= 0, got {thetas}")
    size = pipe.decoder.config.image_size
    out: dict[str, Any] = {
        "thetas": list(thetas), "per_value": per_value, "steps": steps, "refine": refine, "kinds": {}
    }  # fmt: skip
    all_success = torch.zeros(len(thetas))
    total = 0
    for kind in kinds:
        x, attrs = single_object_sources(size, kind, per_value, values=values)
        latent = invert(pipe, x, steps=steps, refine=refine, progress=progress)
        pairs = diff_pairs(attrs, kind)
        frames = text_diff_frames(pipe, latent, pairs, thetas, batch_size=batch_size, progress=progress)
        flags = score_frames(frames, pairs)
        both = flags["reached"] & flags["kept"]

        def frac(flag: torch.Tensor, j: int) -> float:
            return round(float(flag[:, j].float().mean()), 4)

        rows = [
            {
                "theta": round(float(t), 4),
                "reached": frac(flags["reached"], j),
                "kept": frac(flags["kept"], j),
                "reached_and_kept": frac(both, j),
            }
            for j, t in enumerate(thetas)
        ]
        by_target: dict[str, list[float]] = {}
        for value in sorted({p.target for p in pairs}):
            sel = torch.tensor([p.target == value for p in pairs])
            by_target[value] = [round(float(v), 4) for v in flags["reached"][sel].float().mean(0)]
        out["kinds"][kind] = {
            "edits": len(pairs),
            "sources": len(attrs),
            "per_theta": rows,
            "reached_by_target": by_target,
        }
        all_success += both.float().sum(0)
        total += len(pairs)
    success = (all_success / max(total, 1)).tolist()
    out["reached_and_kept_all"] = [round(s, 4) for s in success]
    out["target_fraction"] = target
    out["calibrated_max_theta"] = calibrate(list(thetas), success, target)
    return out


def store_default_max_theta(model_dir: str | os.PathLike, theta: float, info: dict[str, Any] | None = None) -> Path:
    """Write ``defaults.text_diff_max_theta = theta`` (and ``info.text_diff_calibration``) into model.json.

    The write is atomic (a temporary file renamed into place).
    """
    from ..model_dir import read_model_json

    root = Path(model_dir)
    meta = read_model_json(root)
    meta.setdefault("defaults", {})[DEFAULT_KEY] = float(theta)
    if info is not None:
        meta.setdefault("info", {})["text_diff_calibration"] = info
    atomic_write_json(root / "model.json", meta)
    return root / "model.json"
