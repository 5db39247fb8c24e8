"""What ``unclip report`` generates: prompts, samples per prompt, steps, guidance scales.

The full and quick presets are sized for the shipped 32 px model on 2 CPU cores, where the
decoder costs about 0.1 s per image per DDIM step with guidance (half that without) and
dominates the run. Full (about 20 minutes of decoding): the 32 single-object prompts x 2
samples for the prior and conditioning comparisons (4 configurations), a balanced half of
them (16 prompts x 2) for the guidance sweep (6 scales x 2 decoders), 20 DDIM steps.
Quick: 8 prompts x 2 samples everywhere, 3 scales, 10 steps. Tests shrink further by
building a :class:`ReportSettings` directly.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from ..data.shapes import COLORS, SHAPES
from ..errors import InputError


def balanced_prompts(per_colour: int) -> tuple[str, ...]:
    """``a {color} {shape}`` prompts with ``per_colour`` shapes (1, 2 or 4) for every colour.

    Colour ``i`` takes shapes ``i, i + 4 / per_colour, ...`` (mod 4), so every shape appears
    equally often. Held-out pairs: 1 of 8 with 1 per colour (green star, the full set's
    share), 3 of 16 with 2 (green star, cyan triangle, pink square), all 4 of 32 with 4.
    """
    if per_colour not in (1, 2, 4):
        raise InputError(f"per_colour must be 1, 2 or 4, got {per_colour}")
    step = len(SHAPES) // per_colour
    return tuple(f"a {c} {SHAPES[(i + j * step) % len(SHAPES)]}" for i, c in enumerate(COLORS) for j in range(per_colour))


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

    prompts: tuple[str, ...] = field(default_factory=lambda: balanced_prompts(4))
    samples_per_prompt: int = 2
    sweep_prompts: tuple[str, ...] = field(default_factory=lambda: balanced_prompts(2))
    sweep_samples_per_prompt: int = 2
    decoder_steps: int = 20
    guidance_scales: tuple[float, ...] = (1.0, 1.5, 2.0, 3.0, 4.0, 6.0)
    grid_prompt: str = "a red circle"
    grid_samples: int = 4
    reference_images: int = 512
    cosine_captions: int = 128
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
            raise InputError("report settings need at least 2 samples per prompt (diversity compares samples of one caption)")
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
        return cls(prompts=eight, sweep_prompts=eight, decoder_steps=10, guidance_scales=(1.0, 3.0, 6.0), reference_images=128, cosine_captions=32, seed=seed)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["prompts"], d["sweep_prompts"], d["guidance_scales"] = list(self.prompts), list(self.sweep_prompts), list(self.guidance_scales)
        return d
