"""EDICT: exact DDIM inversion by two coupled sequences (Wallace, Gokul and Naik, 2023).

Plain DDIM inversion (:func:`.sampling.ddim_invert`) guesses the noise prediction of the
step it is climbing; it is exact only when the network's implied noise changes slowly along
the path, and fixed-point refinement only helps when that guess is a contraction. A network
that predicts x0 and, at the clean end, does not pass its input's fine detail through (our
residual upsampler on outside images: 22 dB for an input with sigma 0.006 of noise) breaks
both: DDIM's last step returns the network's x0, which never holds that detail, so no noise
decodes to the image and refinement cannot converge.

EDICT keeps two sequences (x, y), both starting at the image, and updates them by affine
coupling layers: each half-step changes one sequence by an amount computed from the other
only, then a mixing step averages them with weight ``mix`` (the paper's p). Every update is
therefore undone by algebra, whatever the network does, and decoding retraces the inversion
to float precision. Per step, with the DDIM coefficients a = sqrt(abar_prev / abar) and
b = sqrt(1 - abar_prev) - a sqrt(1 - abar) (so that a x + b eps(x) is DDIM's eta-0 step):

    x' = a x + b eps(y)        y' = a y + b eps(x')
    x  <- mix x' + (1 - mix) y'    y <- mix y' + (1 - mix) x

Two model calls per step in each direction. The noise pair it returns is not a sample of
N(0, I) when the network cannot reach the image by plain DDIM (it absorbs the detail the
network would drop), so it serves eta-0 round trips; it is not a starting point for
stochastic sampling.
"""

from __future__ import annotations

import math

import torch

from ..errors import InputError
from .gaussian import GaussianDiffusion
from .sampling import ModelFn, _full, _indices, _respaced

# The paper's p. Nearer 1 the mixing step averages less and the two sequences drift apart;
# lower, the inverse divides by p twice per step and amplifies rounding errors.
DEFAULT_MIX = 0.93


def _check_mix(mix: float) -> float:
    if not 0.5 < float(mix) <= 1.0:
        raise InputError(f"mix must lie in (0.5, 1] (the paper uses 0.93), got {mix}")
    return float(mix)


def _step_coefficients(d: GaussianDiffusion, i: int) -> tuple[float, float]:
    """(a, b) of DDIM's eta-0 step from index i to the level below: x_prev = a x + b eps."""
    abar, abar_prev = float(d.alphas_cumprod[i]), float(d.alphas_cumprod_prev[i])
    a = math.sqrt(abar_prev / abar)
    return a, math.sqrt(1.0 - abar_prev) - a * math.sqrt(1.0 - abar)


def _eps(model_fn: ModelFn, d: GaussianDiffusion, i: int, x: torch.Tensor) -> torch.Tensor:
    return d.predict(model_fn(x, _full(int(d.timestep_map[i]), x)), x, i)[1]


@torch.no_grad()
def edict_invert(
    model_fn: ModelFn,
    diffusion: GaussianDiffusion,
    x0: torch.Tensor,
    *,
    steps: int | None = None,
    mix: float = DEFAULT_MIX,
    progress: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Invert data x0 (B, ...) to EDICT's noise pair (x_T, y_T); :func:`edict_sample` gives x0 back.

    ``steps`` respaces as the other samplers do; decode with the same diffusion, steps and mix.
    """
    mix = _check_mix(mix)
    d = _respaced(diffusion, steps)
    x = y = x0
    for i in _indices(range(d.num_timesteps), progress, d.num_timesteps, "edict-invert"):
        a, b = _step_coefficients(d, i)
        y_mid = (y - (1.0 - mix) * x) / mix
        x_mid = (x - (1.0 - mix) * y_mid) / mix
        y = (y_mid - b * _eps(model_fn, d, i, x_mid)) / a
        x = (x_mid - b * _eps(model_fn, d, i, y)) / a
    return x, y


@torch.no_grad()
def edict_sample(
    model_fn: ModelFn,
    diffusion: GaussianDiffusion,
    x_T: torch.Tensor,
    y_T: torch.Tensor,
    *,
    steps: int | None = None,
    mix: float = DEFAULT_MIX,
    progress: bool = False,
) -> torch.Tensor:
    """Decode EDICT's noise pair (x_T, y_T) to data: the x sequence at the clean end.

    With ``x_T = y_T`` this is a deterministic sampler close to DDIM at eta 0, over schedules
    that stop short of alpha-bar ~ 0 (as :func:`unclip.manipulate.manipulation_diffusion` does;
    from the cosine schedule's last step, a = sqrt(abar_prev / abar) ~ 100 and the two
    sequences' difference blows up).
    """
    mix = _check_mix(mix)
    if x_T.shape != y_T.shape:
        raise InputError(f"EDICT's two noises must have the same shape, got {tuple(x_T.shape)} and {tuple(y_T.shape)}")
    d = _respaced(diffusion, steps)
    x, y = x_T, y_T
    for i in _indices(reversed(range(d.num_timesteps)), progress, d.num_timesteps, "edict"):
        a, b = _step_coefficients(d, i)
        x_mid = a * x + b * _eps(model_fn, d, i, y)
        y_mid = a * y + b * _eps(model_fn, d, i, x_mid)
        x = mix * x_mid + (1.0 - mix) * y_mid
        y = mix * y_mid + (1.0 - mix) * x
    return x
