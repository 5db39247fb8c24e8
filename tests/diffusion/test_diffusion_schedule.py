"""Noise schedules and timestep spacing: closed forms and input checks."""

import math

import pytest
import torch

from unclip.diffusion import make_betas, spaced_timesteps
from unclip.errors import ConfigError


@pytest.mark.parametrize("T", [1000, 500, 100])
def test_linear_endpoints_scale_with_T(T):
    betas = make_betas("linear", T)
    assert betas.dtype == torch.float64 and betas.shape == (T,)
    assert betas[0].item() == pytest.approx(1e-4 * 1000 / T, rel=1e-12)
    assert betas[-1].item() == pytest.approx(0.02 * 1000 / T, rel=1e-12)
    steps = betas[1:] - betas[:-1]
    assert torch.allclose(steps, steps[0].expand_as(steps), rtol=1e-9, atol=1e-15)


@pytest.mark.parametrize("T", [1000, 64])
def test_cosine_alpha_bar_matches_formula(T):
    betas = make_betas("cosine", T)
    assert betas.dtype == torch.float64 and betas.shape == (T,)
    abar = torch.cumprod(1 - betas, 0)
    s = 0.008
    f = lambda u: math.cos((u + s) / (1 + s) * math.pi / 2) ** 2  # noqa: E731
    for t in [0, 1, T // 4, T // 2, T - 2]:  # every step but the clipped last one
        assert abar[t].item() == pytest.approx(f((t + 1) / T) / f(0), rel=1e-9)
    assert betas[-1].item() == pytest.approx(0.999)  # clipped at T - 1 where f(1) = 0
    assert betas.max().item() <= 0.999


@pytest.mark.parametrize("name", ["linear", "cosine"])
def test_betas_in_unit_interval_and_monotone(name):
    betas = make_betas(name, 1000)
    assert bool((betas > 0).all()) and bool((betas < 1).all())
    assert bool((betas[1:] >= betas[:-1]).all())
    abar = torch.cumprod(1 - betas, 0)
    assert bool((abar[1:] < abar[:-1]).all())
    assert abar[-1].item() < 1e-4 and abar[0].item() > 0.999


def test_make_betas_rejects_bad_input():
    with pytest.raises(ConfigError, match="unknown noise schedule"):
        make_betas("quadratic", 10)
    with pytest.raises(ConfigError, match="num_timesteps"):
        make_betas("cosine", 0)
    with pytest.raises(ConfigError, match="cosine"):
        make_betas("linear", 10)  # beta_T = 2 would be > 1


@pytest.mark.parametrize("T,steps", [(1000, 50), (1000, 7), (1000, 999), (100, 100), (10, 3), (1000, 2)])
def test_spaced_timesteps_even_unique_with_ends(T, steps):
    ts = spaced_timesteps(T, steps)
    assert len(ts) == steps and all(isinstance(t, int) for t in ts)
    assert ts[0] == 0 and ts[-1] == T - 1
    assert all(b > a for a, b in zip(ts, ts[1:]))
    gaps = [b - a for a, b in zip(ts, ts[1:])]
    assert max(gaps) - min(gaps) <= 1  # evenly spaced up to rounding


def test_spaced_timesteps_edge_cases():
    assert spaced_timesteps(10, 10) == list(range(10))
    assert spaced_timesteps(1000, 1) == [999]
    assert spaced_timesteps(1000, 5) == [0, 250, 500, 749, 999]
    for bad in [0, 11, -1, 2.5]:
        with pytest.raises(ConfigError, match="steps"):
            spaced_timesteps(10, bad)
