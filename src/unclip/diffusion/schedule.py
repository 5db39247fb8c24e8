"""Noise schedules (betas) and the choice of timesteps for a shortened sampler.

The schedules are computed in float64: alpha-bar is a long product of numbers close to one,
and float32 loses the tail of the cosine schedule where alpha-bar is ~1e-5.
"""

from __future__ import annotations

import math

import torch

from ..errors import ConfigError

SCHEDULES = ("linear", "cosine")


def _check_num_timesteps(num_timesteps: int) -> None:
    if isinstance(num_timesteps, bool) or not isinstance(num_timesteps, int) or num_timesteps < 1:
        raise ConfigError(f"num_timesteps must be a positive int, got {num_timesteps!r}; use e.g. 1000")


def linear_betas(num_timesteps: int) -> torch.Tensor:
    """Linear betas of DDPM (Ho et al. 2020, Sec. 4), rescaled so any T gives the same shape.

    beta runs from 1e-4 * 1000/T to 0.02 * 1000/T; with T = 1000 these are the paper's values.
    Returns (T,) float64.
    """
    _check_num_timesteps(num_timesteps)
    scale = 1000.0 / num_timesteps
    start, end = scale * 1e-4, scale * 0.02
    if end >= 1.0:
        raise ConfigError(
            f"the linear schedule needs num_timesteps >= 21 (beta_T = 20/T must be < 1), got {num_timesteps}; use "
            "the cosine schedule for fewer steps"
        )
    return torch.linspace(start, end, num_timesteps, dtype=torch.float64)


def cosine_alpha_bar(u: torch.Tensor, s: float = 0.008) -> torch.Tensor:
    """The un-normalised cosine alpha-bar f(u) = cos^2(pi/2 * (u + s)/(1 + s)) at u = t/T in [0, 1]."""
    return torch.cos((u + s) / (1.0 + s) * (math.pi / 2.0)) ** 2


def cosine_betas(num_timesteps: int, s: float = 0.008, max_beta: float = 0.999) -> torch.Tensor:
    """Cosine betas of Nichol & Dhariwal 2021 (improved DDPM, Sec. 3.2, eq. 17).

    alpha-bar_t = f(t/T)/f(0) with f above; beta_t = 1 - alpha-bar_{t+1}/alpha-bar_t (0-based
    t, so the first beta already adds a little noise) clipped at ``max_beta`` to avoid the
    singularity at t = T. Returns (T,) float64.
    """
    _check_num_timesteps(num_timesteps)
    u = torch.arange(num_timesteps + 1, dtype=torch.float64) / num_timesteps
    f = cosine_alpha_bar(u, s)
    betas = 1.0 - f[1:] / f[:-1]
    return betas.clamp(max=max_beta)


def make_betas(name: str, num_timesteps: int) -> torch.Tensor:
    """Betas (T,) float64 of the schedule ``name`` ("linear" or "cosine") over ``num_timesteps`` steps."""
    if name == "linear":
        return linear_betas(num_timesteps)
    if name == "cosine":
        return cosine_betas(num_timesteps)
    raise ConfigError(f"unknown noise schedule {name!r}; choose one of {', '.join(SCHEDULES)}")


def spaced_timesteps(num_timesteps: int, steps: int) -> list[int]:
    """``steps`` timesteps of a T-step diffusion, evenly spaced, increasing and unique.

    The list always holds 0 (the last denoising step, closest to the data) and T - 1 (the
    noisiest step, where sampling starts); ``steps == 1`` gives ``[T - 1]`` alone, a single
    jump from noise to data. Used to shorten a sampler (iDDPM Sec. 4; DDIM Sec. 4.2).
    """
    _check_num_timesteps(num_timesteps)
    if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= num_timesteps:
        raise ConfigError(
            f"steps must be an int in [1, {num_timesteps}] (the number of diffusion timesteps), got {steps!r}"
        )
    if steps == 1:
        return [num_timesteps - 1]
    # Spacing (T-1)/(steps-1) >= 1, so rounding cannot merge two neighbours.
    step = (num_timesteps - 1) / (steps - 1)
    out = [int(math.floor(i * step + 0.5)) for i in range(steps)]
    out[-1] = num_timesteps - 1
    assert len(set(out)) == steps and out == sorted(out)
    return out
