"""The pipeline's optional components: AR prior, text-only baseline decoder, upsampler cascade."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from unclip.apps.cli.main import main
from unclip.errors import CheckpointError, InputError
from unclip.model_dir import read_model_json, register_component
from unclip.pipeline import UnCLIP
from unclip.train.components import warm_start_decoder


@pytest.fixture(scope="module")
def pipe(full_tiny_model) -> UnCLIP:
    return UnCLIP.load(full_tiny_model)


def test_load_finds_every_component(pipe, full_tiny_model):
    comps = read_model_json(full_tiny_model)["components"]
    assert {"prior_ar", "decoder_text_only", "upsampler_64"} <= set(comps)
    assert pipe.ar_prior is not None and pipe.prior is not None
    assert pipe.output_sizes == [16, 64]


def test_ar_prior_mode_gives_unit_embeddings_and_is_seeded(pipe):
    gen = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    z1 = pipe.image_embeds_for(["a red circle", "a blue square"], "ar", generator=gen())
    z2 = pipe.image_embeds_for(["a red circle", "a blue square"], "ar", generator=gen())
    assert z1.shape == (2, pipe.clip.embed_dim)
    assert torch.allclose(z1.norm(dim=-1), torch.ones(2), atol=1e-4)
    assert torch.equal(z1, z2)


def test_generate_with_ar_prior(pipe):
    images, prompts = pipe.generate_tensors(["a red circle"], num_images=2, seed=0, prior="ar", steps=2)
    assert images.shape == (2, 3, 16, 16) and prompts == ["a red circle"] * 2
    assert images.min() >= -1 and images.max() <= 1


def test_generate_through_the_cascade_is_seeded(pipe):
    a, _ = pipe.generate_tensors(["a red circle"], seed=1, steps=2, prior_steps=2, size=64, upsampler_steps=2)
    b, _ = pipe.generate_tensors(["a red circle"], seed=1, steps=2, prior_steps=2, size=64, upsampler_steps=2)
    assert a.shape == (1, 3, 64, 64)
    assert torch.equal(a, b)


def test_unreachable_size_names_the_available_ones(pipe):
    with pytest.raises(InputError, match="16, 64"):
        pipe.generate_tensors(["a red circle"], steps=2, prior_steps=2, size=48)


def test_shared_noise_makes_identical_inputs_upsample_identically(pipe):
    low = torch.rand(1, 3, 16, 16).mul(2).sub(1).expand(3, -1, -1, -1)
    shared = pipe.upsample_to(low, 64, steps=2, shared_noise=True)
    independent = pipe.upsample_to(low, 64, steps=2)
    assert torch.allclose(shared[0], shared[2])
    assert not torch.allclose(independent[0], independent[2])


def test_fixed_image_embeds_are_decoded_as_given(pipe):
    """The report holds the prior's z_i fixed across decoder guidance scales through ``image_embeds``."""
    prompts = ["a red circle", "a green star"]
    z = pipe.image_embeds_for(prompts, "diffusion", generator=torch.Generator().manual_seed(5), steps=2)
    a, _ = pipe.generate_tensors(prompts, seed=5, steps=2, image_embeds=z, decoder_guidance=1.0)
    b, _ = pipe.generate_tensors(prompts, seed=5, steps=2, image_embeds=z.clone(), decoder_guidance=1.0)
    c, _ = pipe.generate_tensors(prompts, seed=5, steps=2, image_embeds=-z, decoder_guidance=1.0)
    assert torch.equal(a, b) and not torch.allclose(a, c)
    with pytest.raises(InputError, match="image_embeds must have shape"):
        pipe.generate_tensors(prompts, steps=2, image_embeds=z[:1])


def test_text_only_baseline_refuses_priors(full_tiny_model):
    base = UnCLIP.load(full_tiny_model, decoder="decoder_text_only")
    assert base.decoder.config.use_image_embed is False
    images, _ = base.generate_tensors(["a red circle"], seed=0, prior="none", steps=2)
    assert images.shape == (1, 3, 16, 16)
    with pytest.raises(InputError, match="text-only"):
        base.generate_tensors(["a red circle"], steps=2, prior="diffusion")


def test_missing_components_are_named(tiny_model):
    with pytest.raises(CheckpointError, match="decoder_text_only"):
        UnCLIP.load(tiny_model, decoder="decoder_text_only")
    pipe = UnCLIP.load(tiny_model)
    with pytest.raises(InputError, match="train ar-prior"):
        pipe.image_embeds_for(["a red circle"], "ar")


def test_warm_start_copies_every_shared_weight(tiny_model):
    model, _ = warm_start_decoder(Path(tiny_model) / "decoder", text_only=True)
    source = UnCLIP.load(tiny_model).decoder.state_dict()
    own = model.state_dict()
    assert not any(k.startswith(("image_to_", "null_image")) for k in own)
    assert set(own) < set(source)
    assert all(torch.equal(own[k], source[k]) for k in own)


def test_register_component_keeps_the_rest(tmp_path):
    register_component(tmp_path, "prior_ar", info={"steps": 3})
    register_component(tmp_path, "upsampler_128")
    meta = json.loads((tmp_path / "model.json").read_text())
    assert meta["components"] == {"prior_ar": "prior_ar", "upsampler_128": "upsampler_128"}
    assert meta["info"]["prior_ar"] == {"steps": 3}
    (tmp_path / "model.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        read_model_json(tmp_path)


def test_cli_generate_with_ar_prior_and_size(full_tiny_model, tmp_path, capsys):
    out = tmp_path / "gen"
    assert (
        main(
            [
                "generate",
                "a red circle",
                "--model",
                full_tiny_model,
                "-n",
                "1",
                "--prior",
                "ar",
                "--steps",
                "2",
                "--size",
                "64",
                "--upsampler-steps",
                "2",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["settings"]["size"] == 64 and manifest["settings"]["prior"] == "ar"
    from PIL import Image

    with Image.open(out / "000.png") as im:
        assert im.size == (64, 64)


def test_cli_eval_scores_the_baseline(full_tiny_model, capsys):
    assert (
        main(
            [
                "eval",
                "--model",
                full_tiny_model,
                "--decoder",
                "decoder_text_only",
                "--prior",
                "none",
                "--seeds",
                "1",
                "--steps",
                "2",
                "--json",
            ]
        )
        == 0
    )
    report = json.loads(capsys.readouterr().out)
    assert report["decoder"] == "decoder_text_only" and report["images"] == 32
    assert "prior_cosine_to_true_image_embed" not in report
