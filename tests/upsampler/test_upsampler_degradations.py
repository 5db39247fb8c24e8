"""Degradations of the conditioning image: seeded, vectorised, and each does what it says."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from unclip.errors import InputError
from unclip.upsampler.bsr import bsr_degradation
from unclip.upsampler.corruption import degrade
from unclip.upsampler.degradations import (
    apply_kernels,
    blur_degradation,
    gaussian_blur,
    gaussian_kernels,
    gaussian_noise,
    jpeg_compress,
    random_blur,
    resize,
)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def images(b: int = 3, size: int = 32, seed: int = 0) -> torch.Tensor:
    """Blocky random images in [-1, 1] (flat patches with sharp edges, like the shapes data)."""
    x = torch.rand(b, 3, size // 4, size // 4, generator=gen(seed)) * 2 - 1
    return F.interpolate(x, size=(size, size), mode="nearest")


def high_freq_energy(x: torch.Tensor) -> float:
    lap = torch.tensor([[0.0, 1, 0], [1, -4, 1], [0, 1, 0]]).view(1, 1, 3, 3).repeat(3, 1, 1, 1)
    return float(F.conv2d(x, lap, groups=3).square().mean())


@pytest.mark.parametrize(
    "fn",
    [
        lambda x, g: blur_degradation(x, 8, g),
        lambda x, g: bsr_degradation(x, 8, g),
        lambda x, g: random_blur(x, g),
        lambda x, g: gaussian_noise(x, g),
        lambda x, g: jpeg_compress(x, g),
    ],
)
def test_same_seed_same_output_other_seed_differs(fn) -> None:
    x = images()
    a, b, c = fn(x, gen(1)), fn(x, gen(1)), fn(x, gen(2))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_kernels_are_normalised_and_anisotropic_ones_are_not_symmetric() -> None:
    iso = gaussian_kernels(torch.tensor([1.0, 2.0]), size=9)
    assert iso.shape == (2, 9, 9)
    torch.testing.assert_close(iso.sum(dim=(1, 2)), torch.ones(2))
    torch.testing.assert_close(iso, iso.transpose(1, 2))
    aniso = gaussian_kernels(torch.tensor([0.5]), torch.tensor([2.5]), torch.tensor([0.3]), size=11)
    assert (aniso - aniso.transpose(1, 2)).abs().max() > 1e-3
    # A delta image convolved with a kernel gives back the kernel.
    delta = torch.zeros(1, 3, 31, 31)
    delta[:, :, 15, 15] = 1.0
    torch.testing.assert_close(apply_kernels(delta, aniso)[0, 1, 10:21, 10:21], aniso[0].flip(0, 1))


def test_blur_lowers_high_frequency_energy() -> None:
    x = images()
    blurred = gaussian_blur(x, gen(0), sigma_range=(1.0, 1.5))
    assert blurred.shape == x.shape
    assert high_freq_energy(blurred) < 0.5 * high_freq_energy(x)
    torch.testing.assert_close(
        blurred.mean(dim=(2, 3)), x.mean(dim=(2, 3)), atol=0.05, rtol=0
    )  # blur keeps the mean colour


def test_noise_raises_variance_of_flat_images() -> None:
    x = torch.full((4, 3, 16, 16), 0.2)
    noisy = gaussian_noise(x, gen(0), sigma_range=(0.05, 0.1))
    var = noisy.var(dim=(1, 2, 3))
    assert (var > (2 * 0.04) ** 2).all() and (var < (2 * 0.12) ** 2).all()


def test_jpeg_changes_the_image_a_little() -> None:
    x = images(2, 32)
    out = jpeg_compress(x, gen(0), quality_range=(20, 30))
    assert out.shape == x.shape and out.dtype == x.dtype
    diff = (out - x).abs().mean()
    assert 1e-3 < diff < 0.3


def test_degradations_give_low_res_images_in_range() -> None:
    x = images(2, 32)
    for kind in ("none", "blur", "bsr"):
        out = degrade(x, 8, kind, gen(0))
        assert out.shape == (2, 3, 8, 8)
        assert out.min() >= -1 and out.max() <= 1
    with pytest.raises(InputError, match="degradation"):
        degrade(x, 8, "sharpen", gen(0))
    with pytest.raises(InputError, match="mode"):
        resize(x, 8, "lanczos")
