"""What ``unclip report`` generates: prompts, samples per prompt, steps, guidance scales.

The full and quick presets are sized for the shipped 32 px model on 2 CPU cores (costs
measured as CPU seconds on a busy 2-core machine, halved; see :meth:`ReportSettings.estimate_s`):
the decoder costs about 0.105 s per image per DDIM step with guidance and 0.05 s
without, Inception-v3 features about 0.2 s per image, the diffusion prior (64 steps, best
of 2) about 0.35 s per embedding. Full: the 32 single-object prompts x 2 samples for the
prior and conditioning comparisons (4 configurations), 8 balanced prompts x 3 samples for
the guidance sweep (6 scales x 2 decoders), 20 DDIM steps: about 20 minutes of decoding
and 25 in all. Quick: 8 prompts x 2 samples everywhere, 3 scales, 10 steps: about 4
minutes. Tests shrink further by building a :class:`ReportSettings` directly.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from ...data.shapes import COLORS, SHAPES, single_object_prompts
from ...errors import InputError

# Costs of the shipped 32 px model on 2 idle CPU cores, for :meth:`ReportSettings.estimate_s`.
DECODER_S_PER_IMAGE_STEP = {"guided": 0.105, "unguided": 0.05}
INCEPTION_S_PER_IMAGE = 0.2
PRIOR_S_PER_EMBEDDING = 0.35  # diffusion prior, 64 steps, best of 2; the AR prior is not counted
OVERHEAD_S = 30.0
DEFAULT_GUIDANCE = 3.0


def balanced_prompts(per_colour: int) -> tuple[str, ...]:
    """``a {color} {shape}`` prompts with ``per_colour`` shapes (1, 2 or 4) for every colour.

    Colour ``i`` takes shapes ``i, i + 4 / per_colour, ...`` (mod 4), so every shape appears
    equally often. Held-out pairs: 1 of 8 with 1 per colour (green star, the full set's
    share), 3 of 16 with 2 (green star, cyan triangle, pink square), all 4 of 32 with 4.
    """
    if per_colour not in (1, 2, 4):
        raise InputError(f"per_colour must be 1, 2 or 4, got {per_colour}")
    step = len(SHAPES) // per_colour
    return tuple(
        f"a {c} {SHAPES[(i + j * step) % len(SHAPES)]}" for i, c in enumerate(COLORS) for j in range(per_colour)
    )


@dataclass
class ReportSettings:
    """Everything the report's numbers depend on (written to results.json and the page).

    ``prompts`` x ``samples_per_prompt`` images per configuration in sections 1-2 (prior
    comparison, Figure 8 modes); ``sweep_prompts`` x ``sweep_samples_per_prompt`` per
    guidance scale and decoder in section 3 (at least 2 samples per prompt: diversity is
    measured between samples of one caption). ``reference_images`` real single-object test
    images (of the evaluated colour-shape pairs) are the Frechet / precision-recall
    reference. ``cosine_captions`` test captions measure the prior's cosine to the true z_i.
    ``inception``: None uses Inception-v3 FID features when installed, False never does.
    """

    prompts: tuple[str, ...] = field(default_factory=lambda: tuple(single_object_prompts()))
    samples_per_prompt: int = 2
    sweep_prompts: tuple[str, ...] = field(default_factory=lambda: balanced_prompts(1))
    sweep_samples_per_prompt: int = 3
    decoder_steps: int = 20
    guidance_scales: tuple[float, ...] = (1.0, 1.5, 2.0, 3.0, 4.0, 6.0)
    grid_prompt: str = "a red circle"
    grid_samples: int = 4
    reference_images: int = 512
    cosine_captions: int = 64
    seed: int = 0
    inception: bool | None = None
    precision_recall_k: int = 3
    progress: bool = True
    cache_dir: str | None = None  # default: OUT/cache

    def __post_init__(self) -> None:
        self.prompts = tuple(self.prompts)
        self.sweep_prompts = tuple(self.sweep_prompts)
        self.guidance_scales = tuple(float(g) for g in self.guidance_scales)
        if not self.prompts or not self.sweep_prompts:
            raise InputError("report settings need at least one prompt and one sweep prompt")
        if self.samples_per_prompt < 2 or self.sweep_samples_per_prompt < 2:
            raise InputError(
                "report settings need at least 2 samples per prompt (diversity compares samples of one caption)"
            )
        if self.decoder_steps < 1 or self.grid_samples < 1 or self.cosine_captions < 2:
            raise InputError("decoder_steps and grid_samples must be >= 1 and cosine_captions >= 2")
        if len(self.guidance_scales) < 2 or any(g < 1.0 for g in self.guidance_scales):
            raise InputError(f"give at least 2 decoder guidance scales, each >= 1, got {self.guidance_scales}")
        if self.reference_images < 4:
            raise InputError(f"reference_images must be >= 4, got {self.reference_images}")
        self.guidance_scales = tuple(sorted(set(self.guidance_scales)))

    @classmethod
    def full(cls, seed: int = 0) -> "ReportSettings":
        """The full report (about 25 minutes on 2 CPU cores with the shipped model)."""
        return cls(seed=seed)

    @classmethod
    def quick(cls, seed: int = 0) -> "ReportSettings":
        """``--quick``: 8 prompts x 2 samples, 3 scales, 10 steps (a few minutes)."""
        eight = balanced_prompts(1)
        return cls(
            prompts=eight,
            sweep_prompts=eight,
            sweep_samples_per_prompt=2,
            decoder_steps=10,
            guidance_scales=(1.0, 3.0, 6.0),
            reference_images=128,
            cosine_captions=32,
            seed=seed,
        )

    def estimate_s(self, inception: bool = True) -> float:
        """Rough wall time in seconds on 2 CPU cores for the shipped model (decoding dominates).

        Counts the decoder image-steps of every configuration (4 at the default guidance in
        sections 1-2; every scale for both decoders in the sweep, less the one it shares with
        section 2 when the prompt sets agree; the grids), the Inception features of every
        scored image and of the reference, and the diffusion prior's embeddings.
        """

        def decode(images: int, guidance: float) -> float:
            return images * self.decoder_steps * DECODER_S_PER_IMAGE_STEP["guided" if guidance != 1.0 else "unguided"]

        main = len(self.prompts) * self.samples_per_prompt
        sweep = len(self.sweep_prompts) * self.sweep_samples_per_prompt
        shared = (
            self.prompts == self.sweep_prompts
            and self.samples_per_prompt == self.sweep_samples_per_prompt
            and DEFAULT_GUIDANCE in self.guidance_scales
        )
        seconds = 4 * decode(main, DEFAULT_GUIDANCE)
        seconds += sum(2 * decode(sweep, g) for g in self.guidance_scales) - (
            decode(sweep, DEFAULT_GUIDANCE) if shared else 0.0
        )
        seconds += sum(2 * decode(self.grid_samples, g) for g in self.guidance_scales)
        scored = 4 * main + 2 * len(self.guidance_scales) * sweep - (sweep if shared else 0)
        if inception:
            seconds += (scored + self.reference_images) * INCEPTION_S_PER_IMAGE
        embeddings = main + (0 if shared else sweep) + self.grid_samples + self.cosine_captions
        return seconds + embeddings * PRIOR_S_PER_EMBEDDING + OVERHEAD_S

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["prompts"], d["sweep_prompts"], d["guidance_scales"] = (
            list(self.prompts),
            list(self.sweep_prompts),
            list(self.guidance_scales),
        )
        return d
