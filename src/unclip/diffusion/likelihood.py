"""The full variational bound of a diffusion model, in bits per dimension (DDPM eq. 5; iDDPM Sec. 3).

-log p(x0) <= L_T + sum_{t>1} L_{t-1} + L_0, with

- L_T = KL(q(x_T | x0) || N(0, I)), the prior term (no network; small for a good schedule),
- L_{t-1} = KL(q(x_{t-1} | x_t, x0) || p(x_{t-1} | x_t)) for every t > 0,
- L_0 = -log p(x0 | x_1), discretised to 256 levels for images in [-1, 1].

:func:`vlb_bpd` evaluates every term (one network call per timestep, each at a fresh draw of
x_t ~ q(x_t | x0)), which is what iDDPM reports as NLL; it is the measure under which a
learned variance (hybrid loss) is expected to beat a fixed one.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from .gaussian import GaussianDiffusion, randn_like
from .losses import mean_flat, normal_kl, vb_terms

ModelFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def prior_bpd(diffusion: GaussianDiffusion, x0: torch.Tensor) -> torch.Tensor:
    """L_T = KL(q(x_T | x0) || N(0, I)) per example, in bits per dim, (B,)."""
    t = torch.full((x0.shape[0],), diffusion.num_timesteps - 1, dtype=torch.long)
    mean, _, log_variance = diffusion.q_mean_variance(x0, t)
    kl = normal_kl(mean, log_variance, torch.zeros_like(mean), torch.zeros_like(log_variance))
    return mean_flat(kl) / math.log(2.0)


@torch.no_grad()
def vlb_bpd(
    model_fn: ModelFn,
    diffusion: GaussianDiffusion,
    x0: torch.Tensor,
    *,
    generator: torch.Generator | None = None,
    discrete_decoder: bool = True,
    clip_x0: float | None = 1.0,
) -> dict[str, torch.Tensor]:
    """Every term of the variational bound for data ``x0`` (B, ...), in bits per dim.

    ``model_fn(x_t, t)`` returns the raw network output for a LongTensor ``t`` (B,) of this
    diffusion's timesteps (not respaced: the bound needs all T steps). Returns a dict of
    ``total`` (B,), ``prior`` (B,) and ``terms`` (T, B), where ``terms[t]`` is L_t as
    :func:`unclip.diffusion.vb_terms` defines it (L_0 the decoder NLL). ``clip_x0`` clamps
    the model's x0 estimate to the data range before forming p's mean, as iDDPM's bpd
    evaluation does (``clip_denoised=True``): near t = T an eps-prediction's x0 estimate is
    divided by sqrt(alpha-bar) ~ 1e-3 and would otherwise swamp the bound. None: no clamp
    (vectors such as CLIP embeddings).
    """
    terms = []
    for step in range(diffusion.num_timesteps):
        t = torch.full((x0.shape[0],), step, dtype=torch.long, device=x0.device)
        x_t = diffusion.q_sample(x0, t, randn_like(x0, generator))
        term = vb_terms(diffusion, model_fn(x_t, t), x0, x_t, t, discrete_decoder=discrete_decoder, clip_x0=clip_x0)
        terms.append(term.float())
    stacked = torch.stack(terms)
    prior = prior_bpd(diffusion, x0).float()
    return {"total": stacked.sum(0) + prior, "prior": prior, "terms": stacked}
