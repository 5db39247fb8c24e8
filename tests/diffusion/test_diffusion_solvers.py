"""DPM-Solver++(2M) against analytic denoisers (the same exact models as the DDPM/DDIM tests).

For Gaussian data N(mu, s^2) the probability-flow ODE has a closed-form solution: the
standardised variable (x_t - alpha_t mu) / sqrt(alpha_t^2 s^2 + sigma_t^2) is constant along
it, so the exact ODE sample from x_T is x0 = mu + s (x_T - alpha_T mu) / sqrt(alpha_T^2 s^2 +
sigma_T^2). The deterministic solver is checked against that map (being second order it
must beat DDIM, a first-order one, many times over); the stochastic variant must reproduce
the mixture's distribution.
"""

import math

import pytest
import torch
from test_diffusion_sampling import _check_matches_mixture, gaussian_model, mixture_model

from unclip.diffusion import GaussianDiffusion, ddim_sample, sample, spaced_timesteps
from unclip.diffusion.solvers import dpmpp_2m_sample
from unclip.errors import InputError

T = 1000


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _exact_ode_sample(base, x_T, mu, s):
    abar = float(base.alphas_cumprod[-1])
    a, sig2 = math.sqrt(abar), 1.0 - abar
    return mu + s * (x_T - a * mu) / math.sqrt(a * a * s * s + sig2)


def _ode_error(sampler, base, steps, mu=0.3, s=0.5):
    x_T = torch.randn(256, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    out = sampler(gaussian_model(base, mu, s), base, x_T, steps=steps)
    return (out - _exact_ode_sample(base, x_T, mu, s)).abs().max().item()


@pytest.mark.parametrize("schedule,prediction", [("linear", "eps"), ("cosine", "x0"), ("cosine", "v")])
def test_dpmpp_2m_solves_the_gaussian_ode_far_better_than_ddim(schedule, prediction):
    base = GaussianDiffusion.make(schedule, T, prediction=prediction)
    for steps in (20, 40):
        err = _ode_error(dpmpp_2m_sample, base, steps)
        assert err < _ode_error(ddim_sample, base, steps) / 2.5  # second against first order: 3-50x here
    assert err < 1e-2
    assert _ode_error(dpmpp_2m_sample, base, None) < 1e-3  # every step: converged


def test_dpmpp_2m_matches_gaussian_mixture_deterministic_and_stochastic():
    base = GaussianDiffusion.make("cosine", T, prediction="x0")
    for eta, steps in ((0.0, 20), (1.0, 50)):
        g = torch.Generator().manual_seed(0)
        x_T = torch.randn(4000, 2, generator=g, dtype=torch.float64)
        _check_matches_mixture(sample("dpmpp2m", mixture_model(base), base, x_T, steps=steps, eta=eta, generator=g))


def test_dpmpp_2m_eta1_first_step_is_the_ddpm_posterior_step():
    # One step from T-1 to the next kept level, with the same noise, equals DDIM eta 1 (= DDPM posterior).
    base = GaussianDiffusion.make("cosine", T)
    fn = gaussian_model(base, 0.1, 0.7)
    x_T = torch.randn(5, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    seen = {}

    def grab(name):
        return lambda n, t, x, x0: seen.setdefault(name, x.clone()) if n == 0 else None

    for name, fn_s in (("dpm", dpmpp_2m_sample), ("ddim", ddim_sample)):
        fn_s(fn, base, x_T, steps=10, eta=1.0, generator=torch.Generator().manual_seed(3), callback=grab(name))
    assert torch.allclose(seen["dpm"], seen["ddim"], atol=1e-10)


def test_dpmpp_2m_calls_original_timesteps_and_is_seeded():
    base = GaussianDiffusion.make("cosine", T, prediction="v")
    model = gaussian_model(base, 0.2, 0.5)
    seen, steps_seen = [], []

    def fn(x, t):
        seen.append(int(t[0]))
        return model(x, t)

    x_T = torch.randn(4, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    a = dpmpp_2m_sample(fn, base, x_T, steps=8, callback=lambda n, t, x, x0: steps_seen.append((n, t)))
    assert seen == list(reversed(spaced_timesteps(T, 8))) and steps_seen == list(enumerate(seen))
    assert a.dtype == torch.float32 and a.shape == x_T.shape
    assert torch.equal(a, dpmpp_2m_sample(fn, base, x_T, steps=8, generator=torch.Generator().manual_seed(5)))
    s1 = dpmpp_2m_sample(model, base, x_T, steps=8, eta=1.0, generator=torch.Generator().manual_seed(7))
    s2 = dpmpp_2m_sample(model, base, x_T, steps=8, eta=1.0, generator=torch.Generator().manual_seed(7))
    s3 = dpmpp_2m_sample(model, base, x_T, steps=8, eta=1.0, generator=torch.Generator().manual_seed(8))
    assert torch.equal(s1, s2) and (s1 - s3).abs().max().item() > 1e-3 and (s1 - a).abs().max().item() > 1e-3


def test_dpmpp_2m_clip_and_errors():
    base = GaussianDiffusion.make("cosine", T, prediction="x0")
    fn = lambda x, t: torch.full_like(x, 5.0)  # noqa: E731
    x_T = torch.randn(4, 3)
    assert sample("dpmpp2m", fn, base, x_T, steps=10, clip_x0=1.0).abs().max().item() <= 1.0 + 1e-6
    assert sample("dpmpp2m", fn, base, x_T, steps=10).max().item() > 4
    with pytest.raises(InputError, match="eta"):
        dpmpp_2m_sample(fn, base, x_T, eta=-0.5)
    # a single step is the first-order jump straight to x0
    assert torch.equal(dpmpp_2m_sample(fn, base, x_T, steps=1), torch.full_like(x_T, 5.0))
