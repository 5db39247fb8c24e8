"""Samplers against analytic denoisers: Gaussian data and a 2-D Gaussian mixture.

For data x0 ~ N(mu, s^2 I), x_t = a x0 + b eps has E[x0 | x_t] = mu + a s^2/(a^2 s^2 + b^2) (x_t - a mu),
so the exact x0- and eps-predictors are closed form; for a mixture of such components the
exact denoiser is the responsibility-weighted sum. The model functions look up alpha-bar at
the ORIGINAL timestep they are called with, so a sampler that mis-maps respaced timesteps fails.
"""

import pytest
import torch

from unclip.diffusion import GaussianDiffusion, ddim_invert, ddim_sample, ddpm_sample, sample, spaced_timesteps
from unclip.errors import InputError

T = 1000


@pytest.fixture(autouse=True)
def one_thread():
    # Tiny tensors: thread hand-offs cost more than they save, and much more on a busy machine.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _a_b2(base, t, x):
    a = base.sqrt_alphas_cumprod[t.cpu()].to(x.dtype).to(x.device).reshape(-1, *[1] * (x.ndim - 1))
    return a, 1 - a**2


def gaussian_model(base, mu, s):
    """The exact network for N(mu, s^2 I) data, in ``base.prediction``'s parameterisation."""

    def fn(x, t):
        assert t.dtype == torch.long and t.shape == (x.shape[0],)
        a, b2 = _a_b2(base, t, x)
        x0 = mu + a * s**2 / (a**2 * s**2 + b2) * (x - a * mu)
        eps = (x - a * x0) / b2.sqrt()
        return {"x0": x0, "eps": eps, "v": a * eps - b2.sqrt() * x0}[base.prediction]

    return fn


MEANS = torch.tensor([[-1.5, 0.5], [1.0, 1.0], [0.5, -1.2]], dtype=torch.float64)
STDS = torch.tensor([0.3, 0.5, 0.2], dtype=torch.float64)
WEIGHTS = torch.tensor([0.3, 0.5, 0.2], dtype=torch.float64)


def mixture_model(base):
    """The exact x0-predictor E[x0 | x_t] for the 2-D isotropic Gaussian mixture above."""

    def fn(x, t):
        a, b2 = _a_b2(base, t, x)  # (B, 1)
        var = a**2 * STDS**2 + b2  # (B, K): variance of x_t under component k
        diff = x[:, None, :] - a[:, None] * MEANS  # (B, K, 2)
        log_r = WEIGHTS.log() - (diff**2).sum(-1) / (2 * var) - var.log()  # 2-D Gaussian, det = var^2
        r = torch.softmax(log_r, dim=1)
        post = MEANS + (a * STDS**2 / var)[..., None] * diff
        return (r[..., None] * post).sum(1)

    return fn


def mixture_moments():
    mean = WEIGHTS @ MEANS
    second = sum(
        WEIGHTS[k] * (STDS[k] ** 2 * torch.eye(2, dtype=torch.float64) + torch.outer(MEANS[k], MEANS[k]))
        for k in range(3)
    )
    return mean, second - torch.outer(mean, mean)


def _check_matches_mixture(x):
    mean, cov = mixture_moments()
    assert x.shape == (4000, 2) and bool(torch.isfinite(x).all())
    assert (x.mean(0) - mean).abs().max().item() < 0.08
    assert (torch.cov(x.T) - cov).abs().max().item() < 0.15
    nearest = ((x[:, None] - MEANS) ** 2).sum(-1).argmin(1)
    assert (torch.bincount(nearest, minlength=3).double() / len(x) - WEIGHTS).abs().max().item() < 0.05


@pytest.mark.parametrize(
    "method,kwargs",
    [("ddpm", {"steps": 100}), ("ddim", {"steps": 50, "eta": 0.0}), ("ddim", {"steps": 100, "eta": 1.0})],
)
def test_samplers_match_gaussian_mixture(method, kwargs):
    base = GaussianDiffusion.make("cosine", T, prediction="x0")
    g = torch.Generator().manual_seed(0)
    x_T = torch.randn(4000, 2, generator=g, dtype=torch.float64)
    _check_matches_mixture(sample(method, mixture_model(base), base, x_T, generator=g, **kwargs))


def test_ddpm_without_noise_fails_the_mixture_check():
    # The check above can fail: the deterministic posterior-mean chain collapses the spread.
    base = GaussianDiffusion.make("cosine", T, prediction="x0")
    x_T = torch.randn(4000, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    fn = mixture_model(base)
    d = base.respace(spaced_timesteps(T, 50))
    x = x_T
    for i in reversed(range(d.num_timesteps)):
        x = d.p_mean_variance(fn(x, torch.full((4000,), int(d.timestep_map[i]))), x, i)["mean"]
    with pytest.raises(AssertionError):
        _check_matches_mixture(x)


def test_model_is_called_with_original_timesteps_and_callback_runs_per_step():
    base = GaussianDiffusion.make("cosine", T)
    seen, steps_seen = [], []
    model = gaussian_model(base, 0.0, 1.0)

    def fn(x, t):
        seen.append(t.tolist())
        return model(x, t)

    x_T = torch.randn(3, 2)
    for sampler in (ddpm_sample, ddim_sample):
        seen.clear(), steps_seen.clear()
        sampler(
            fn,
            base,
            x_T,
            steps=10,
            generator=torch.Generator().manual_seed(0),
            callback=lambda n, t, x, x0: steps_seen.append((n, t, x.shape, x0.shape)),
        )
        expected = list(reversed(spaced_timesteps(T, 10)))
        assert seen == [[t] * 3 for t in expected]
        assert [s[:2] for s in steps_seen] == list(enumerate(expected))
        assert all(s[2] == s[3] == (3, 2) for s in steps_seen)
    seen.clear()
    ddim_sample(fn, GaussianDiffusion.make("cosine", 20), x_T)  # steps=None: every step
    assert [t[0] for t in seen] == list(range(19, -1, -1))


def test_ddim_eta0_is_deterministic_and_ddpm_is_seeded():
    base = GaussianDiffusion.make("cosine", T, prediction="v")
    fn = gaussian_model(base, 0.2, 0.5)
    x_T = torch.randn(8, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(1)
    a = ddim_sample(fn, base, x_T, steps=20)
    torch.manual_seed(2)
    b = ddim_sample(fn, base, x_T, steps=20, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and a.dtype == torch.float32 and a.shape == x_T.shape
    for sampler, kw in [(ddpm_sample, {}), (ddim_sample, {"eta": 1.0})]:
        s1 = sampler(fn, base, x_T, steps=20, generator=torch.Generator().manual_seed(7), **kw)
        s2 = sampler(fn, base, x_T, steps=20, generator=torch.Generator().manual_seed(7), **kw)
        s3 = sampler(fn, base, x_T, steps=20, generator=torch.Generator().manual_seed(8), **kw)
        assert torch.equal(s1, s2)
        assert (s1 - s3).abs().max().item() > 1e-3
        assert (s1 - a).abs().max().item() > 1e-3  # noise really is added


def test_ddpm_uses_learned_variance_channels():
    fixed = GaussianDiffusion.make("cosine", T)
    learned = GaussianDiffusion.make("cosine", T, learned_variance=True)
    model = gaussian_model(fixed, -0.3, 0.7)
    x_T = torch.randn(6, 2, 3, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)

    def with_v(value):
        return lambda x, t: torch.cat([model(x, t), torch.full_like(x, value)], 1)

    ref = ddpm_sample(model, fixed, x_T, steps=25, generator=torch.Generator().manual_seed(1))
    lo = ddpm_sample(with_v(-1.0), learned, x_T, steps=25, generator=torch.Generator().manual_seed(1))
    hi = ddpm_sample(with_v(1.0), learned, x_T, steps=25, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(lo, ref, atol=1e-10)  # v = -1 is the posterior variance
    assert (hi - ref).abs().max().item() > 1e-3
    # DDIM ignores the variance channels
    assert torch.allclose(
        ddim_sample(with_v(1.0), learned, x_T, steps=25), ddim_sample(model, fixed, x_T, steps=25), atol=1e-10
    )


def test_clip_x0_bounds_the_output():
    base = GaussianDiffusion.make("cosine", T, prediction="x0")
    fn = lambda x, t: torch.full_like(x, 5.0)  # noqa: E731
    x_T = torch.randn(4, 3)
    for method in ("ddpm", "ddim"):
        out = sample(method, fn, base, x_T, steps=10, clip_x0=1.0, generator=torch.Generator().manual_seed(0))
        assert out.abs().max().item() <= 1.0 + 1e-6
        assert sample(method, fn, base, x_T, steps=10, generator=torch.Generator().manual_seed(0)).max().item() > 4


def test_sample_dispatch_and_errors():
    base = GaussianDiffusion.make("cosine", T)
    fn = gaussian_model(base, 0.0, 1.0)
    x_T = torch.randn(4, 2)
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    assert torch.equal(
        sample("ddpm", fn, base, x_T, steps=5, generator=g(), eta=None),
        ddpm_sample(fn, base, x_T, steps=5, generator=g()),
    )
    assert torch.equal(
        sample("ddim", fn, base, x_T, steps=5, eta=0.5, generator=g()),
        ddim_sample(fn, base, x_T, steps=5, eta=0.5, generator=g()),
    )
    with pytest.raises(InputError, match="method"):
        sample("euler", fn, base, x_T)
    with pytest.raises(InputError, match="eta"):
        sample("ddpm", fn, base, x_T, eta=0.5)
    with pytest.raises(InputError, match="eta"):
        ddim_sample(fn, base, x_T, eta=-1.0)
    with pytest.raises(Exception, match="steps"):
        ddim_sample(fn, base, x_T, steps=T + 1)


def _round_trip_error(base, steps, refine=0, shape=(16, 2), mu=0.3, s=0.5):
    fn = gaussian_model(base, mu, s)
    x0 = mu + s * torch.randn(shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x_T = ddim_invert(fn, base, x0, steps=steps, refine=refine)
    assert x_T.shape == x0.shape
    return (ddim_sample(fn, base, x_T, steps=steps) - x0).abs().max().item(), x_T


def test_ddim_inversion_reconstructs_exactly_with_refinement():
    base = GaussianDiffusion.make("linear", T, prediction="x0")
    err, x_T = _round_trip_error(base, steps=50, refine=5, shape=(8, 2, 3, 3))
    assert err < 1e-4
    assert 0.7 < x_T.std().item() < 1.3  # the inverted latent looks like unit noise
    # the cosine schedule's last step (alpha-bar 2e-9) converges slowly, but still closely
    err, _ = _round_trip_error(GaussianDiffusion.make("cosine", T, prediction="v"), steps=50, refine=3)
    assert err < 1e-3


def test_plain_ddim_inversion_error_shrinks_like_one_over_steps():
    base = GaussianDiffusion.make("cosine", T)
    seen = []
    e50, _ = _round_trip_error(base, steps=50)
    e200, _ = _round_trip_error(base, steps=200)
    e1000, _ = _round_trip_error(base, steps=None)
    assert e200 < e50 / 3 and e1000 < e200 / 3 and e1000 < 5e-3
    # callback order: from the first timestep up to the last
    ddim_invert(
        gaussian_model(base, 0.0, 1.0),
        base,
        torch.zeros(2, 2),
        steps=5,
        callback=lambda n, t, x, x0: seen.append((n, t)),
    )
    assert seen == list(enumerate(spaced_timesteps(T, 5)))
    with pytest.raises(InputError, match="refine"):
        ddim_invert(gaussian_model(base, 0.0, 1.0), base, torch.zeros(2, 2), refine=-1)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_tensors_with_a_cpu_generator_match_cpu():
    base = GaussianDiffusion.make("cosine", T, learned_variance=True)
    model = gaussian_model(base, 0.1, 0.6)
    fn = lambda x, t: torch.cat([model(x, t), torch.zeros_like(x)], 1)  # noqa: E731
    x_T = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    cpu = ddpm_sample(fn, base, x_T, steps=10, generator=torch.Generator().manual_seed(1))
    gpu = ddpm_sample(fn, base, x_T.cuda(), steps=10, generator=torch.Generator().manual_seed(1))
    assert gpu.device.type == "cuda" and torch.allclose(gpu.cpu(), cpu, atol=1e-4)
    inv = ddim_invert(fn, base, x_T.cuda(), steps=10)
    assert inv.device.type == "cuda" and torch.allclose(inv.cpu(), ddim_invert(fn, base, x_T, steps=10), atol=1e-4)
