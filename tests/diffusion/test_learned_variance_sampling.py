"""Sampling with a learned variance (iDDPM, Nichol & Dhariwal 2021), checked against closed forms.

The network outputs v in [-1, 1]; the variance is exp(frac log beta_t + (1 - frac) log beta~_t)
with frac = (v + 1) / 2 (iDDPM eq. 15). When a sampler skips steps, beta_t and beta~_t are
those of the RESPACED process (iDDPM Sec. 4; improved-diffusion's respace.py): with kept
timesteps s_0 < s_1 < ..., beta_k = 1 - abar(s_k) / abar(s_{k-1}) and
beta~_k = (1 - abar(s_{k-1})) / (1 - abar(s_k)) beta_k. Every expected value below is computed
here from the ORIGINAL alpha-bar, independently of GaussianDiffusion.respace.
"""

from __future__ import annotations

import math

import pytest
import torch

from unclip.diffusion import (
    GaussianDiffusion,
    ddim_sample,
    ddpm_sample,
    spaced_timesteps,
)

T = 1000
STEPS = 10


def _respaced_betas(base: GaussianDiffusion, steps: int) -> tuple[list[int], list[float], list[float]]:
    """Kept timesteps, respaced betas and respaced posterior variances, from alpha-bar alone."""
    ts = spaced_timesteps(T, steps)
    abar = [float(base.alphas_cumprod[t]) for t in ts]
    betas, tilde = [], []
    for k in range(len(ts)):
        prev = abar[k - 1] if k > 0 else 1.0
        beta = 1.0 - abar[k] / prev
        betas.append(beta)
        tilde.append((1.0 - prev) / (1.0 - abar[k]) * beta)
    return ts, betas, tilde


def _model(value: float):
    """eps = 0.4 x (any fixed function will do) and the variance channel set to ``value``."""

    def fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return torch.cat([0.4 * x, torch.full_like(x, value)], dim=1)

    return fn


def _eps_only(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return 0.4 * x


@pytest.fixture
def base() -> GaussianDiffusion:
    return GaussianDiffusion.make("cosine", T, learned_variance=True)


@pytest.mark.parametrize("v", [-1.0, -0.3, 0.5, 1.0])
def test_respaced_learned_variance_interpolates_respaced_betas(base: GaussianDiffusion, v: float) -> None:
    ts, betas, tilde = _respaced_betas(base, STEPS)
    r = base.respace(ts)
    x = torch.randn(2, 1, 2, 2, dtype=torch.float64)
    frac = (v + 1.0) / 2.0
    gap = 0.0
    for k in range(1, STEPS):  # k = 0 uses the clipped beta~ (checked below)
        out = r.p_mean_variance(_model(v)(x, torch.zeros(2, dtype=torch.long)), x, k)
        expected = frac * math.log(betas[k]) + (1.0 - frac) * math.log(tilde[k])
        assert torch.allclose(out["log_variance"], torch.full_like(x, expected), atol=1e-10), k
        beta_orig, tilde_orig = float(base.betas[ts[k]]), float(base.posterior_variance[ts[k]])
        original = frac * math.log(beta_orig) + (1.0 - frac) * math.log(tilde_orig)
        gap = max(gap, abs(expected - original))
    # The original process's betas at those timesteps would be far off (a check that can fail).
    assert gap > 1.0
    out0 = r.p_mean_variance(_model(-1.0)(x, torch.zeros(2, dtype=torch.long)), x, 0)
    assert torch.allclose(out0["log_variance"], torch.full_like(x, math.log(tilde[1])), atol=1e-10)


def _first_step(sampler, model, diffusion, x_T, **kw) -> torch.Tensor:
    seen = []
    sampler(
        model,
        diffusion,
        x_T,
        steps=STEPS,
        generator=torch.Generator().manual_seed(7),
        callback=lambda n, t, x, x0: seen.append(x.clone()),
        **kw,
    )
    return seen[0]


def _hand_step(base: GaussianDiffusion, x: torch.Tensor, sigma2: float) -> tuple[torch.Tensor, float, float]:
    """(eps draw of the first step, abar, abar_prev) at the noisiest respaced step."""
    ts, _, _ = _respaced_betas(base, STEPS)
    z = torch.randn(x.shape, generator=torch.Generator().manual_seed(7), dtype=torch.float32).to(x.dtype)
    return z, float(base.alphas_cumprod[ts[-1]]), float(base.alphas_cumprod[ts[-2]])


@pytest.mark.parametrize("v", [-1.0, 0.0, 1.0])
def test_ddpm_first_step_uses_the_respaced_learned_variance(base: GaussianDiffusion, v: float) -> None:
    x_T = torch.randn(3, 1, 2, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    _, betas, tilde = _respaced_betas(base, STEPS)
    frac = (v + 1.0) / 2.0
    var = math.exp(frac * math.log(betas[-1]) + (1.0 - frac) * math.log(tilde[-1]))
    z, abar, abar_prev = _hand_step(base, x_T, var)
    eps = 0.4 * x_T
    x0 = (x_T - math.sqrt(1 - abar) * eps) / math.sqrt(abar)
    beta = betas[-1]
    mean = beta * math.sqrt(abar_prev) / (1 - abar) * x0 + (1 - abar_prev) * math.sqrt(1 - beta) / (1 - abar) * x_T
    expected = mean + math.sqrt(var) * z
    got = _first_step(ddpm_sample, _model(v), base, x_T)
    assert torch.allclose(got, expected, atol=1e-9)


@pytest.mark.parametrize("v, eta", [(1.0, 0.7), (0.0, 1.0), (-0.5, 0.3)])
def test_ddim_first_step_uses_eta_squared_times_the_learned_variance(
    base: GaussianDiffusion, v: float, eta: float
) -> None:
    x_T = torch.randn(3, 1, 2, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    _, betas, tilde = _respaced_betas(base, STEPS)
    frac = (v + 1.0) / 2.0
    var = math.exp(frac * math.log(betas[-1]) + (1.0 - frac) * math.log(tilde[-1]))
    z, abar, abar_prev = _hand_step(base, x_T, var)
    sigma2 = min(eta**2 * var, 1.0 - abar_prev)
    eps = 0.4 * x_T
    x0 = (x_T - math.sqrt(1 - abar) * eps) / math.sqrt(abar)
    expected = math.sqrt(abar_prev) * x0 + math.sqrt(1 - abar_prev - sigma2) * eps + math.sqrt(sigma2) * z
    got = _first_step(ddim_sample, _model(v), base, x_T, eta=eta)
    assert torch.allclose(got, expected, atol=1e-9)


@pytest.mark.parametrize("eta", [0.5, 1.0])
def test_ddim_with_variance_at_its_lower_end_is_fixed_variance_ddim(base: GaussianDiffusion, eta: float) -> None:
    """v = -1 gives the respaced posterior variance, DDIM's own sigma^2 at eta = 1."""
    fixed = GaussianDiffusion.make("cosine", T)
    x_T = torch.randn(4, 1, 3, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    learned = ddim_sample(_model(-1.0), base, x_T, steps=STEPS, eta=eta, generator=torch.Generator().manual_seed(3))
    ref = ddim_sample(_eps_only, fixed, x_T, steps=STEPS, eta=eta, generator=torch.Generator().manual_seed(3))
    assert torch.allclose(learned, ref, atol=1e-10)
    other = ddim_sample(_model(1.0), base, x_T, steps=STEPS, eta=eta, generator=torch.Generator().manual_seed(3))
    assert (other - ref).abs().max().item() > 1e-3  # the learned variance is really used


def test_ddim_eta1_with_learned_variance_matches_ddpm_at_the_posterior_variance(base: GaussianDiffusion) -> None:
    x_T = torch.randn(4, 1, 3, 3, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    a = ddim_sample(_model(-1.0), base, x_T, steps=STEPS, eta=1.0, generator=torch.Generator().manual_seed(5))
    b = ddpm_sample(_model(-1.0), base, x_T, steps=STEPS, generator=torch.Generator().manual_seed(5))
    assert torch.allclose(a, b, atol=1e-9)


def test_ddim_eta0_still_ignores_the_variance_channels(base: GaussianDiffusion) -> None:
    x_T = torch.randn(2, 1, 3, 3, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    a = ddim_sample(_model(1.0), base, x_T, steps=STEPS, eta=0.0)
    b = ddim_sample(_model(-1.0), base, x_T, steps=STEPS, eta=0.0)
    assert torch.equal(a, b)
