"""Karlo's UnCLIPScheduler settings on our diffusion objects: exact where they can be, measured where not."""

from __future__ import annotations

import pytest
import torch

diffusers = pytest.importorskip("diffusers")

from unclip.adapters.schedules import karlo_timesteps, stage_schedule
from unclip.diffusion import GaussianDiffusion, spaced_timesteps
from unclip.errors import ConfigError


def _scheduler(**kw):
    from diffusers import UnCLIPScheduler

    return UnCLIPScheduler(**kw)


@pytest.mark.parametrize("steps", [2, 7, 25, 50, 64, 1000])
def test_karlo_timesteps_equal_set_timesteps(steps):
    s = _scheduler()
    s.set_timesteps(steps)
    assert karlo_timesteps(1000, steps) == sorted(s.timesteps.tolist())


def test_our_spacing_differs_from_karlos_at_ties():
    """Ours rounds half up, Karlo's half to even: at Karlo's default 7 and 25 steps two timesteps move by one."""
    for steps in (7, 25):
        diff = [(a, b) for a, b in zip(karlo_timesteps(1000, steps), spaced_timesteps(1000, steps)) if a != b]
        assert diff == [(166, 167), (832, 833)]
    assert karlo_timesteps(1000, 50) == spaced_timesteps(1000, 50)


def test_cosine_schedule_matches_squaredcos_cap_v2_to_float32():
    s = _scheduler()
    ours = GaussianDiffusion.make("cosine", 1000)
    assert float((s.betas.double() - ours.betas).abs().max()) < 3e-8
    rel = ((s.alphas_cumprod.double() - ours.alphas_cumprod) / ours.alphas_cumprod).abs().max()
    assert 1e-7 < float(rel) < 2e-5  # diffusers' float32 cumulative product drifts in the tail; ours is float64


@pytest.mark.parametrize(
    "variance,prediction,channels",
    [("fixed_small_log", "sample", 8), ("learned_range", "epsilon", 6), ("fixed_small_log", "epsilon", 3)],
)
def test_one_reverse_step_equals_scheduler_step(variance, prediction, channels):
    """Our DDPM mean/variance on Karlo's respaced timesteps = UnCLIPScheduler.step, same noise, same clipping."""
    clip = 5.0 if prediction == "sample" else 1.0
    s = _scheduler(variance_type=variance, prediction_type=prediction, clip_sample_range=clip)
    sched = stage_schedule(dict(s.config))
    assert sched.clip_x0 == clip
    s.set_timesteps(7)
    d = sched.diffusion(7)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 8, 8, generator=g) if channels != 8 else torch.randn(2, 8, generator=g)
    c = x.shape[1]
    out = torch.randn(2, channels if channels != 8 else 8, *x.shape[2:], generator=g)
    if variance == "learned_range":
        out[:, c:] = out[:, c:].tanh()
    for k, t in enumerate(s.timesteps.tolist()):
        prev = s.timesteps[k + 1].item() if k + 1 < len(s.timesteps) else None
        noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(k))
        want = s.step(out, t, x, prev_timestep=prev, generator=torch.Generator().manual_seed(k)).prev_sample
        i = len(s.timesteps) - 1 - k  # index into the respaced diffusion
        assert int(d.timestep_map[i]) == t
        pmv = d.p_mean_variance(out, x, i, clip_x0=sched.clip_x0)
        ours = pmv["mean"] + (torch.exp(0.5 * pmv["log_variance"]) * noise if i > 0 else 0)
        if t > 0:
            assert float((ours - want).abs().max()) < 2e-4, (t, float((ours - want).abs().max()))
        else:
            # Last step: both return the posterior mean with coefficients beta_0 / (1 - alpha-bar_0) on x0 and 0 on
            # x_t. In float64 that is exactly 1; diffusers' float32 1 - alpha-bar_0 (beta_0 = 4e-5) loses three digits.
            coef = float(s.betas[0] / (1 - s.alphas_cumprod[0]))
            assert 1e-4 < abs(coef - 1) < 2e-3
            x0 = pmv["pred_x0"]
            assert float((ours - x0).abs().max()) < 1e-6
            assert float((want - coef * x0).abs().max()) < 1e-5


def test_unsupported_scheduler_settings_are_named():
    with pytest.raises(ConfigError, match="beta_schedule"):
        stage_schedule({"beta_schedule": "linear"})
    with pytest.raises(ConfigError, match="variance_type 'learned'"):
        stage_schedule({"variance_type": "learned"})
    with pytest.raises(ConfigError, match="v_prediction"):
        stage_schedule({"prediction_type": "v_prediction"})
    assert stage_schedule({"clip_sample": False}).clip_x0 is None
