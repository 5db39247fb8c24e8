"""Karlo's ``UnCLIPScheduler`` settings mapped onto our diffusion objects.

diffusers stores one ``scheduler_config.json`` per stage (``prior_scheduler``,
``decoder_scheduler``, ``super_res_scheduler``). Each names a beta schedule, the number of
training steps, what the network predicts, the variance of the reverse steps and an x0
clipping range. All of Karlo's values have an exact counterpart here:

========================  ==========================================================
UnCLIPScheduler           ours
========================  ==========================================================
squaredcos_cap_v2         ``schedule="cosine"`` (Nichol & Dhariwal eq. 17, beta <= 0.999)
num_train_timesteps       ``num_timesteps``
prediction_type epsilon   ``prediction="eps"``; ``sample`` -> ``prediction="x0"``
variance fixed_small_log  ``learned_variance=False``: DDPM draws with the posterior
                          variance, whose log is clipped only at t = 0, where no noise is
                          drawn (diffusers clamps it at 1e-20 instead: same draws)
variance learned_range    ``learned_variance=True``: exp(frac log beta + (1 - frac) log
                          posterior variance), frac = (v + 1)/2 (iDDPM eq. 15), with beta
                          the respaced step's own beta, as diffusers computes it
clip_sample (range r)     ``clip_x0=r`` passed to the sampler (prior 5.0, others 1.0)
set_timesteps(n)          :func:`karlo_timesteps` (see below) + ``GaussianDiffusion.respace``
========================  ==========================================================

Where the two differ (tests/adapters/test_schedules.py measures each):

* diffusers computes the betas and their cumulative product in float32; ours are float64.
  Betas agree to 3e-8 and alpha-bar to 1.4e-5 relative (the tail of the cosine schedule).
* our :func:`unclip.diffusion.spaced_timesteps` rounds half up; Karlo rounds half to even
  (numpy), so for 7 and 25 steps (Karlo's defaults) two timesteps differ by one (166 vs 167,
  832 vs 833). Karlo's own DDPM sampling here uses :func:`karlo_timesteps`; DDIM paths of
  the pipeline (manipulations, the ``eta`` sampler) keep ours.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..diffusion import DiffusionSettings, GaussianDiffusion
from ..errors import ConfigError

PREDICTIONS = {"epsilon": "eps", "sample": "x0"}
VARIANCES = {"fixed_small_log": False, "learned_range": True}


@dataclass(frozen=True)
class StageSchedule:
    """How one Karlo stage is sampled: its diffusion settings and x0 clipping range (None: no clipping)."""

    settings: DiffusionSettings
    clip_x0: float | None

    def diffusion(self, steps: int | None = None) -> GaussianDiffusion:
        """The stage's diffusion, respaced to Karlo's ``steps`` timesteps (None: all of them)."""
        full = self.settings.make()
        if steps is None or steps == full.num_timesteps:
            return full
        return full.respace(karlo_timesteps(full.num_timesteps, steps))


def karlo_timesteps(num_timesteps: int, steps: int) -> list[int]:
    """Karlo's ``steps`` timesteps, increasing: round(i (T - 1)/(steps - 1)), ties to even.

    ``UnCLIPScheduler.set_timesteps`` rounds with numpy (half to even); Python's ``round``
    does the same on floats. Always holds 0 and T - 1 (steps >= 2).
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or not 2 <= steps <= num_timesteps:
        raise ConfigError(f"Karlo's sampler needs an int number of steps in [2, {num_timesteps}], got {steps!r}")
    ratio = (num_timesteps - 1) / (steps - 1)
    out = [round(i * ratio) for i in range(steps)]
    if len(set(out)) != steps:  # cannot happen for ratio >= 1; guards the invariant respace needs
        raise ConfigError(f"{steps} Karlo timesteps of {num_timesteps} are not distinct")
    return out


def stage_schedule(config: Mapping[str, Any], where: str = "scheduler_config.json") -> StageSchedule:
    """Map an ``UnCLIPScheduler`` config (a dict from its JSON file) onto a :class:`StageSchedule`.

    Raises ConfigError naming ``where`` for a value our diffusion cannot express.
    """
    cls = config.get("_class_name", "UnCLIPScheduler")
    if cls not in ("UnCLIPScheduler", "DDPMScheduler"):
        raise ConfigError(f"{where}: scheduler class {cls!r} is not supported; Karlo uses UnCLIPScheduler")
    beta = config.get("beta_schedule", "squaredcos_cap_v2")
    if beta != "squaredcos_cap_v2":
        raise ConfigError(
            f"{where}: beta_schedule {beta!r} is not supported; only squaredcos_cap_v2 (our 'cosine') maps exactly"
        )
    prediction = config.get("prediction_type", "epsilon")
    if prediction not in PREDICTIONS:
        raise ConfigError(
            f"{where}: prediction_type {prediction!r} is not supported; choose one of {', '.join(PREDICTIONS)}"
        )
    variance = config.get("variance_type", "fixed_small_log")
    if variance not in VARIANCES:
        raise ConfigError(f"{where}: variance_type {variance!r} is not supported; choose one of {', '.join(VARIANCES)}")
    steps = int(config.get("num_train_timesteps", 1000))
    clip = float(config.get("clip_sample_range", 1.0)) if config.get("clip_sample", True) else None
    settings = DiffusionSettings(
        schedule="cosine", num_timesteps=steps, prediction=PREDICTIONS[prediction], learned_variance=VARIANCES[variance]
    )
    return StageSchedule(settings, clip)
