"""Karlo at its published sizes (random weights): one guided denoising step of every component through our adapters.

The configs are those of diffusers' Karlo conversion script
(scripts/convert_kakao_brain_unclip_to_diffusers.py): the PriorTransformer's defaults (20 layers
of 32 x 64, 1.02 B parameters), the 64 px decoder UNet (320-1280 channels, 3 layers per block,
cross-attention 1536, 0.89 B) with its text projection, the two 64 -> 256 super-resolution UNets
(0.69 B each), and OpenAI's CLIP ViT-L/14 (text 0.12 B, vision 0.30 B): 3.7 B parameters, 13.9 GiB
in float32. The components are built and run one after another (CLIP is kept throughout), so
peak memory is CLIP plus the largest stage, not the sum; the test prints the peak RSS.

Slow: minutes of CPU at 256 px. ``UNCLIP_KARLO_SR_SIDE`` (default 256) sets the super-resolution
output side, e.g. 64 to check the rest quickly on a busy machine.
"""

from __future__ import annotations

import gc
import os
import resource
import time

import pytest
import torch

pytest.importorskip("diffusers")

pytestmark = pytest.mark.slow

DECODER = {
    "sample_size": 64,
    "layers_per_block": 3,
    "down_block_types": (
        "ResnetDownsampleBlock2D",
        "SimpleCrossAttnDownBlock2D",
        "SimpleCrossAttnDownBlock2D",
        "SimpleCrossAttnDownBlock2D",
    ),
    "up_block_types": (
        "SimpleCrossAttnUpBlock2D",
        "SimpleCrossAttnUpBlock2D",
        "SimpleCrossAttnUpBlock2D",
        "ResnetUpsampleBlock2D",
    ),
    "mid_block_type": "UNetMidBlock2DSimpleCrossAttn",
    "block_out_channels": (320, 640, 960, 1280),
    "in_channels": 3,
    "out_channels": 6,
    "cross_attention_dim": 1536,
    "class_embed_type": "identity",
    "attention_head_dim": 64,
    "resnet_time_scale_shift": "scale_shift",
}
SUPER_RES = {
    "sample_size": 256,
    "layers_per_block": 3,
    "down_block_types": ("ResnetDownsampleBlock2D",) * 4,
    "up_block_types": ("ResnetUpsampleBlock2D",) * 4,
    "block_out_channels": (320, 640, 960, 1280),
    "in_channels": 6,
    "out_channels": 3,
    "add_attention": False,
}
GB = 1024**3  # GiB


def _peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GB  # ru_maxrss is in KiB on Linux


def _params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def _clip(tmp_path):
    from karlo_tiny import write_tokenizer
    from transformers import (
        CLIPTextConfig,
        CLIPTextModelWithProjection,
        CLIPVisionConfig,
        CLIPVisionModelWithProjection,
    )

    from unclip.adapters.clip import KarloCLIP

    torch.manual_seed(0)
    text_cfg = CLIPTextConfig(
        hidden_size=768, intermediate_size=3072, num_attention_heads=12, num_hidden_layers=12,
        projection_dim=768, vocab_size=49408, max_position_embeddings=77,
    )  # fmt: skip
    vision_cfg = CLIPVisionConfig(
        hidden_size=1024, intermediate_size=4096, num_attention_heads=16, num_hidden_layers=24,
        patch_size=14, image_size=224, projection_dim=768,
    )  # fmt: skip
    tok = write_tokenizer(tmp_path / "tok")
    text_cfg.bos_token_id, text_cfg.eos_token_id, text_cfg.pad_token_id = tok.bos_token_id, tok.eos_token_id, 0
    text = CLIPTextModelWithProjection(text_cfg).eval().requires_grad_(False)
    vision = CLIPVisionModelWithProjection(vision_cfg).eval().requires_grad_(False)
    return KarloCLIP(tok, text, vision)


@torch.no_grad()
def test_every_component_at_karlo_size_takes_a_guided_step(tmp_path):
    from diffusers import PriorTransformer, UNet2DConditionModel, UNet2DModel

    from unclip.adapters.decoder import KarloDecoder
    from unclip.adapters.karlo import _imports
    from unclip.adapters.prior import KarloPrior
    from unclip.adapters.upsampler import KarloUpsampler
    from unclip.diffusion import classifier_free_guidance

    sr_side = int(os.environ.get("UNCLIP_KARLO_SR_SIDE", "256"))
    report, start = {}, time.time()
    clip = _clip(tmp_path)
    prompts = ["an astronaut riding a horse"]
    text = clip.encode_text_full(prompts)
    z_i = clip.encode_image(torch.rand(1, 3, 256, 256) * 2 - 1)
    assert text.embed.shape == (1, 768) and text.tokens.shape == (1, 77, 768) and z_i.shape == (1, 768)
    report["clip"] = (_params(clip.model), _peak_rss_gb(), time.time() - start)
    keep, t = torch.ones(1, dtype=torch.bool), torch.tensor([999])

    start = time.time()
    torch.manual_seed(1)
    prior = KarloPrior(PriorTransformer().eval().requires_grad_(False), clip.encode_text_full([""]))
    cond = {"text_embed": text.embed, "text_tokens": text.tokens, "text_mask": text.mask, "text_keep": keep}
    out = classifier_free_guidance(prior, 4.0, cond, {**cond, "text_keep": ~keep})(torch.randn(1, 768), t)
    assert out.shape == (1, 768) and bool(torch.isfinite(out).all())
    report["prior"] = (_params(prior), _peak_rss_gb(), time.time() - start)
    del prior, out
    gc.collect()

    start = time.time()
    torch.manual_seed(2)
    text_proj = _imports()["UnCLIPTextProjModel"](time_embed_dim=1280, cross_attention_dim=1536)
    decoder = KarloDecoder(UNet2DConditionModel(**DECODER).eval(), text_proj.eval(), clip).requires_grad_(False)
    tokens = clip.tokenize(prompts)
    cond = {"image_embed": z_i, "text_tokens": tokens, "image_keep": keep, "text_keep": keep}
    uncond = {**cond, "image_keep": ~keep, "text_keep": ~keep}
    out = classifier_free_guidance(decoder, 8.0, cond, uncond, guided_channels=3)(torch.randn(1, 3, 64, 64), t)
    assert out.shape == (1, 6, 64, 64) and bool(torch.isfinite(out).all())
    report["decoder"] = (_params(decoder), _peak_rss_gb(), time.time() - start)
    del decoder, text_proj, out
    gc.collect()

    start = time.time()
    torch.manual_seed(3)
    up = KarloUpsampler(UNet2DModel(**SUPER_RES).eval(), UNet2DModel(**SUPER_RES).eval(), 64).requires_grad_(False)
    low = torch.rand(1, 3, sr_side // 4, sr_side // 4) * 2 - 1
    for step in (999, 0):  # super_res_first, then super_res_last (no guidance: unCLIP section 2.1)
        out = up(torch.randn(1, 3, sr_side, sr_side), torch.tensor([step]), low)
        assert out.shape == (1, 3, sr_side, sr_side) and bool(torch.isfinite(out).all())
    report[f"super_res ({sr_side} px)"] = (_params(up), _peak_rss_gb(), time.time() - start)

    for name, (n, rss, secs) in report.items():
        print(f"{name}: {n / 1e6:.0f} M parameters, peak RSS so far {rss:.1f} GiB, {secs:.0f} s")
    total = sum(n for n, _, _ in report.values())
    print(f"all components: {total / 1e9:.2f} B parameters = {total * 4 / GB:.1f} GiB in float32")
    assert 3.5e9 < total < 3.9e9
    assert _peak_rss_gb() < 20.0
