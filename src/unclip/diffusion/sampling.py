"""Samplers: DDPM ancestral sampling, DDIM with any eta, and DDIM inversion.

All are plain functions of ``(model_fn, diffusion, x, *, steps, ...)``. ``model_fn(x, t)``
returns the network's raw output, with ``t`` a LongTensor (B,) of ORIGINAL timesteps
(0..T-1 of ``diffusion`` before any respacing); bind conditioning and guidance into it first
(see :mod:`.guidance`). ``steps`` < T runs on ``diffusion.respace(spaced_timesteps(T, steps))``
and calls the model with the original timestep of each kept step; the model function itself
is never changed. ``callback(step_index, t, x, pred_x0)`` is called after every step with the
step's position (0 first), the original timestep it denoised (int), the new x and the x0
estimate (:func:`ddim_invert` passes the timestep it reached). Noise comes from
``generator``: the same generator state gives the same samples. Samplers run under
``torch.no_grad()``.
"""

from __future__ import annotations

import math
from typing import Callable, Iterable

import torch
from tqdm.auto import tqdm

from ..errors import InputError
from .gaussian import GaussianDiffusion, randn_like
from .schedule import spaced_timesteps

ModelFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Callback = Callable[[int, int, torch.Tensor, torch.Tensor], None]


def _respaced(diffusion: GaussianDiffusion, steps: int | None) -> GaussianDiffusion:
    """The diffusion to step through: ``diffusion`` itself for all steps, else a respaced copy."""
    if steps is None or steps == diffusion.num_timesteps:
        return diffusion
    return diffusion.respace(spaced_timesteps(diffusion.num_timesteps, steps))


def _indices(order: Iterable[int], progress: bool, total: int, desc: str) -> Iterable[int]:
    return tqdm(order, total=total, desc=desc, disable=not progress, leave=False)


def _full(value: int, x: torch.Tensor) -> torch.Tensor:
    return torch.full((x.shape[0],), value, dtype=torch.long, device=x.device)


@torch.no_grad()
def ddpm_sample(
    model_fn: ModelFn,
    diffusion: GaussianDiffusion,
    x_T: torch.Tensor,
    *,
    steps: int | None = None,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
    clip_x0: float | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """Ancestral sampling x_{t-1} ~ p(x_{t-1} | x_t) from x_T (B, ...) down to x0 (DDPM Alg. 2).

    Uses the learned variance when ``diffusion.learned_variance`` (iDDPM), else the posterior
    variance. No noise is added at the last step, which returns the mean (= pred x0).
    """
    d = _respaced(diffusion, steps)
    x = x_T
    for n, i in enumerate(_indices(reversed(range(d.num_timesteps)), progress, d.num_timesteps, "ddpm")):
        t_orig = int(d.timestep_map[i])
        out = d.p_mean_variance(model_fn(x, _full(t_orig, x)), x, i, clip_x0)
        x = out["mean"]
        if i > 0:
            x = x + torch.exp(0.5 * out["log_variance"]) * randn_like(x, generator)
        if callback is not None:
            callback(n, t_orig, x, out["pred_x0"])
    return x


@torch.no_grad()
def ddim_sample(
    model_fn: ModelFn,
    diffusion: GaussianDiffusion,
    x_T: torch.Tensor,
    *,
    steps: int | None = None,
    eta: float = 0.0,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
    clip_x0: float | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """DDIM sampling from x_T (B, ...) to x0 (Song et al. 2021, eq. 12).

    x_{prev} = sqrt(abar_prev) x0_hat + sqrt(1 - abar_prev - sigma^2) eps_hat + sigma z with
    sigma = eta sqrt((1 - abar_prev)/(1 - abar)) sqrt(1 - abar/abar_prev). eta = 0 is
    deterministic (no noise is drawn); eta = 1 matches DDPM with the posterior variance.

    With a learned variance (``diffusion.learned_variance``) and eta > 0, sigma^2 is eta^2
    times the model's variance Sigma_theta of :meth:`GaussianDiffusion.p_mean_variance`
    (iDDPM eq. 15) on the diffusion actually stepped through: when ``steps`` respaces it, the
    interpolation runs between the respaced posterior variance and the respaced beta,
    1 - abar_t / abar_prev (iDDPM Sec. 4). For eta = 0 the variance channels are ignored.
    Since the fixed sigma^2 at eta = 1 is exactly the respaced posterior variance, a model
    whose variance values are all -1 samples as the fixed-variance sampler does. As in
    DDPM, no noise is added at the last step. (improved-diffusion's own DDIM ignores the
    learned variance; this is our extension, so that ``eta > 0`` uses what was learned.)
    """
    if not eta >= 0.0:
        raise InputError(f"eta must be >= 0 (0 = deterministic DDIM, 1 = DDPM-like), got {eta}")
    d = _respaced(diffusion, steps)
    x = x_T
    for n, i in enumerate(_indices(reversed(range(d.num_timesteps)), progress, d.num_timesteps, "ddim")):
        t_orig = int(d.timestep_map[i])
        output = model_fn(x, _full(t_orig, x))
        pred_x0, pred_eps = d.predict(output, x, i, clip_x0)
        abar, abar_prev = float(d.alphas_cumprod[i]), float(d.alphas_cumprod_prev[i])
        if d.learned_variance and eta > 0.0 and i > 0:
            # sigma^2 = eta^2 Sigma_theta, per element; clamped so the eps coefficient stays real.
            log_var = d.p_mean_variance(output, x, i, clip_x0)["log_variance"]
            sigma2 = (eta**2 * log_var.exp()).clamp(max=1.0 - abar_prev)
            x = math.sqrt(abar_prev) * pred_x0 + (1.0 - abar_prev - sigma2).sqrt() * pred_eps
            x = x + sigma2.sqrt() * randn_like(x, generator)
        else:
            sigma = eta * math.sqrt((1.0 - abar_prev) / (1.0 - abar)) * math.sqrt(1.0 - abar / abar_prev)
            x = math.sqrt(abar_prev) * pred_x0 + math.sqrt(max(1.0 - abar_prev - sigma**2, 0.0)) * pred_eps
            if sigma > 0.0:
                x = x + sigma * randn_like(x, generator)
        if callback is not None:
            callback(n, t_orig, x, pred_x0)
    return x


@torch.no_grad()
def ddim_invert(
    model_fn: ModelFn,
    diffusion: GaussianDiffusion,
    x0: torch.Tensor,
    *,
    steps: int | None = None,
    callback: Callback | None = None,
    clip_x0: float | None = None,
    progress: bool = False,
    refine: int = 0,
) -> torch.Tensor:
    """Run deterministic DDIM forwards from data x0 (B, ...) to its noise x_T (unCLIP Sec. 3.1).

    The reverse of :func:`ddim_sample` with eta = 0 and the same ``steps``. A sampler step
    maps x_k to x_{k-1} with the model's eps at x_k; going up, x_k is unknown, so each step
    first uses the eps at x_{k-1}, evaluated at x_{k-1}'s own timestep (the first step, from
    the clean x0, uses the first timestep). Decoding then returns x0 up to how much eps
    changes along one step, an error that shrinks like 1/steps. ``refine`` > 0 re-evaluates
    the model at the x_k just reached that many times per step (a fixed-point iteration,
    as in AIDI, Pan et al. 2023), which makes the inversion exact to the sampler as the
    iteration converges, at (1 + refine) model calls per step.
    """
    if refine < 0:
        raise InputError(f"refine must be >= 0 (extra fixed-point iterations per step), got {refine}")
    d = _respaced(diffusion, steps)
    x = x0
    abar_cur = 1.0  # the clean x0 sits at alpha-bar 1, below the first step

    def up(x_from: torch.Tensor, eps: torch.Tensor, abar_next: float) -> tuple[torch.Tensor, torch.Tensor]:
        # (x0_hat, eps) consistent with x_from at its level, then re-noised to abar_next.
        x0_hat = (x_from - math.sqrt(1.0 - abar_cur) * eps) / math.sqrt(abar_cur)
        return math.sqrt(abar_next) * x0_hat + math.sqrt(1.0 - abar_next) * eps, x0_hat

    for n, k in enumerate(_indices(range(d.num_timesteps), progress, d.num_timesteps, "ddim-invert")):
        j = max(k - 1, 0)  # the step whose noise level x is at (the first for the clean x0)
        _, eps = d.predict(model_fn(x, _full(int(d.timestep_map[j]), x)), x, j, clip_x0)
        abar_next = float(d.alphas_cumprod[k])
        t_orig = int(d.timestep_map[k])
        x_next, x0_hat = up(x, eps, abar_next)
        for _ in range(refine):
            _, eps = d.predict(model_fn(x_next, _full(t_orig, x)), x_next, k, clip_x0)
            x_next, x0_hat = up(x, eps, abar_next)
        x, abar_cur = x_next, abar_next
        if callback is not None:
            callback(n, t_orig, x, x0_hat)
    return x


_METHODS = {"ddpm": ddpm_sample, "ddim": ddim_sample}
