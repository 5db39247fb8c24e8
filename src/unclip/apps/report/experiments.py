"""The report's comparisons, each returning a JSON-able dict (paper sections 2.2, 5.1, 5.2).

1. :func:`prior_comparison`: the diffusion prior against the autoregressive prior, both
   decoded by the unCLIP decoder at its default guidance (paper section 5.1, Table 2's
   "AR prior" vs "diffusion prior" rows): attributes, Frechet distance, precision/recall,
   the prior's cosine to the true z_i, training compute and sampling time.
2. :func:`conditioning_comparison`: the paper's Figure 8: caption only (``prior="none"``),
   caption + z_t fed as z_i (``"text-embed"``) and caption + the prior's z_i.
3. :func:`guidance_sweep`: Figures 9-11: Frechet distance, accuracy and diversity against
   the decoder's guidance scale for unCLIP (prior z_i sampled once and held fixed across
   scales) and the GLIDE-style text-only baseline.
4. :func:`sample_grids`: one caption, fixed seeds, every scale, both decoders.

Every configuration is generated with one batched ``generate_tensors`` call from the same
seed, so all of them share their initial decoder noise per image: differences come from
the conditioning and the guidance only. The prior's z_i are drawn from a generator seeded
with ``seed + PRIOR_SEED_OFFSET`` (so they are not built from the same random numbers as
the image noise) and cached per prompt set, so a configuration that appears in two
experiments is generated once.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from ...eval.text_to_image import prior_cosine_report
from ...pipeline import UnCLIP
from ...storage.imageio import tensor_to_pil, write_image_set
from .features import FeatureSpaces, Reference
from .scoring import evaluate_images
from .settings import ReportSettings
from .training_records import decoder_budgets, training_compute

log = logging.getLogger(__name__)

PRIOR_SEED_OFFSET = 10_000
UNCLIP, BASELINE = "unclip", "baseline"
PRIOR_COMPONENTS = {"diffusion": "prior_diffusion", "ar": "prior_ar"}
MISSING_HINTS = {
    "prior_diffusion": "train it with `unclip train prior --out MODEL_DIR`",
    "prior_ar": "train it with `unclip train ar-prior --out MODEL_DIR`",
    "decoder_text_only": "train it with `unclip train decoder --text-only --out MODEL_DIR`",
}


def skipped_note(component: str) -> str:
    """The visible note for a part of the report that a missing component rules out."""
    return f"skipped: the model has no '{component}' component ({MISSING_HINTS[component]})"


@dataclass
class ReportContext:
    """What every experiment needs: the pipelines, settings, feature spaces, reference and output folder."""

    pipe: UnCLIP
    baseline: UnCLIP | None
    settings: ReportSettings
    spaces: FeatureSpaces
    reference: Reference
    out: Path
    meta: dict[str, Any]
    _embeds: dict = field(default_factory=dict)
    _runs: dict = field(default_factory=dict)

    @property
    def prior_mode(self) -> str | None:
        """The prior whose z_i stand for "unCLIP" in sections 2-4: diffusion if present, else AR."""
        return "diffusion" if self.pipe.prior is not None else ("ar" if self.pipe.ar_prior is not None else None)

    def image_embeds(self, prompts: tuple[str, ...], samples: int, mode: str) -> tuple[torch.Tensor, float]:
        """The prior's z_i (len(prompts) * samples, E), prompt-major, and the seconds it took (cached)."""
        key = (prompts, samples, mode)
        if key not in self._embeds:
            expanded = [p for p in prompts for _ in range(samples)]
            generator = torch.Generator().manual_seed(self.settings.seed + PRIOR_SEED_OFFSET)
            start = time.perf_counter()
            z = self.pipe.image_embeds_for(expanded, mode, generator=generator)
            self._embeds[key] = (z, time.perf_counter() - start)
        return self._embeds[key]

    def generate(
        self, decoder: str, prompts: tuple[str, ...], samples: int, mode: str, guidance: float
    ) -> tuple[torch.Tensor, list[str], float]:
        """Images (N, 3, S, S) of one configuration, their prompts, and the decoding seconds."""
        pipe = self.pipe if decoder == UNCLIP else self.baseline
        z = self.image_embeds(prompts, samples, mode)[0] if mode in PRIOR_COMPONENTS else None
        start = time.perf_counter()
        images, expanded = pipe.generate_tensors(
            list(prompts),
            samples,
            self.settings.seed,
            prior=mode,
            decoder_guidance=guidance,
            steps=self.settings.decoder_steps,
            image_embeds=z,
            size=pipe.decoder.config.image_size,
        )
        return images.cpu(), expanded, time.perf_counter() - start

    def run(self, decoder: str, prompts: tuple[str, ...], samples: int, mode: str, guidance: float) -> dict[str, Any]:
        """Generate, save (``samples/<name>/``) and score one configuration (cached)."""
        key = (decoder, prompts, samples, mode, float(guidance))
        if key in self._runs:
            return self._runs[key]
        images, expanded, seconds = self.generate(decoder, prompts, samples, mode, guidance)
        metrics = evaluate_images(images, expanded, self.spaces, self.reference, k=self.settings.precision_recall_k)
        name = f"{decoder}_{mode}_g{guidance:g}_{len(prompts)}x{samples}"
        entries = [{"prompt": p, "seed": self.settings.seed, "sample": i % samples} for i, p in enumerate(expanded)]
        meta = {
            "command": "report",
            "decoder": decoder,
            "prior": mode,
            "decoder_guidance": guidance,
            "decoder_steps": self.settings.decoder_steps,
        }
        write_image_set(
            self.out / "samples" / name, tensor_to_pil(images), entries, meta, ncols=samples * min(4, len(prompts))
        )
        result = {
            "decoder": decoder,
            "prior": mode,
            "guidance": float(guidance),
            "decode_s": seconds,
            "grid": f"samples/{name}/grid.png",
            **metrics,
        }
        self._runs[key] = result
        return result


def _bar(total: int, desc: str, ctx: ReportContext) -> tqdm:
    return tqdm(total=total, desc=desc, disable=not ctx.settings.progress, leave=False)


def _params(module: torch.nn.Module | None) -> int | None:
    return None if module is None else int(sum(p.numel() for p in module.parameters()))


def prior_comparison(ctx: ReportContext) -> dict[str, Any]:
    """Section 1: diffusion vs AR prior, decoded at the unCLIP decoder's default guidance."""
    s, pipe = ctx.settings, ctx.pipe
    guidance = float(pipe.defaults.decoder_guidance)
    out: dict[str, Any] = {
        "decoder_guidance": guidance,
        "prior_steps": pipe.defaults.prior_steps,
        "best_of": pipe.defaults.best_of,
        "prior_guidance": pipe.defaults.prior_guidance,
        "priors": {},
    }
    available = {"diffusion": pipe.prior is not None, "ar": pipe.ar_prior is not None}
    modules = {"diffusion": pipe.prior, "ar": pipe.ar_prior}
    with _bar(sum(available.values()) + 1, "priors", ctx) as bar:
        for mode, component in PRIOR_COMPONENTS.items():
            if not available[mode]:
                out["priors"][mode] = {"skipped": skipped_note(component)}
                continue
            z, seconds = ctx.image_embeds(s.prompts, s.samples_per_prompt, mode)
            result = dict(ctx.run(UNCLIP, s.prompts, s.samples_per_prompt, mode, guidance))
            result["sampling_s_per_embedding"] = seconds / z.shape[0]
            result["params"] = _params(modules[mode])
            result["training"] = training_compute(ctx.meta, component)
            out["priors"][mode] = result
            bar.update()
        if any(available.values()):
            start = time.perf_counter()
            cos = prior_cosine_report(pipe, num_images=s.cosine_captions, seed=s.seed)
            out["cosine_captions"] = s.cosine_captions
            out["cosine_s"] = time.perf_counter() - start
            out["text_embed_cosine_to_true_z_i"] = cos["text_embed_cosine_to_true_image_embed"]
            for mode, key in (
                ("diffusion", "prior_cosine_to_true_image_embed"),
                ("ar", "ar_prior_cosine_to_true_image_embed"),
            ):
                if key in cos:
                    out["priors"][mode]["cosine_to_true_z_i"] = cos[key]
        bar.update()
    return out


def conditioning_comparison(ctx: ReportContext) -> dict[str, Any]:
    """Section 2 (Figure 8): caption only, caption + z_t as z_i, caption + the prior's z_i."""
    s, guidance = ctx.settings, float(ctx.pipe.defaults.decoder_guidance)
    prior = ctx.prior_mode
    modes = {"none": "caption only", "text-embed": "caption + z_t as z_i"}
    out: dict[str, Any] = {"decoder_guidance": guidance, "prior": prior, "modes": {}}
    with _bar(len(modes) + 1, "conditioning", ctx) as bar:
        for mode, label in modes.items():
            out["modes"][mode] = {"label": label, **ctx.run(UNCLIP, s.prompts, s.samples_per_prompt, mode, guidance)}
            bar.update()
        if prior is None:
            out["modes"]["prior"] = {"label": "caption + prior z_i", "skipped": skipped_note("prior_diffusion")}
        else:
            out["modes"]["prior"] = {
                "label": f"caption + {prior} prior z_i",
                **ctx.run(UNCLIP, s.prompts, s.samples_per_prompt, prior, guidance),
            }
        bar.update()
    return out


def guidance_sweep(ctx: ReportContext) -> dict[str, Any]:
    """Section 3 (Figures 9-11): metrics against decoder guidance, unCLIP (z_i fixed) and the baseline."""
    s = ctx.settings
    prior = ctx.prior_mode
    out: dict[str, Any] = {
        "scales": list(s.guidance_scales),
        "prompts": len(s.sweep_prompts),
        "samples_per_prompt": s.sweep_samples_per_prompt,
        "training": decoder_budgets(ctx.meta),
    }
    todo = [(UNCLIP, prior)] if prior is not None else []
    if ctx.baseline is not None:
        todo.append((BASELINE, "none"))
    with _bar(len(todo) * len(s.guidance_scales), "guidance sweep", ctx) as bar:
        for decoder, mode in todo:
            points = []
            for g in s.guidance_scales:
                points.append(ctx.run(decoder, s.sweep_prompts, s.sweep_samples_per_prompt, mode, g))
                bar.update()
            out[decoder] = {"prior": mode, "points": points}
    if prior is None:
        out[UNCLIP] = {"skipped": skipped_note("prior_diffusion")}
    if ctx.baseline is None:
        out[BASELINE] = {"skipped": skipped_note("decoder_text_only")}
    return out


def sample_grids(ctx: ReportContext) -> tuple[dict[str, Any], dict[str, list[tuple[float, torch.Tensor]]]]:
    """Section 4: ``grid_samples`` images of ``grid_prompt`` at every scale, both decoders.

    Returns the JSON part (image-set folders per decoder and scale) and the images
    ``{decoder: [(scale, (n, 3, S, S))]}`` for the labelled figure.
    """
    s = ctx.settings
    prompts = (s.grid_prompt,)
    todo = []
    if ctx.prior_mode is not None:
        todo.append((UNCLIP, ctx.prior_mode))
    if ctx.baseline is not None:
        todo.append((BASELINE, "none"))
    out: dict[str, Any] = {
        "prompt": s.grid_prompt,
        "samples": s.grid_samples,
        "seed": s.seed,
        "scales": list(s.guidance_scales),
    }
    images: dict[str, list[tuple[float, torch.Tensor]]] = {}
    with _bar(len(todo) * len(s.guidance_scales), "sample grids", ctx) as bar:
        for decoder, mode in todo:
            sets, images[decoder] = [], []
            for g in s.guidance_scales:
                x, expanded, _ = ctx.generate(decoder, prompts, s.grid_samples, mode, g)
                name = f"grid_{decoder}_g{g:g}"
                entries = [{"prompt": p, "seed": s.seed, "sample": i} for i, p in enumerate(expanded)]
                write_image_set(
                    ctx.out / "samples" / name,
                    tensor_to_pil(x),
                    entries,
                    {"command": "report", "decoder": decoder, "prior": mode, "decoder_guidance": g},
                    ncols=s.grid_samples,
                )
                sets.append({"guidance": g, "dir": f"samples/{name}"})
                images[decoder].append((g, x))
                bar.update()
            out[decoder] = {"prior": mode, "sets": sets}
    if ctx.prior_mode is None:
        out[UNCLIP] = {"skipped": skipped_note("prior_diffusion")}
    if ctx.baseline is None:
        out[BASELINE] = {"skipped": skipped_note("decoder_text_only")}
    return out, images
