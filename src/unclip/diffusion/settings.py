"""How a trained diffusion component is sampled: the settings stored beside its weights.

A component's ``config.json`` keeps, under ``extra["diffusion"]``, the schedule, the number
of timesteps, what the network predicts and whether it learns its variance; these rebuild
the :class:`~unclip.diffusion.gaussian.GaussianDiffusion` it was trained with. Inference
reads them from here, so that loading a model never imports the training code.
"""

from __future__ import annotations

from dataclasses import dataclass

from .gaussian import GaussianDiffusion

# DDIM steps of the upsampler stages by training corruption: the paper samples its 64->256
# (blur) stage with 27 steps and its 256->1024 (BSR) stage with 15 (unCLIP section 2.1).
UPSAMPLER_DEFAULT_STEPS = {"blur": 27, "bsr": 15, "bsr-light": 15, "none": 27}


@dataclass
class DiffusionSettings:
    """How a diffusion component was trained; stored beside its weights."""

    schedule: str = "cosine"
    num_timesteps: int = 1000
    prediction: str = "eps"
    learned_variance: bool = False

    def make(self) -> GaussianDiffusion:
        """The :class:`GaussianDiffusion` these settings describe."""
        return GaussianDiffusion.make(
            schedule=self.schedule,
            num_timesteps=self.num_timesteps,
            prediction=self.prediction,
            learned_variance=self.learned_variance,
        )
