"""Inversion, reconstruction, variations, interpolations, text diffs and probing on a tiny model."""

import pytest
import torch

from unclip.data.shapes import render_batch
from unclip.errors import CheckpointError, InputError
from unclip.manipulate import (
    BipartiteLatent,
    image_relative_errors,
    interpolate,
    invert,
    manipulation_diffusion,
    probe_pca,
    reconstruct,
    text_diff,
    vary,
)
from unclip.pipeline import UnCLIP
from unclip.prior.pca import PCA
from unclip.storage.imageio import tensor_to_pil

STEPS = 10
REFINE = 2  # fixed-point refinements per inversion step: 18 dB without, ~30 dB with 2 on the tiny model


def psnr(a, b):
    mse = ((a - b) / 2).pow(2).flatten(1).mean(1)
    return 10 * torch.log10(1 / mse)


@pytest.fixture(scope="module")
def pipe(tiny_model):
    torch.manual_seed(0)
    return UnCLIP.load(tiny_model)


@pytest.fixture(scope="module")
def images(pipe):
    x, _, _ = render_batch("test", 0, 2, size=pipe.decoder.config.image_size)
    return x


@pytest.fixture(scope="module")
def latent(pipe, images):
    return invert(pipe, images, steps=STEPS, refine=REFINE)


def test_latent_shapes_and_metadata(pipe, latent):
    s = pipe.decoder.config.image_size
    assert latent.image_embed.shape == (2, pipe.clip.embed_dim)
    assert latent.noise.shape == (2, 3, s, s)
    assert torch.allclose(latent.image_embed.norm(dim=-1), torch.ones(2), atol=1e-4)
    assert (latent.steps, latent.guidance, latent.captions) == (STEPS, 1.0, None)
    assert torch.isfinite(latent.noise).all()


def test_round_trip_reconstructs(pipe, images, latent):
    rec = reconstruct(pipe, latent)
    assert rec.shape == images.shape
    p = psnr(rec, images)
    assert p.min() > 25, p
    # a different guidance than the inversion's is not exact: the documented requirement
    other = BipartiteLatent(latent.image_embed, latent.noise, latent.steps, 3.0)
    assert psnr(reconstruct(pipe, other), images).mean() < p.mean()


def test_refine_makes_inversion_more_exact(pipe, images, latent):
    plain = invert(pipe, images, steps=STEPS, refine=0)
    assert psnr(reconstruct(pipe, latent), images).mean() > psnr(reconstruct(pipe, plain), images).mean() + 3


def test_inversion_is_deterministic_and_accepts_pil(pipe, images, latent):
    again = invert(pipe, tensor_to_pil(images), steps=STEPS, refine=REFINE)
    assert torch.allclose(again.noise, latent.noise, atol=1e-4)
    assert torch.allclose(again.image_embed, latent.image_embed, atol=1e-5)


def test_tensor_inputs_are_resized(pipe, images):
    big = torch.nn.functional.interpolate(images[:1], scale_factor=2, mode="nearest")
    lat = invert(pipe, big, steps=2)
    assert lat.noise.shape[-1] == pipe.decoder.config.image_size


def test_save_load_round_trip(tmp_path, latent):
    path = latent.save(tmp_path / "lat.safetensors")
    back = BipartiteLatent.load(path)
    assert torch.equal(back.image_embed, latent.image_embed) and torch.equal(back.noise, latent.noise)
    assert (back.steps, back.guidance, back.captions, back.min_alpha_bar, back.extra) == (
        latent.steps,
        latent.guidance,
        latent.captions,
        latent.min_alpha_bar,
        latent.extra,
    )
    (tmp_path / "junk.safetensors").write_bytes(b"not a file")
    with pytest.raises(CheckpointError):
        BipartiteLatent.load(tmp_path / "junk.safetensors")
    with pytest.raises(CheckpointError, match="not found"):
        BipartiteLatent.load(tmp_path / "missing.safetensors")


def test_vary_shapes_determinism_and_eta(pipe, latent):
    lat = latent[0]
    a = vary(pipe, lat, eta=1.0, n=3, seed=5)
    b = vary(pipe, lat, eta=1.0, n=3, seed=5)
    c = vary(pipe, lat, eta=1.0, n=3, seed=6)
    s = pipe.decoder.config.image_size
    assert a.shape == (3, 3, s, s)
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)
    assert not torch.allclose(a[0], a[1])  # the n variations differ
    zero = vary(pipe, lat, eta=0.0, n=2, seed=5)
    rec = reconstruct(pipe, lat)
    assert torch.allclose(zero, rec.expand_as(zero), atol=1e-4)
    # more eta, further from the reconstruction
    d = lambda eta: (vary(pipe, lat, eta=eta, n=3, seed=5) - rec).abs().mean().item()  # noqa: E731
    assert d(0.25) < d(1.0)


def test_interpolate_slerp_endpoints_reconstruct(pipe, images, latent):
    frames = interpolate(pipe, latent[0], latent[1], frames=4, noise="slerp")
    assert frames.shape == (4, 3) + images.shape[-2:]
    rec = reconstruct(pipe, latent)
    assert torch.allclose(frames[0], rec[0], atol=1e-4) and torch.allclose(frames[-1], rec[1], atol=1e-4)
    assert not torch.allclose(frames[1], frames[2])


def test_interpolate_fixed_noise_is_seeded(pipe, images):
    a = interpolate(pipe, images[:1], images[1:], frames=3, noise="fixed", seed=1, steps=4)
    b = interpolate(pipe, images[:1], images[1:], frames=3, noise="fixed", seed=1, steps=4)
    c = interpolate(pipe, images[:1], images[1:], frames=3, noise="fixed", seed=2, steps=4)
    assert a.shape[0] == 3 and torch.equal(a, b) and not torch.allclose(a, c)
    with pytest.raises(InputError):
        interpolate(pipe, images[:1], images[1:], noise="sideways")


def test_text_diff_starts_at_reconstruction(pipe, latent):
    lat = latent[0]
    frames = text_diff(pipe, lat, "a red circle", "a blue circle", max_theta=0.5, frames=3)
    assert frames.shape[0] == 3
    assert torch.allclose(frames[0], reconstruct(pipe, lat)[0], atol=1e-4)
    assert not torch.allclose(frames[0], frames[-1])
    with pytest.raises(InputError):
        text_diff(pipe, lat, "a red circle", "a red circle")


def test_manipulation_diffusion_avoids_the_singular_top_level(pipe):
    d = manipulation_diffusion(pipe.decoder_diffusion, 10)
    assert len(d.timestep_map) == 10 and int(d.timestep_map[0]) == 0
    assert float(d.alphas_cumprod[-1]) >= 2e-3
    assert float(pipe.decoder_diffusion.alphas_cumprod[-1]) < 1e-3  # why it is needed
    with pytest.raises(InputError):
        manipulation_diffusion(pipe.decoder_diffusion, 0)


def test_pca_maths():
    g = torch.Generator().manual_seed(0)
    basis = torch.linalg.qr(torch.randn(16, 16, generator=g, dtype=torch.float64))[0][:, :3]
    z = (
        torch.randn(200, 3, generator=g, dtype=torch.float64)
        * torch.tensor([5.0, 2.0, 1.0], dtype=torch.float64)
        @ basis.T
        + 3.0
    )
    pca = PCA.fit(z)
    assert pca.components.shape == (16, 16)
    assert (pca.eigenvalues[:-1] >= pca.eigenvalues[1:] - 1e-12).all()
    errs = image_relative_errors(pca, z[:1], [0, 1, 2, 3, 16])
    assert all(a >= b - 1e-12 for a, b in zip(errs, errs[1:])) and errs[3] < 1e-10
    assert torch.allclose(pca.truncate(z, 3), z, atol=1e-9)
    assert pca.num_components_for(0.01) == 3


def test_probe_pca_shapes(pipe, images):
    out, info = probe_pca(pipe, images[:1], [1, 2, 4], fit_n=32, steps=3)
    assert out.shape == (4, 3) + images.shape[-2:]
    assert info["dims"] == [1, 2, 4] and len(info["relative_error"]) == 3
    assert info["relative_error"][0] >= info["relative_error"][-1]
    assert 1 <= info["components_for_1pct"] <= pipe.clip.embed_dim
    again, _ = probe_pca(pipe, images[:1], [1, 2, 4], fit_n=32, steps=3)
    assert torch.equal(out, again)


def test_pipeline_methods_delegate_to_manipulations(tiny_model) -> None:
    from unclip.pipeline import UnCLIP

    pipe = UnCLIP.load(tiny_model)
    size = pipe.decoder.config.image_size
    image = torch.rand(1, 3, size, size) * 2 - 1
    latent = pipe.invert(image, steps=4)
    assert latent.noise.shape == (1, 3, size, size)
    variations = pipe.vary(image, eta=0.5, n=2, steps=4)
    assert len(variations) == 2 and variations[0].size == (size, size)
    assert len(pipe.interpolate(image, image, frames=3, steps=4)) == 3
    assert len(pipe.text_diff(image, "a red circle", "a blue circle", frames=2, steps=4)) == 2
