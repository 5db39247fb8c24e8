"""Inversion through the decoder and the upsampler stages (``invert`` with ``size``) on the tiny 16 -> 64 model."""

import json
from dataclasses import replace

import pytest
import torch
from safetensors import safe_open

from unclip.apps.cli.main import main
from unclip.data.shapes import render_batch
from unclip.errors import CheckpointError, InputError
from unclip.manipulate import BipartiteLatent, as_image_tensor, invert, reconstruct, vary
from unclip.pipeline import UnCLIP
from unclip.storage.imageio import tensor_to_pil

STEPS = 10
UP_STEPS = 10
REFINE = 2
TOP = 64


def psnr(a, b):
    mse = ((a - b) / 2).pow(2).flatten(1).mean(1)
    return 10 * torch.log10(1 / mse)


@pytest.fixture(scope="module")
def pipe(full_tiny_model):
    return UnCLIP.load(full_tiny_model)


@pytest.fixture(scope="module")
def eps_pipe(full_tiny_model):
    """The tiny model, its stage run as a plain (non-residual) eps-predicting network.

    These tests need a stage whose output depends on its starting noise, as a trained
    diffusion upsampler's fine detail does. The tiny residual stage, trained for 20 steps,
    still returns almost exactly the bicubic upsampling whatever the noise, so inverting
    its noise could not be told apart from drawing it afresh. The same weights without the
    residual connection, read as eps predictions, make a noise-dependent stage.
    """
    from dataclasses import replace

    pipe = UnCLIP.load(full_tiny_model)
    for stage in pipe.upsamplers:
        stage.model.config.residual = False
        stage.settings = replace(stage.settings, prediction="eps")
    return pipe


@pytest.fixture(scope="module")
def images():
    x, _, _ = render_batch("test", 0, 2, size=TOP)
    return x


@pytest.fixture(scope="module")
def latent(pipe, images):
    return invert(pipe, images, size=TOP, steps=STEPS, upsampler_steps=UP_STEPS, refine=REFINE)


@pytest.fixture(scope="module")
def rec_levels(pipe, latent):
    return reconstruct(pipe, latent, return_levels=True)


def test_shapes_of_latent_and_reconstruction(pipe, latent, rec_levels):
    s = pipe.decoder.config.image_size
    assert [st.high_res for st in pipe.stage_chain(TOP)] == [TOP]
    assert latent.image_embed.shape == (2, pipe.clip.embed_dim)
    assert latent.noise.shape == (2, 3, s, s)
    assert [tuple(z.shape) for z in latent.stage_noises] == [(2, 3, TOP, TOP)]
    assert (latent.stage_steps, latent.stage_low_res, latent.size) == ([UP_STEPS], [s], TOP)
    assert (latent.steps, latent.extra["refine"], latent.extra["size"], latent.extra["condition"]) == (
        STEPS,
        REFINE,
        TOP,
        "decoded",
    )
    assert all(torch.isfinite(z).all() for z in latent.stage_noises)
    assert [tuple(x.shape) for x in rec_levels] == [(2, 3, s, s), (2, 3, TOP, TOP)]
    assert all(float(x.abs().max()) <= 1.0 for x in rec_levels)
    one = latent[1]
    assert len(one) == 1 and torch.equal(one.stage_noises[0], latent.stage_noises[0][1:2])


def test_decoder_level_is_the_plain_inversion(pipe, images, latent, rec_levels):
    """The cascade's decoder level is exactly :func:`invert` of the resized input."""
    plain = invert(pipe, as_image_tensor(images, pipe.decoder.config.image_size), steps=STEPS, refine=REFINE)
    assert torch.allclose(plain.noise, latent.noise, atol=1e-5)
    assert torch.allclose(reconstruct(pipe, plain), rec_levels[0], atol=1e-5)
    # and the decoder's own side needs no stage
    flat = invert(pipe, images, size=pipe.decoder.config.image_size, steps=2)
    assert flat.stage_noises == [] and flat.size == pipe.decoder.config.image_size


@pytest.fixture(scope="module")
def eps_latent(eps_pipe, images):
    return invert(eps_pipe, images, size=TOP, steps=STEPS, upsampler_steps=UP_STEPS, refine=REFINE)


def test_inverted_stage_noise_beats_fresh_noise(eps_pipe, images, eps_latent):
    pipe, latent = eps_pipe, eps_latent
    rec_levels = reconstruct(pipe, latent, return_levels=True)
    top = psnr(rec_levels[-1], images)
    fresh = replace(
        latent,
        stage_noises=[torch.randn(z.shape, generator=torch.Generator().manual_seed(1)) for z in latent.stage_noises],
    )
    fresh_psnr = psnr(reconstruct(pipe, fresh), images)
    assert top.min() > 24, top  # measured 27-28.5 dB at these settings (the decoder level alone: 25-27 dB)
    assert top.mean() > fresh_psnr.mean() + 10, (top, fresh_psnr)


def test_conditioning_on_the_decoded_level_beats_the_resized_input(eps_pipe, images, eps_latent):
    """condition="decoded" inverts each stage under the model function decoding will use; "input" does not."""
    pipe = eps_pipe
    rec_levels = reconstruct(pipe, eps_latent, return_levels=True)
    lat = invert(pipe, images, size=TOP, steps=STEPS, upsampler_steps=UP_STEPS, refine=REFINE, condition="input")
    assert lat.extra["condition"] == "input"
    dec, inp = psnr(rec_levels[-1], images), psnr(reconstruct(pipe, lat), images)
    assert dec.mean() > inp.mean() + 3, (dec, inp)  # measured ~27.5 vs ~21 dB
    with pytest.raises(InputError, match="condition"):
        invert(pipe, images, size=TOP, steps=2, condition="blurred")


def test_one_stage_round_trip_is_near_exact(pipe, images):
    """A stage alone, inverted and decoded under one model function and respacing, gives its input back."""
    from unclip.diffusion import bind, ddim_invert, ddim_sample
    from unclip.manipulate import manipulation_diffusion

    st = pipe.stage_chain(TOP)[0]
    fn = bind(st.model, low_res=as_image_tensor(images, st.low_res))
    d = manipulation_diffusion(st.settings.make(), UP_STEPS)
    out = ddim_sample(fn, d, ddim_invert(fn, d, images, refine=REFINE)).clamp(-1, 1)
    assert psnr(out, images).min() > 25  # measured 28-29 dB at 10 steps (44 dB at 27)


def test_deterministic(pipe, images, latent, rec_levels):
    again = invert(pipe, tensor_to_pil(images), size=TOP, steps=STEPS, upsampler_steps=UP_STEPS, refine=REFINE)
    assert torch.allclose(again.stage_noises[0], latent.stage_noises[0], atol=1e-4)
    assert torch.equal(reconstruct(pipe, latent), rec_levels[-1])


def test_save_load_round_trip(pipe, latent, rec_levels, tmp_path):
    path = latent.save(tmp_path / "lat.safetensors")
    back = BipartiteLatent.load(path)
    assert torch.equal(back.noise, latent.noise) and torch.equal(back.stage_noises[0], latent.stage_noises[0])
    assert (back.stage_steps, back.stage_low_res, back.steps, back.extra) == (
        latent.stage_steps,
        latent.stage_low_res,
        latent.steps,
        latent.extra,
    )
    assert torch.equal(back.stage_partners[0], latent.stage_partners[0]) and back.stage_mix == latent.stage_mix
    # same tensors; memory layout may change the last bits, which EDICT's coupled steps amplify (measured 9e-4)
    assert torch.allclose(reconstruct(pipe, back), rec_levels[-1], atol=3e-3)
    # the decoder level alone decodes as the plain inversion does
    assert torch.allclose(reconstruct(pipe, back.decoder_level()), rec_levels[0], atol=1e-4)


def test_old_style_latent_files_still_load(pipe, latent, tmp_path):
    old = latent.decoder_level()
    path = old.save(tmp_path / "old.safetensors")
    with safe_open(str(path), framework="pt") as f:
        assert set(f.keys()) == {"image_embed", "noise"} and "cascade" not in json.loads(f.metadata()["unclip"])
    back = BipartiteLatent.load(path)
    assert back.stage_noises == [] and back.size == pipe.decoder.config.image_size
    assert torch.allclose(reconstruct(pipe, back), reconstruct(pipe, old), atol=1e-4)


def test_bad_inputs_name_the_problem(pipe, images, latent, tmp_path):
    with pytest.raises(InputError, match="available sizes"):
        invert(pipe, images, size=48, steps=2)
    with pytest.raises(InputError, match="one per stage"):
        invert(pipe, images, size=TOP, steps=2, upsampler_steps=[2, 2])
    with pytest.raises(InputError, match="chain"):
        replace(latent, stage_steps=[UP_STEPS], stage_low_res=[32])
    # a file whose metadata lists a stage it does not hold
    path = tmp_path / "broken.safetensors"
    meta = latent.metadata()
    from unclip.storage.checkpoint import save_tensors

    save_tensors(
        path, {"image_embed": latent.image_embed, "noise": latent.noise}, metadata={"unclip": json.dumps(meta)}
    )
    with pytest.raises(CheckpointError, match="stage_noise_0"):
        BipartiteLatent.load(path)
    # an EDICT latent without its partner noise, and an unknown inversion
    save_tensors(
        path,
        {"image_embed": latent.image_embed, "noise": latent.noise, "stage_noise_0": latent.stage_noises[0]},
        metadata={"unclip": json.dumps(meta)},
    )
    with pytest.raises(CheckpointError, match="stage_partner_0"):
        BipartiteLatent.load(path)
    meta["cascade"]["inversion"] = "edit"
    tensors = {"image_embed": latent.image_embed, "noise": latent.noise}
    save_tensors(path, tensors, metadata={"unclip": json.dumps(meta)})
    with pytest.raises(CheckpointError, match="'inversion'"):
        BipartiteLatent.load(path)
    with pytest.raises(InputError, match="stage_inversion"):
        invert(pipe, images, size=TOP, steps=2, stage_inversion="exact")


def test_edict_stages_reconstruct_exactly_where_ddim_stalls(pipe, images, latent, rec_levels):
    """The tiny residual stage, like the shipped one, predicts x0 that ignores most of its input's
    detail, so its DDIM inversion stalls; EDICT (the default) inverts it exactly."""
    assert latent.stage_inversion == "edict" and latent.metadata()["cascade"]["inversion"] == "edict"
    assert [p.shape for p in latent.stage_partners] == [z.shape for z in latent.stage_noises]
    edict = psnr(rec_levels[-1], images)
    ddim_lat = invert(pipe, images, size=TOP, steps=STEPS, upsampler_steps=UP_STEPS, refine=REFINE,
                      stage_inversion="ddim")  # fmt: skip
    assert ddim_lat.stage_partners == [] and ddim_lat.stage_inversion == "ddim"
    ddim = psnr(reconstruct(pipe, ddim_lat), images)
    assert edict.min() > 60 and edict.min() > ddim.max() + 20, (edict, ddim)


def test_edict_stage_samples_afresh_at_positive_eta(pipe, latent, rec_levels):
    gen = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    a = reconstruct(pipe, latent, eta=1.0, generator=gen())
    b = reconstruct(pipe, latent, eta=1.0, generator=gen())
    assert torch.equal(a, b) and a.shape == rec_levels[-1].shape
    assert bool(torch.isfinite(a).all()) and float(a.abs().max()) <= 1.0
    assert float((a - rec_levels[-1]).abs().mean()) > 1e-3


def test_cli_invert_with_size(full_tiny_model, images, tmp_path, capsys):
    png = tmp_path / "in.png"
    tensor_to_pil(images[:1])[0].save(png)
    out = tmp_path / "lat.safetensors"
    assert (
        main(
            [
                "invert",
                str(png),
                "--model",
                full_tiny_model,
                "--size",
                str(TOP),
                "--steps",
                "4",
                "--out",
                str(out),
                "--reconstruct",
                str(tmp_path / "rec"),
            ]
        )
        == 0
    )
    lat = BipartiteLatent.load(out)
    assert len(lat.stage_noises) == 1 and lat.size == TOP
    manifest = json.loads((tmp_path / "rec" / "manifest.json").read_text())
    assert manifest["settings"]["size"] == TOP and manifest["images"][0]["psnr_db"] > 0
    assert "stage 0 noise pair (EDICT) (1, 3, 64, 64)" in capsys.readouterr().out
    assert len(lat.stage_partners) == 1 and manifest["settings"]["stage_inversion"] == "edict"


def test_vary_at_eta_0_above_the_decoder_side_gives_the_image_back(pipe, images, latent, rec_levels):
    """`unclip vary IMAGE --eta 0 --size S` inverts the stages too, so the input comes back at S."""
    rec = vary(pipe, images[:1], eta=0.0, n=2, size=TOP, steps=STEPS, refine=REFINE, upsampler_steps=UP_STEPS)
    assert rec.shape == (2, 3, TOP, TOP) and torch.equal(rec[0], rec[1])
    assert psnr(rec, images[:1].expand(2, -1, -1, -1)).min() > 60
    # a latent that holds its stages decodes through them; at eta > 0 the stages sample afresh
    assert torch.equal(vary(pipe, latent[1], eta=0.0, n=1, size=TOP), reconstruct(pipe, latent[1]))
    varied = vary(pipe, latent[1], eta=1.0, n=2, size=TOP, seed=0)
    assert varied.shape == (2, 3, TOP, TOP) and not torch.equal(varied[0], varied[1])
    # without size, the decoder's side as before
    assert vary(pipe, latent[1], eta=0.0, n=1).shape[-1] == pipe.decoder.config.image_size
