"""Timestep sampling, prediction targets and the (hybrid) training loss."""

import math

import pytest
import torch

from unclip.diffusion import (
    GaussianDiffusion,
    discretized_gaussian_log_likelihood,
    normal_kl,
    prediction_target,
    sample_timesteps,
    training_loss,
)

T = 1000


def _batch(d, shape, t, seed=0, grid=False):
    g = torch.Generator().manual_seed(seed)
    x0 = torch.rand(shape, generator=g, dtype=torch.float64) * 2 - 1
    if grid:  # 8-bit image values in [-1, 1]
        x0 = torch.round((x0 + 1) * 127.5) / 127.5 - 1
    noise = torch.randn(shape, generator=g, dtype=torch.float64)
    t = torch.as_tensor(t)
    return x0, noise, t, d.q_sample(x0, t, noise)


def test_sample_timesteps_uniform_and_seeded():
    t = sample_timesteps(40000, 10, generator=torch.Generator().manual_seed(0))
    assert t.dtype == torch.long and t.shape == (40000,)
    assert int(t.min()) == 0 and int(t.max()) == 9
    counts = torch.bincount(t, minlength=10).double()
    assert bool(((counts - 4000).abs() < 300).all())  # ~5 standard deviations
    a = sample_timesteps(8, T, generator=torch.Generator().manual_seed(5))
    b = sample_timesteps(8, T, generator=torch.Generator().manual_seed(5))
    c = sample_timesteps(8, T, generator=torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert sample_timesteps(3, T, device="cpu").device.type == "cpu"


@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
def test_perfect_prediction_gives_zero_mse(prediction):
    d = GaussianDiffusion.make("cosine", T, prediction=prediction)
    x0, noise, t, xt = _batch(d, (4, 3, 4, 4), [0, 10, 500, 999])
    target = prediction_target(d, x0, noise, t)
    assert torch.equal(target, {"eps": noise, "x0": x0}.get(prediction, target))
    if prediction == "v":
        assert torch.allclose(target, d.v_from(x0, noise, t))
    out = training_loss(d, target, x0, xt, t, noise)
    assert set(out) == {"loss", "mse"}
    assert out["loss"].shape == (4,) and float(out["mse"].max()) < 1e-20
    wrong = training_loss(d, target + 0.5, x0, xt, t, noise)
    assert torch.allclose(wrong["mse"], torch.full((4,), 0.25, dtype=torch.float64))
    assert torch.equal(wrong["loss"], wrong["mse"])


def test_mse_is_mean_over_non_batch_dims_for_vectors():
    d = GaussianDiffusion.make("cosine", T, prediction="x0")
    x0, noise, t, xt = _batch(d, (3, 16), [1, 2, 3])
    out = training_loss(d, torch.zeros_like(x0), x0, xt, t, noise)
    assert torch.allclose(out["mse"], (x0**2).mean(1))


def test_hybrid_loss_terms_and_weight():
    d = GaussianDiffusion.make("cosine", T, learned_variance=True)
    x0, noise, t, xt = _batch(d, (5, 3, 4, 4), [0, 1, 50, 500, 999], grid=True)
    g = torch.Generator().manual_seed(9)
    output = torch.cat(
        [
            noise + 0.1 * torch.randn(noise.shape, generator=g, dtype=torch.float64),
            torch.rand(noise.shape, generator=g, dtype=torch.float64) * 2 - 1,
        ],
        1,
    )
    out = training_loss(d, output, x0, xt, t, noise)
    assert set(out) == {"loss", "mse", "vb"}
    assert all(v.shape == (5,) for v in out.values())
    assert bool(torch.isfinite(out["vb"]).all()) and bool((out["vb"] > 0).all())
    assert torch.allclose(out["loss"], out["mse"] + T / 1000 * out["vb"])
    custom = training_loss(d, output, x0, xt, t, noise, vb_weight=0.5)
    assert torch.allclose(custom["loss"], out["mse"] + 0.5 * out["vb"])


def test_vb_is_zero_for_the_true_posterior_and_grows_with_errors():
    d = GaussianDiffusion.make("linear", T, learned_variance=True)
    x0, noise, t, xt = _batch(d, (4, 2, 3, 3), [1, 20, 400, 999])
    perfect = torch.cat([noise, -torch.ones_like(noise)], 1)  # true eps, posterior variance
    out = training_loss(d, perfect, x0, xt, t, noise)
    assert float(out["vb"].abs().max()) < 1e-9
    off_mean = training_loss(d, torch.cat([noise + 0.3, -torch.ones_like(noise)], 1), x0, xt, t, noise)
    off_var = training_loss(d, torch.cat([noise, torch.ones_like(noise)], 1), x0, xt, t, noise)
    assert bool((off_mean["vb"] > 1e-6).all())
    # beta and the posterior variance only differ much at small t
    assert bool((off_var["vb"][:2] > 1e-4).all()) and bool((off_var["vb"] >= 0).all())


def test_vb_trains_only_the_variance_channels():
    d = GaussianDiffusion.make("cosine", T, learned_variance=True)
    x0, noise, t, xt = _batch(d, (3, 2, 4, 4), [0, 10, 300], grid=True)
    output = torch.cat([noise + 0.2, torch.zeros_like(noise)], 1).requires_grad_(True)
    out = training_loss(d, output, x0, xt, t, noise)
    (grad,) = torch.autograd.grad(out["vb"].sum(), output, retain_graph=True)
    assert float(grad[:, :2].abs().max()) == 0.0  # stop-gradient on the mean
    assert float(grad[:, 2:].abs().max()) > 0.0
    (grad_loss,) = torch.autograd.grad(out["loss"].sum(), output, retain_graph=True)
    (grad_mse,) = torch.autograd.grad(out["mse"].sum(), output)
    assert torch.allclose(grad_loss[:, :2], grad_mse[:, :2])


def test_decoder_nll_at_t0_discrete_and_continuous():
    d = GaussianDiffusion.make("cosine", T, learned_variance=True)
    x0, noise, t, xt = _batch(d, (2, 3, 4, 4), [0, 0], grid=True)
    good = training_loss(d, torch.cat([noise, -torch.ones_like(noise)], 1), x0, xt, t, noise)
    bad = training_loss(d, torch.cat([noise + 1.0, -torch.ones_like(noise)], 1), x0, xt, t, noise)
    assert bool(torch.isfinite(bad["vb"]).all()) and bool((good["vb"] > 0).all())
    assert bool((bad["vb"] > good["vb"] + 1).all())
    # vectors: a Gaussian density, which may be negative but must be finite and ordered
    dv = GaussianDiffusion.make("cosine", T, prediction="x0", learned_variance=True)
    x0, noise, t, xt = _batch(dv, (2, 8), [0, 0])
    good = training_loss(dv, torch.cat([x0, -torch.ones_like(x0)], 1), x0, xt, t, noise, discrete_decoder=False)
    bad = training_loss(dv, torch.cat([x0 + 0.1, -torch.ones_like(x0)], 1), x0, xt, t, noise, discrete_decoder=False)
    logvar = d.posterior_log_variance_clipped[1].item()
    assert torch.allclose(
        good["vb"], torch.full((2,), 0.5 * (math.log(2 * math.pi) + logvar + 1 * 0) / math.log(2), dtype=torch.float64)
    )
    assert bool((bad["vb"] > good["vb"]).all())


def test_normal_kl_matches_torch_distributions():
    g = torch.Generator().manual_seed(3)
    m1, m2, lv1, lv2 = (torch.randn(50, generator=g, dtype=torch.float64) for _ in range(4))
    ref = torch.distributions.kl_divergence(
        torch.distributions.Normal(m1, (0.5 * lv1).exp()), torch.distributions.Normal(m2, (0.5 * lv2).exp())
    )
    assert torch.allclose(normal_kl(m1, lv1, m2, lv2), ref, atol=1e-12)


@pytest.mark.parametrize("mean,log_scale", [(0.0, -3.0), (0.9, -1.0), (-0.3, -7.0), (0.5, 1.0)])
def test_discretized_likelihood_is_a_distribution_over_256_levels(mean, log_scale):
    x = torch.arange(256, dtype=torch.float64) / 127.5 - 1
    logp = discretized_gaussian_log_likelihood(x, torch.full_like(x, mean), torch.full_like(x, log_scale))
    assert logp.exp().sum().item() == pytest.approx(1.0, abs=1e-6)
    assert bool((logp <= 0).all())
