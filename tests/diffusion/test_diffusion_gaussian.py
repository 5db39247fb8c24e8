"""GaussianDiffusion: forward process, posterior, parameterisations, output reading, respacing."""

import math

import pytest
import torch

from unclip.diffusion import GaussianDiffusion, make_betas, spaced_timesteps
from unclip.errors import ConfigError, InputError

T = 1000


@pytest.fixture(params=["cosine", "linear"])
def diffusion(request):
    return GaussianDiffusion.make(request.param, T)


def test_make_and_attributes():
    d = GaussianDiffusion.make("cosine", 100, prediction="v", learned_variance=True)
    assert d.num_timesteps == 100 and d.prediction == "v" and d.learned_variance
    assert d.alphas_cumprod.dtype == torch.float64
    assert torch.equal(d.timestep_map, torch.arange(100))
    assert torch.allclose(d.alphas_cumprod, torch.cumprod(1 - make_betas("cosine", 100), 0))
    with pytest.raises(ConfigError, match="prediction"):
        GaussianDiffusion(make_betas("cosine", 10), prediction="score")
    with pytest.raises(ConfigError, match="beta"):
        GaussianDiffusion(torch.tensor([0.1, 1.5]))


@pytest.mark.parametrize("shape", [(20000, 3), (5000, 2, 2, 2)])
def test_q_sample_statistics(shape):
    d = GaussianDiffusion.make("cosine", T)
    g = torch.Generator().manual_seed(0)
    x0 = torch.full(shape, 0.7, dtype=torch.float64)
    for step in [0, 300, 800]:
        t = torch.full((shape[0],), step)
        xt = d.q_sample(x0, t, generator=g)
        abar = d.alphas_cumprod[step].item()
        n = xt.numel()
        se_mean = math.sqrt((1 - abar) / n)
        assert abs(xt.mean().item() - math.sqrt(abar) * 0.7) < 5 * se_mean + 1e-12
        assert xt.var().item() == pytest.approx(1 - abar, rel=0.05)
    # explicit noise: exactly the closed form
    noise = torch.randn(shape, generator=g, dtype=torch.float64)
    t = torch.randint(0, T, (shape[0],), generator=g)
    a = d.sqrt_alphas_cumprod[t].reshape(-1, *[1] * (len(shape) - 1))
    assert torch.allclose(d.q_sample(x0, t, noise), a * x0 + (1 - a**2).sqrt() * noise, atol=1e-12)


def test_extract_broadcasts_and_casts():
    d = GaussianDiffusion.make("cosine", T)
    x = torch.zeros(4, 3, 8, 8)
    t = torch.tensor([0, 1, 500, 999])
    e = d.extract(d.betas, t, x)
    assert e.shape == (4, 1, 1, 1) and e.dtype == torch.float32
    assert d.extract(d.betas, t, torch.zeros(4, 16, dtype=torch.float64)).shape == (4, 1)
    assert d.extract(d.betas, 5, x).shape == (4, 1, 1, 1)  # a scalar t covers the batch
    with pytest.raises(InputError, match="t must"):
        d.extract(d.betas, torch.tensor([0, 1000, 0, 0]), x)
    with pytest.raises(InputError, match="shape"):
        d.extract(d.betas, torch.tensor([0, 1]), x)


def test_conversions_round_trip(diffusion):
    d = diffusion
    g = torch.Generator().manual_seed(1)
    x0 = torch.randn(6, 3, 4, 4, generator=g, dtype=torch.float64)
    eps = torch.randn(6, 3, 4, 4, generator=g, dtype=torch.float64)
    t = torch.tensor([0, 1, 10, 500, 998, 999])
    xt = d.q_sample(x0, t, eps)
    assert torch.allclose(d.x0_from_eps(xt, t, eps), x0, atol=1e-9, rtol=0)
    assert torch.allclose(d.eps_from_x0(xt, t, x0), eps, atol=1e-9, rtol=0)
    v = d.v_from(x0, eps, t)
    assert torch.allclose(d.x0_from_v(xt, t, v), x0, atol=1e-9, rtol=0)
    assert torch.allclose(d.eps_from_v(xt, t, v), eps, atol=1e-9, rtol=0)
    # v is a rotation of (x0, eps): it has unit variance when they do
    a = d.sqrt_alphas_cumprod[t].reshape(-1, 1, 1, 1)
    assert torch.allclose(v, a * eps - (1 - a**2).sqrt() * x0, atol=1e-12)


def test_posterior_matches_bayes_closed_form(diffusion):
    d = diffusion
    g = torch.Generator().manual_seed(2)
    x0 = torch.randn(5, 7, generator=g, dtype=torch.float64)
    xt = torch.randn(5, 7, generator=g, dtype=torch.float64)
    t = torch.tensor([1, 2, 100, 600, 999])
    mean, var, logvar = d.q_posterior(x0, xt, t)
    beta, alpha = d.betas[t][:, None], d.alphas[t][:, None]
    abar_prev = d.alphas_cumprod[t - 1][:, None]
    # product of q(x_t | x_{t-1}) and q(x_{t-1} | x0) as Gaussians in x_{t-1}
    precision = alpha / beta + 1 / (1 - abar_prev)
    expected_mean = (alpha.sqrt() / beta * xt + abar_prev.sqrt() / (1 - abar_prev) * x0) / precision
    assert torch.allclose(mean, expected_mean, atol=1e-10)
    assert torch.allclose(var.expand_as(x0), (1 / precision).expand_as(x0), rtol=1e-10)
    assert torch.allclose(logvar, var.log(), rtol=1e-10)
    # t = 0: x_{-1} is x0 itself, with zero variance (the log is clipped to t = 1's)
    m0, v0, lv0 = d.q_posterior(x0, xt, torch.zeros(5, dtype=torch.long))
    assert torch.allclose(m0, x0, atol=1e-12) and bool((v0 == 0).all())
    assert torch.allclose(lv0, d.posterior_variance[1].log().expand_as(lv0))


def test_posterior_of_q_sample_is_q_at_previous_step():
    d = GaussianDiffusion.make("cosine", T)
    g = torch.Generator().manual_seed(3)
    n, step = 100000, 400
    x0 = torch.full((n, 1), 0.5, dtype=torch.float64)
    t = torch.full((n,), step)
    xt = d.q_sample(x0, t, generator=g)
    mean, var, _ = d.q_posterior(x0, xt, t)
    x_prev = mean + var.sqrt() * torch.randn(n, 1, generator=g, dtype=torch.float64)
    abar_prev = d.alphas_cumprod[step - 1].item()
    assert x_prev.mean().item() == pytest.approx(math.sqrt(abar_prev) * 0.5, abs=5 * math.sqrt(1 / n))
    assert x_prev.var().item() == pytest.approx(1 - abar_prev, rel=0.02)


@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
def test_p_mean_variance_reads_each_prediction(prediction):
    d = GaussianDiffusion.make("cosine", T, prediction=prediction)
    g = torch.Generator().manual_seed(4)
    x0 = torch.randn(4, 2, 3, 3, generator=g, dtype=torch.float64)
    eps = torch.randn(4, 2, 3, 3, generator=g, dtype=torch.float64)
    t = torch.tensor([0, 5, 500, 999])
    xt = d.q_sample(x0, t, eps)
    target = {"eps": eps, "x0": x0, "v": d.v_from(x0, eps, t)}[prediction]
    out = d.p_mean_variance(target, xt, t)
    assert set(out) == {"mean", "variance", "log_variance", "pred_x0", "pred_eps"}
    assert torch.allclose(out["pred_x0"], x0, atol=1e-8)
    assert torch.allclose(out["pred_eps"], eps, atol=1e-8)
    assert torch.allclose(out["mean"], d.q_posterior(x0, xt, t)[0], atol=1e-8)
    assert out["variance"].shape == xt.shape
    assert torch.allclose(out["variance"], d.posterior_variance[t].reshape(-1, 1, 1, 1).expand_as(xt))
    clipped = d.p_mean_variance(target * 0 + (5.0 if prediction == "x0" else 0.0), xt, t, clip_x0=1.0)
    assert clipped["pred_x0"].abs().max().item() <= 1.0
    # eps is re-derived from the clipped x0, so the pair still explains x_t
    assert torch.allclose(d.q_sample(clipped["pred_x0"], t, clipped["pred_eps"]), xt, atol=1e-8)


@pytest.mark.parametrize("shape", [(3, 4, 5, 5), (3, 8)])
def test_learned_variance_interpolates_between_posterior_variance_and_beta(shape):
    d = GaussianDiffusion.make("cosine", T, learned_variance=True)
    x = torch.randn(shape, dtype=torch.float64)
    t = torch.tensor([1, 200, 900])
    C = shape[1]
    pred = torch.randn(shape, dtype=torch.float64)
    bshape = (-1,) + (1,) * (len(shape) - 1)
    lo, hi = d.posterior_variance[t].reshape(bshape), d.betas[t].reshape(bshape)
    for v, expected in [(-1.0, lo), (1.0, hi), (0.0, (lo * hi).sqrt())]:
        out = d.p_mean_variance(torch.cat([pred, torch.full(shape, v, dtype=torch.float64)], 1), x, t)
        assert torch.allclose(out["variance"], expected.expand(shape), rtol=1e-9)
        assert torch.allclose(out["log_variance"], out["variance"].log(), rtol=1e-9)
    assert bool((hi > lo).all())  # the two ends really differ
    p, var_values = d.split_output(torch.cat([pred, -torch.ones(shape, dtype=torch.float64)], 1))
    assert torch.equal(p, pred) and var_values.shape == shape and p.shape[1] == C
    with pytest.raises(InputError, match="even"):
        d.split_output(torch.zeros(3, 5))
    assert GaussianDiffusion.make("cosine", 10).split_output(pred)[1] is None


def test_float32_inputs_give_float32_outputs():
    d = GaussianDiffusion.make("cosine", T, learned_variance=True)
    x = torch.randn(2, 3, 4, 4)
    t = torch.tensor([3, 700])
    out = d.p_mean_variance(torch.randn(2, 6, 4, 4), x, t)
    assert all(v.dtype == torch.float32 for v in out.values())
    assert d.q_sample(x, t, torch.randn_like(x)).dtype == torch.float32


def test_respace_keeps_alphas_cumprod_at_kept_steps(diffusion):
    d = diffusion
    ts = spaced_timesteps(T, 50)
    r = d.respace(ts)
    assert r.num_timesteps == 50 and r.prediction == d.prediction and r.learned_variance == d.learned_variance
    assert torch.allclose(r.alphas_cumprod, d.alphas_cumprod[ts], rtol=1e-12)
    assert torch.equal(r.timestep_map, torch.tensor(ts)) and r.timestep_map.dtype == torch.long
    assert bool((r.betas > 0).all()) and bool((r.betas <= 1).all())
    # respacing a respaced diffusion composes the maps; the original is untouched
    r2 = r.respace([0, 10, 49])
    assert r2.timestep_map.tolist() == [ts[0], ts[10], ts[49]]
    assert torch.allclose(r2.alphas_cumprod, d.alphas_cumprod[r2.timestep_map], rtol=1e-12)
    assert d.num_timesteps == T and torch.equal(d.timestep_map, torch.arange(T))
    # keeping every step changes nothing
    full = d.respace(list(range(T)))
    assert torch.allclose(full.betas, d.betas, rtol=1e-9)
    for bad in [[], [3, 2], [0, 0], [0, T]]:
        with pytest.raises(InputError, match="respace"):
            d.respace(bad)
