"""Training targets and losses of a diffusion model: L_simple, and the iDDPM hybrid loss.

A training step draws t with :func:`sample_timesteps`, noise, x_t = ``diffusion.q_sample(x0, t,
noise)``, runs the network on (x_t, t, cond) and hands the raw output to :func:`training_loss`.
"""

from __future__ import annotations

import math

import torch

from ..errors import InputError
from .gaussian import GaussianDiffusion

_LOG2 = math.log(2.0)


def sample_timesteps(
    batch: int, num_timesteps: int, generator: torch.Generator | None = None, device: torch.device | str | None = None
) -> torch.Tensor:
    """A LongTensor (batch,) of timesteps drawn uniformly from [0, num_timesteps).

    Drawn on the generator's device (so a CPU generator gives the same draw everywhere), then
    moved to ``device``.
    """
    if batch < 1 or num_timesteps < 1:
        raise InputError(f"sample_timesteps needs batch >= 1 and num_timesteps >= 1, got {batch}, {num_timesteps}")
    draw_device = generator.device if generator is not None else device
    t = torch.randint(0, num_timesteps, (batch,), generator=generator, device=draw_device)
    return t.to(device) if device is not None else t


def prediction_target(
    diffusion: GaussianDiffusion, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor
) -> torch.Tensor:
    """What the network should output for x_t = q_sample(x0, t, noise): eps, x0 or v."""
    if diffusion.prediction == "eps":
        return noise
    if diffusion.prediction == "x0":
        return x0
    return diffusion.v_from(x0, noise, t)


def mean_flat(x: torch.Tensor) -> torch.Tensor:
    """Mean over every dim but the batch: (B, ...) -> (B,)."""
    return x.reshape(x.shape[0], -1).mean(dim=1)


def normal_kl(mean1: torch.Tensor, logvar1: torch.Tensor, mean2: torch.Tensor, logvar2: torch.Tensor) -> torch.Tensor:
    """KL(N(mean1, exp(logvar1)) || N(mean2, exp(logvar2))) elementwise, in nats."""
    return 0.5 * (-1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2) + (mean1 - mean2) ** 2 * torch.exp(-logvar2))


def gaussian_log_likelihood(x: torch.Tensor, mean: torch.Tensor, log_variance: torch.Tensor) -> torch.Tensor:
    """log N(x; mean, exp(log_variance)) elementwise, in nats (a density, so it may be positive)."""
    return -0.5 * (math.log(2.0 * math.pi) + log_variance + (x - mean) ** 2 * torch.exp(-log_variance))


def discretized_gaussian_log_likelihood(x: torch.Tensor, mean: torch.Tensor, log_scale: torch.Tensor) -> torch.Tensor:
    """log P(x) elementwise for x in [-1, 1] quantised to 256 levels (DDPM Sec. 3.3).

    Each level owns a bin of width 2/255 under N(mean, exp(log_scale)^2); the end bins reach
    to -inf and +inf. Computed in at least float32 with log-CDFs, so tiny bins do not give -inf.
    """
    dtype = torch.promote_types(x.dtype, torch.float32)
    x, mean, log_scale = x.to(dtype), mean.to(dtype), log_scale.to(dtype)
    inv_std = torch.exp(-log_scale)
    upper = inv_std * (x - mean + 1.0 / 255.0)
    lower = inv_std * (x - mean - 1.0 / 255.0)
    log_cdf_upper = torch.special.log_ndtr(upper)
    log_sf_lower = torch.special.log_ndtr(-lower)
    # P(lower < z < upper) through whichever tail is more accurate.
    mass = torch.where(
        lower > 0,
        torch.special.ndtr(-lower) - torch.special.ndtr(-upper),
        torch.special.ndtr(upper) - torch.special.ndtr(lower),
    )
    log_mass = torch.log(mass.clamp(min=1e-12))
    return torch.where(x < -0.999, log_cdf_upper, torch.where(x > 0.999, log_sf_lower, log_mass))


def vb_terms(
    diffusion: GaussianDiffusion,
    model_output: torch.Tensor,
    x0: torch.Tensor,
    x_t: torch.Tensor,
    t: torch.Tensor,
    *,
    discrete_decoder: bool = True,
    clip_x0: float | None = None,
) -> torch.Tensor:
    """The variational-bound term L_t per example, in bits per dim, (B,).

    For t > 0: KL(q(x_{t-1} | x_t, x0) || p(x_{t-1} | x_t)). At t = 0: the decoder NLL
    -log p(x0 | x_1), discretised to 256 levels for images in [-1, 1]
    (``discrete_decoder=True``) or a Gaussian density for continuous vectors such as CLIP
    embeddings (which can be negative). ``clip_x0`` clamps the x0 estimate, as samplers do
    (for evaluating a bound; training leaves it None, as iDDPM does).
    """
    true_mean, _, true_log_variance = diffusion.q_posterior(x0, x_t, t)
    out = diffusion.p_mean_variance(model_output, x_t, t, clip_x0)
    kl = mean_flat(normal_kl(true_mean, true_log_variance, out["mean"], out["log_variance"])) / _LOG2
    if discrete_decoder:
        nll = -discretized_gaussian_log_likelihood(x0, out["mean"], 0.5 * out["log_variance"])
    else:
        nll = -gaussian_log_likelihood(x0, out["mean"], out["log_variance"])
    nll = mean_flat(nll).to(kl.dtype) / _LOG2
    return torch.where(t.to(kl.device) == 0, nll, kl)


def training_loss(
    diffusion: GaussianDiffusion,
    model_output: torch.Tensor,
    x0: torch.Tensor,
    x_t: torch.Tensor,
    t: torch.Tensor,
    noise: torch.Tensor,
    *,
    vb_weight: float | None = None,
    discrete_decoder: bool = True,
) -> dict[str, torch.Tensor]:
    """Per-example diffusion loss from a raw network output.

    Without a learned variance this is L_simple: the MSE between the prediction and its
    target (eps, x0 or v), averaged over all non-batch dims. With a learned variance it is
    the iDDPM hybrid loss (Nichol & Dhariwal 2021, Sec. 3.1): L_simple + lambda L_vb, where
    the VB term sees the mean through a stop-gradient so it trains only the variance. L_vb =
    T * E_t[L_t] and lambda = 0.001, so each example adds ``vb_weight`` * L_t with
    ``vb_weight`` defaulting to T/1000 (as guided-diffusion does).

    Args:
        model_output: (B, C, ...) or, with a learned variance, (B, 2C, ...).
        x0, x_t, noise: (B, C, ...), with x_t = diffusion.q_sample(x0, t, noise).
        t: (B,) timesteps.
        discrete_decoder: images in [-1, 1] (True) or continuous vectors (False) at t = 0.

    Returns:
        dict of (B,) tensors: ``loss`` (what to average and minimise), ``mse`` and, with a
        learned variance, ``vb`` (L_t in bits/dim, before weighting).
    """
    pred, var_values = diffusion.split_output(model_output)
    target = prediction_target(diffusion, x0, noise, t)
    if pred.shape != target.shape:
        raise InputError(
            f"model output prediction has shape {tuple(pred.shape)} but the target has {tuple(target.shape)}; check "
            "out_channels and learned_variance"
        )
    mse = mean_flat((target - pred) ** 2)
    terms = {"mse": mse}
    if var_values is None:
        terms["loss"] = mse
        return terms
    frozen = torch.cat([pred.detach(), var_values], dim=1)
    vb = vb_terms(diffusion, frozen, x0, x_t, t, discrete_decoder=discrete_decoder)
    weight = diffusion.num_timesteps / 1000.0 if vb_weight is None else vb_weight
    terms["vb"] = vb
    terms["loss"] = mse + weight * vb.to(mse.dtype)
    return terms
