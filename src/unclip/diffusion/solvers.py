"""Fast high-order samplers: DPM-Solver++(2M), deterministic or stochastic.

Same contract as :mod:`.sampling` (``(model_fn, diffusion, x_T, *, steps, eta, generator,
callback, clip_x0, progress)``; ``model_fn`` is called with ORIGINAL timesteps); any of the
three parameterisations (eps, x0, v) works because the solver only needs the x0 estimate.

DPM-Solver++ (Lu et al. 2022, arXiv 2211.01095) solves the diffusion ODE in the half
log-SNR lambda = log(alpha / sigma), alpha = sqrt(abar), sigma = sqrt(1 - abar), with the
data prediction D = x0_hat. From level s to the next (less noisy) level t, with
h = lambda_t - lambda_s > 0, the exact solution of the linear part gives (Alg. 2, "2M")

    x_t = (sigma_t / sigma_s) x_s + alpha_t (1 - e^-h) D,
    D = (1 + 1/(2r)) D_s - 1/(2r) D_prev,   r = h_prev / h,

a multistep second-order update that reuses the previous step's D, so it costs one network
call per step. The first step and the final step down to the clean level (sigma = 0,
lambda = inf) are first order (the final one returns D itself, like DDIM's last step). So
is any step more than twice as long in lambda as the one before (r < 1/2, an extrapolation
weight 1/(2r) above 1): evenly spaced timesteps end with such a jump into the least noisy
level, where the extrapolation made the exact Gaussian ODE's error 10-50x larger than
first order does (tests/diffusion/test_diffusion_solvers.py); diffusers' "lower order final"
guards the same end of the schedule.

``eta`` > 0 gives the stochastic variant (SDE-DPM-Solver++(2M), the same paper's SDE
solver, as in diffusers' ``sde-dpmsolver++`` and k-diffusion's ``dpmpp_2m_sde``):

    x_t = (sigma_t / sigma_s) e^(-eta h) x_s + alpha_t (1 - e^-(1+eta)h) [D_s + (D_s - D_prev)/(2r)]
          + sigma_t sqrt(1 - e^(-2 eta h)) z.

With eta = 1 its first-order form is exactly the DDPM posterior step (DDIM with eta = 1);
with eta = 0 it is the ODE solver above.
"""

from __future__ import annotations

import math

import torch

from ..errors import InputError
from .gaussian import GaussianDiffusion, randn_like
from .sampling import Callback, ModelFn, _full, _indices, _respaced


@torch.no_grad()
def dpmpp_2m_sample(
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
    """DPM-Solver++(2M) from x_T (B, ...) to x0 (see the module docstring for the update).

    eta = 0 (default) is the deterministic ODE solver; eta = 1 the stochastic one, whose
    first-order step equals DDPM's. ``clip_x0`` clamps the x0 estimate before it enters the
    update (the solver works on x0 predictions, so this is the natural place). A learned
    variance is ignored. Costs one ``model_fn`` call per step.
    """
    if not eta >= 0.0:
        raise InputError(f"eta must be >= 0 (0 = deterministic DPM-Solver++(2M), 1 = its SDE variant), got {eta}")
    d = _respaced(diffusion, steps)
    x = x_T
    d_prev: torch.Tensor | None = None
    h_prev = 0.0
    for n, i in enumerate(_indices(reversed(range(d.num_timesteps)), progress, d.num_timesteps, "dpm++2m")):
        t_orig = int(d.timestep_map[i])
        pred_x0, _ = d.predict(model_fn(x, _full(t_orig, x)), x, i, clip_x0)
        abar, abar_next = float(d.alphas_cumprod[i]), float(d.alphas_cumprod_prev[i])
        if abar_next >= 1.0:  # the last step, to the clean level: x0 itself (first order)
            x = pred_x0
        else:
            sigma, sigma_next = math.sqrt(1.0 - abar), math.sqrt(1.0 - abar_next)
            alpha_next = math.sqrt(abar_next)
            h = 0.5 * (math.log(abar_next / (1.0 - abar_next)) - math.log(abar / (1.0 - abar)))
            weight = alpha_next * -math.expm1(-(1.0 + eta) * h)
            data = pred_x0
            if d_prev is not None and h <= 2.0 * h_prev:
                data = pred_x0 + (pred_x0 - d_prev) * (h / (2.0 * h_prev))
            x = (sigma_next / sigma) * math.exp(-eta * h) * x + weight * data
            if eta > 0.0:
                x = x + sigma_next * math.sqrt(-math.expm1(-2.0 * eta * h)) * randn_like(x, generator)
            h_prev = h
        d_prev = pred_x0
        if callback is not None:
            callback(n, t_orig, x, pred_x0)
    return x


#: the solvers of this module by the method name :func:`unclip.diffusion.sample` knows them by
SOLVERS = {"dpmpp2m": dpmpp_2m_sample}
