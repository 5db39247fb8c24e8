"""Each Karlo adapter returns what its diffusers/transformers module returns on the same inputs (<= 1e-5, fp32)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

TOL = 1e-5


def _maxdiff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return float((a.detach().float() - b.detach().float()).abs().max())


def test_loader_builds_every_component(karlo_pipe, karlo_dirs):
    from unclip.adapters.karlo import read_index

    assert type(karlo_pipe).__name__ == "KarloUnCLIP"
    assert read_index(karlo_dirs["t2i"])["_class_name"] == "UnCLIPPipeline"
    assert karlo_pipe.output_sizes == [64, 128] and karlo_pipe.defaults.size == 128
    assert karlo_pipe.decoder_settings.learned_variance and karlo_pipe.prior is not None
    assert karlo_pipe.clip.has_image_encoder and karlo_pipe.clip.embed_dim == 32
    assert karlo_pipe.schedules["prior"].clip_x0 == 5.0 and karlo_pipe.schedules["decoder"].clip_x0 == 1.0


def test_clip_text_matches_transformers(karlo_pipe, karlo_dirs):
    ref, tok = karlo_dirs["pipe"].text_encoder, karlo_dirs["pipe"].tokenizer
    prompts = ["a horse", "", "an astronaut riding a horse on the moon!"]
    enc = karlo_pipe.clip.encode_text_full(prompts)
    inputs = tok(prompts, padding="max_length", max_length=tok.model_max_length, truncation=True, return_tensors="pt")
    with torch.no_grad():
        out = ref(inputs.input_ids)
    assert _maxdiff(enc.embed, out.text_embeds) <= TOL
    assert _maxdiff(enc.tokens, out.last_hidden_state) <= TOL
    assert torch.equal(enc.mask, inputs.attention_mask.bool())  # "!" inside a caption is a real token, not padding
    assert torch.equal(karlo_pipe.clip.tokenize(prompts), inputs.input_ids)


def test_clip_image_matches_transformers_and_processor_gap(karlo_pipe, karlo_dirs):
    vision = karlo_dirs["var_pipe"].image_encoder
    x = torch.rand(2, 3, 48, 40, generator=torch.Generator().manual_seed(0)) * 2 - 1
    z = karlo_pipe.clip.encode_image(x)
    with torch.no_grad():
        ref = vision(pixel_values=karlo_pipe.clip.preprocess(x)).image_embeds
    assert _maxdiff(z, ref) <= TOL
    # Against diffusers' own preprocessing (PIL on 8-bit images): close, not equal.
    from PIL import Image

    pils = [Image.fromarray(((im.permute(1, 2, 0) + 1) * 127.5).round().clamp(0, 255).byte().numpy()) for im in x]
    pixels = karlo_dirs["var_pipe"].feature_extractor(images=pils, return_tensors="pt").pixel_values
    with torch.no_grad():
        via_processor = vision(pixel_values=pixels).image_embeds
    cos = F.cosine_similarity(z, via_processor, dim=-1)
    assert bool((cos > 0.95).all()), cos


def test_clip_without_image_encoder_says_where_to_get_one(karlo_dirs):
    from unclip import UnCLIP
    from unclip.errors import InputError

    pipe = UnCLIP.load(karlo_dirs["t2i"])
    with pytest.raises(InputError, match="image-encoder-from"):
        pipe.invert(torch.zeros(1, 3, 64, 64))


def test_prior_matches_prior_transformer(karlo_pipe, karlo_dirs):
    ref, clip = karlo_dirs["pipe"].prior, karlo_pipe.clip
    text = clip.encode_text_full(["a horse", "a cat"])
    null = clip.encode_text_full(["", ""])
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 32, generator=g)
    t = torch.tensor([999, 3])
    keep = torch.tensor([True, False])
    ours = karlo_pipe.prior(x, t, text.embed, text.tokens, text.mask, keep)
    with torch.no_grad():
        want_cond = ref(
            x, t, proj_embedding=text.embed, encoder_hidden_states=text.tokens, attention_mask=text.mask
        ).predicted_image_embedding
        want_null = ref(
            x, t, proj_embedding=null.embed, encoder_hidden_states=null.tokens, attention_mask=null.mask
        ).predicted_image_embedding
    assert _maxdiff(ours[0], want_cond[0]) <= TOL
    assert _maxdiff(ours[1], want_null[1]) <= TOL
    assert _maxdiff(karlo_pipe.prior.to_embedding(x), ref.post_process_latents(x)) <= TOL


def test_decoder_matches_text_proj_and_unet(karlo_pipe, karlo_dirs):
    ref = karlo_dirs["pipe"]
    clip = karlo_pipe.clip
    prompts = ["a horse", "a red cat"]
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, 3, 64, 64, generator=g)
    z = torch.randn(2, 32, generator=g) * 5
    t = torch.tensor([500, 500])
    tokens = clip.tokenize(prompts)
    ours_cond = karlo_pipe.decoder(x, t, image_embed=z, text_tokens=tokens)
    ones = torch.ones(2, dtype=torch.bool)
    ours_uncond = karlo_pipe.decoder(x, t, image_embed=z, text_tokens=tokens, image_keep=~ones, text_keep=~ones)
    # diffusers' UnCLIPPipeline: one batch [unconditional; conditional] through the text projection and UNet
    text = clip.encode_text_full(prompts)
    null = clip.encode_text_full(["", ""])
    with torch.no_grad():
        hidden, time_extra = ref.text_proj(
            image_embeddings=z,
            prompt_embeds=torch.cat([null.embed, text.embed]),
            text_encoder_hidden_states=torch.cat([null.tokens, text.tokens]),
            do_classifier_free_guidance=True,
        )
        mask = F.pad(torch.cat([null.mask, text.mask]), (ref.text_proj.clip_extra_context_tokens, 0), value=True)
        want = ref.decoder(
            sample=torch.cat([x, x]),
            timestep=500,
            encoder_hidden_states=hidden,
            class_labels=time_extra,
            attention_mask=mask,
        ).sample
    assert ours_cond.shape == (2, 6, 64, 64)
    assert _maxdiff(ours_uncond, want[:2]) <= TOL
    assert _maxdiff(ours_cond, want[2:]) <= TOL


def test_upsampler_switches_to_last_at_t0(karlo_pipe, karlo_dirs):
    ref = karlo_dirs["pipe"]
    up = karlo_pipe.upsamplers[0].model
    g = torch.Generator().manual_seed(3)
    low = torch.rand(1, 3, 64, 64, generator=g) * 2 - 1
    side = up.config.high_res
    x = torch.randn(1, 3, side, side, generator=g)
    big = F.interpolate(low, size=[side, side], mode="bicubic", align_corners=False, antialias=True)
    with torch.no_grad():
        want_first = ref.super_res_first(sample=torch.cat([x, big], 1), timestep=torch.tensor([833])).sample
        want_last = ref.super_res_last(sample=torch.cat([x, big], 1), timestep=torch.tensor([0])).sample
    assert _maxdiff(up(x, torch.tensor([833]), low), want_first) <= TOL
    assert _maxdiff(up(x, torch.tensor([0]), low), want_last) <= TOL
    assert _maxdiff(want_first, want_last) > 1e-3  # the two networks differ, so the switch is tested
    mixed = up(torch.cat([x, x]), torch.tensor([0, 833]), torch.cat([low, low]))
    assert _maxdiff(mixed, torch.cat([want_last, want_first])) <= TOL
    assert up.config.low_res == 64 and up.config.high_res == 128


def test_loader_rejects_other_pipelines_and_pickles(tmp_path, karlo_dirs):
    import json
    import shutil

    from unclip.adapters import load_diffusers_unclip
    from unclip.errors import CheckpointError

    bad = tmp_path / "sd"
    bad.mkdir()
    (bad / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    with pytest.raises(CheckpointError, match="StableDiffusionPipeline"):
        load_diffusers_unclip(bad)
    copy = tmp_path / "karlo"
    shutil.copytree(karlo_dirs["t2i"], copy)
    for f in (copy / "decoder").glob("*.safetensors"):
        f.rename(f.with_suffix(".bin"))
    with pytest.raises(CheckpointError, match="safetensors"):
        load_diffusers_unclip(copy)


def test_half_precision_networks_return_float32(karlo_dirs):
    import torch

    from unclip.pipeline.karlo import KarloUnCLIP

    pipe = KarloUnCLIP.from_diffusers(
        karlo_dirs["t2i"], image_encoder_from=karlo_dirs["variations"], dtype=torch.bfloat16
    )
    assert pipe.decoder.dtype == torch.bfloat16 and pipe.prior.dtype == torch.bfloat16
    images, _ = pipe.generate_tensors(["a horse"], steps=2, prior_steps=2, size=128, upsampler_steps=2)
    assert images.dtype == torch.float32 and images.shape == (1, 3, 128, 128) and bool(torch.isfinite(images).all())
    assert pipe.clip.encode_image(images).dtype == torch.float32
