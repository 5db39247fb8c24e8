"""``unclip report``: the paper's comparisons on a model directory, as an HTML page.

:func:`run_report` loads the model (both priors and the GLIDE-style baseline decoder where
present; a missing one skips its part with a visible note), builds the real reference set,
runs the experiments of :mod:`.experiments`, checks the paper's claims (:mod:`.claims`),
draws the plots (:mod:`.plots`) and writes ``results.json`` and ``index.html``
(:mod:`.html_page`) into the output folder, with the sample sets under ``samples/``.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from ...data.shapes import COLORS, SHAPES
from ...errors import InputError
from ...model_dir import read_model_json
from ...pipeline import UnCLIP, resolve_model_path
from ...storage.checkpoint import atomic_write_json
from .claims import evaluate_claims
from .experiments import ReportContext, conditioning_comparison, guidance_sweep, prior_comparison, sample_grids
from .features import FeatureSpaces, build_reference
from .html_page import write_page
from .plots import report_plots, require_matplotlib
from .scoring import prompt_pair
from .settings import ReportSettings, balanced_prompts

__all__ = ["run_report", "ReportSettings", "balanced_prompts"]

log = logging.getLogger(__name__)


def _check_prompts(prompts: tuple[str, ...]) -> None:
    for p in prompts:
        words = p.split()
        if len(words) != 3 or words[0] != "a" or words[1] not in COLORS or words[2] not in SHAPES:
            raise InputError(
                f"report prompt {p!r} is not of the form 'a {{color}} {{shape}}' with a shapes colour and shape "
                "(e.g. 'a red circle')"
            )


def run_report(
    model: str | os.PathLike,
    out: str | os.PathLike,
    *,
    quick: bool = False,
    seed: int = 0,
    device: str = "cpu",
    settings: ReportSettings | None = None,
) -> Path:
    """Run every comparison on ``model`` and write ``out/index.html`` (returned) and ``out/results.json``.

    ``settings`` overrides the ``quick`` / full presets (:class:`ReportSettings`); ``seed``
    applies to the presets only.
    """
    start = time.perf_counter()
    require_matplotlib()  # fail before minutes of sampling, not after
    settings = settings or (ReportSettings.quick(seed) if quick else ReportSettings.full(seed))
    _check_prompts(settings.prompts + settings.sweep_prompts)
    root = resolve_model_path(model)
    meta = read_model_json(root)
    components = meta.get("components", {})
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}

    t0 = time.perf_counter()
    pipe = UnCLIP.load(root, device=device)
    baseline = (
        UnCLIP.load(root, device=device, decoder="decoder_text_only") if "decoder_text_only" in components else None
    )
    spaces = FeatureSpaces(pipe.clip, inception=settings.inception, device=device)
    side = pipe.decoder.config.image_size
    pairs = {prompt_pair(p) for p in settings.prompts + settings.sweep_prompts}
    reference = build_reference(spaces, pairs, settings.reference_images, side, settings.cache_dir or out / "cache")
    timings["load_and_reference"] = time.perf_counter() - t0
    estimate = settings.estimate_s(inception=spaces.inception is not None)
    log.info(
        "report on %s: components %s; %s Rough estimate for the shipped model on 2 CPU cores: %.0f min",
        root,
        sorted(components),
        spaces.note,
        estimate / 60,
    )

    ctx = ReportContext(
        pipe=pipe, baseline=baseline, settings=settings, spaces=spaces, reference=reference, out=out, meta=meta
    )
    results: dict = {
        "model": str(model),
        "model_path": str(root),
        "components": sorted(components),
        "device": str(device),
        "settings": settings.to_dict(),
        "estimated_s_shipped_model_2_cores": estimate,
        "features": {"spaces": spaces.names, "primary": spaces.primary, "note": spaces.note},
        "reference": {
            "n": len(reference.pairs),
            "side": side,
            "source": "shapes test split, single-object scenes of the evaluated colour-shape pairs",
        },
    }
    for key, fn in (
        ("prior_comparison", prior_comparison),
        ("conditioning", conditioning_comparison),
        ("guidance", guidance_sweep),
    ):
        t0 = time.perf_counter()
        results[key] = fn(ctx)
        timings[key] = time.perf_counter() - t0
        log.info("%s done in %.0f s", key, timings[key])
    t0 = time.perf_counter()
    results["sample_grids"], grid_images = sample_grids(ctx)
    timings["sample_grids"] = time.perf_counter() - t0
    results["claims"] = evaluate_claims(results, spaces.primary)
    t0 = time.perf_counter()
    results["plots"] = report_plots(results, grid_images, out, spaces.primary)
    timings["plots"] = time.perf_counter() - t0
    results["timings_s"] = timings
    results["wall_time_s"] = time.perf_counter() - start
    atomic_write_json(out / "results.json", results)
    return write_page(out / "index.html", results)
