"""EDICT (coupled exact inversion): exact round trips where DDIM inversion cannot be, and a sampler
close to DDIM on Gaussian data, whose exact denoiser is closed form."""

import pytest
import torch

from unclip.diffusion import GaussianDiffusion, ddim_invert, ddim_sample, edict_invert, edict_sample
from unclip.errors import InputError

T = 1000


def _alpha(base: GaussianDiffusion, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return base.sqrt_alphas_cumprod[t].to(x.dtype).reshape(-1, *[1] * (x.ndim - 1))


def gaussian_x0_model(base: GaussianDiffusion, s: float):
    """The exact x0-predictor for N(0, s^2 I) data: E[x0 | x_t] = a s^2 / (a^2 s^2 + 1 - a^2) x_t."""

    def fn(x, t):
        a = _alpha(base, t, x)
        return a * s**2 / (a**2 * s**2 + 1 - a**2) * x

    return fn


def detail_dropping_model(base: GaussianDiffusion):
    """An x0-predictor that returns a 4x4 box-blur of its input however little noise there is,
    as a network that never learnt to pass fine detail through does: no noise maps to an image
    with detail, so DDIM cannot give it back, while EDICT's coupled updates can."""

    def fn(x, t):
        a = _alpha(base, t, x)
        blurred = torch.nn.functional.avg_pool2d(x, 4)
        return torch.nn.functional.interpolate(blurred, scale_factor=4, mode="nearest") / a.clamp(min=0.05)

    return fn


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = float(((a - b) / 2).pow(2).mean())
    return 10 * torch.log10(torch.tensor(1.0 / mse)).item()


@pytest.fixture
def x0_diffusion():
    return GaussianDiffusion.make("cosine", T, prediction="x0")


def images(seed: int = 0) -> torch.Tensor:
    return torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 2 - 1


def test_edict_round_trip_is_exact_where_ddim_inversion_is_not(x0_diffusion):
    fn, x0 = detail_dropping_model(x0_diffusion), images()
    d = x0_diffusion.respace(list(range(0, 970, 38)))
    x_T, y_T = edict_invert(fn, d, x0)
    assert psnr(edict_sample(fn, d, x_T, y_T), x0) > 100  # float64: exact to rounding
    ddim = ddim_sample(fn, d, ddim_invert(fn, d, x0, refine=2))
    assert psnr(ddim, x0) < 30  # the blur's lost detail cannot come back through DDIM's last step


def test_edict_round_trip_with_steps_and_mix(x0_diffusion):
    fn, x0 = gaussian_x0_model(x0_diffusion, 0.5), images(1)
    for mix in (0.93, 0.97, 1.0):
        x_T, y_T = edict_invert(fn, x0_diffusion, x0, steps=20, mix=mix)
        assert psnr(edict_sample(fn, x0_diffusion, x_T, y_T, steps=20, mix=mix), x0) > 100
    # decoding with another mix than the inversion's does not give the image back
    x_T, y_T = edict_invert(fn, x0_diffusion, x0, steps=20, mix=0.93)
    assert psnr(edict_sample(fn, x0_diffusion, x_T, y_T, steps=20, mix=0.8), x0) < 60


def test_edict_sampling_from_one_noise_is_close_to_ddim():
    """From x_T = y_T, EDICT's sampler follows DDIM's eta-0 trajectory up to its mixing error,
    over the manipulations' range (top alpha-bar 2e-3; from alpha-bar ~ 0 its steps blow up)."""
    x0d = GaussianDiffusion.make("cosine", T, prediction="x0")
    fn = gaussian_x0_model(x0d, 0.5)
    d = x0d.respace(list(range(0, 971, 20)))
    noise = torch.randn(64, 2, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    ddim = ddim_sample(fn, d, noise)
    edict = edict_sample(fn, d, noise, noise.clone())
    assert float((edict - ddim).norm() / ddim.norm()) < 0.05
    assert float(edict.std()) == pytest.approx(0.5, rel=0.15)  # the data's scale


def test_edict_rejects_bad_arguments(x0_diffusion):
    fn, x = gaussian_x0_model(x0_diffusion, 0.5), images()
    with pytest.raises(InputError, match="mix"):
        edict_invert(fn, x0_diffusion, x, steps=4, mix=0.4)
    with pytest.raises(InputError, match="same shape"):
        edict_sample(fn, x0_diffusion, x, x[:1], steps=4)
