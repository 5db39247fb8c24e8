"""Builders of tiny random diffusers unCLIP (Karlo-layout) components for tests/adapters.

The networks have the shapes of diffusers' own dummy components (tests/pipelines/unclip/
test_unclip.py and test_unclip_image_variation.py: CLIP width 32, 5 layers; prior with 2
heads of 12, 1 layer; decoder and super-resolution UNets with 32/64 channels, one layer per
block; cross-attention width 100) at a 64 px decoder (Karlo's side) and a 64 -> 128 upsampler
(the dummy test's ratio 2; 256 px costs 4x). The tokenizer is a character-level CLIP BPE
vocabulary written here (no network access), with Karlo's padding token "!" at id 0.
Directories are written by the (deprecated) diffusers pipelines' ``save_pretrained``, which
is exactly the layout of the released weights.
"""

from __future__ import annotations

import json
import string
from pathlib import Path

import torch

WIDTH = 32  # CLIP text/vision width and projection (diffusers' text_embedder_hidden_size)
CROSS = 100  # decoder cross-attention width
DECODER_SIDE, SR_SIDE, VISION_SIDE = 64, 128, 32


def write_tokenizer(folder: Path):
    """A character-level CLIPTokenizer: "!" (pad) at id 0, letters/digits with and without "</w>", then BOS, EOS."""
    from transformers import CLIPTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    chars = string.ascii_lowercase + string.digits + ".,'!-"
    tokens = ["!"] + [c for c in chars if c != "!"] + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"]
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    return CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), pad_token="!", model_max_length=77)


def text_encoder(tokenizer):
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    torch.manual_seed(0)
    cfg = CLIPTextConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=0,
        hidden_size=WIDTH,
        projection_dim=WIDTH,
        intermediate_size=37,
        layer_norm_eps=1e-5,
        num_attention_heads=4,
        num_hidden_layers=5,
        vocab_size=1000,
    )
    return CLIPTextModelWithProjection(cfg).eval()


def image_encoder():
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(0)
    cfg = CLIPVisionConfig(
        hidden_size=WIDTH,
        projection_dim=WIDTH,
        num_hidden_layers=5,
        num_attention_heads=4,
        image_size=VISION_SIDE,
        intermediate_size=37,
        patch_size=1,
    )
    return CLIPVisionModelWithProjection(cfg).eval()


def prior():
    from diffusers import PriorTransformer

    torch.manual_seed(0)
    net = PriorTransformer(num_attention_heads=2, attention_head_dim=12, embedding_dim=WIDTH, num_layers=1)
    with torch.no_grad():  # non-trivial statistics, so the post-processing is exercised
        net.clip_mean.copy_(torch.randn(1, WIDTH) * 0.5)
        net.clip_std.copy_(torch.rand(1, WIDTH) + 0.5)
    return net.eval()


def text_proj():
    from unclip.adapters.karlo import _imports

    torch.manual_seed(0)
    net = _imports()["UnCLIPTextProjModel"](
        clip_embeddings_dim=WIDTH, time_embed_dim=WIDTH * 4, cross_attention_dim=CROSS
    )
    with torch.no_grad():  # diffusers initialises it to zeros; make the unconditional branch differ
        net.learned_classifier_free_guidance_embeddings.normal_()
    return net.eval()


def decoder():
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    return UNet2DConditionModel(
        sample_size=DECODER_SIDE,
        in_channels=3,
        out_channels=6,
        down_block_types=("ResnetDownsampleBlock2D", "SimpleCrossAttnDownBlock2D"),
        up_block_types=("SimpleCrossAttnUpBlock2D", "ResnetUpsampleBlock2D"),
        mid_block_type="UNetMidBlock2DSimpleCrossAttn",
        block_out_channels=(32, 64),
        layers_per_block=1,
        cross_attention_dim=CROSS,
        attention_head_dim=4,
        resnet_time_scale_shift="scale_shift",
        class_embed_type="identity",
    ).eval()


def super_res(seed: int):
    from diffusers import UNet2DModel

    torch.manual_seed(seed)
    return UNet2DModel(
        sample_size=SR_SIDE,
        layers_per_block=1,
        down_block_types=("ResnetDownsampleBlock2D", "ResnetDownsampleBlock2D"),
        up_block_types=("ResnetUpsampleBlock2D", "ResnetUpsampleBlock2D"),
        block_out_channels=(32, 64),
        in_channels=6,
        out_channels=3,
    ).eval()


def schedulers():
    from diffusers import UnCLIPScheduler

    return {
        "prior_scheduler": UnCLIPScheduler(
            variance_type="fixed_small_log", prediction_type="sample", num_train_timesteps=1000, clip_sample_range=5.0
        ),
        "decoder_scheduler": UnCLIPScheduler(
            variance_type="learned_range", prediction_type="epsilon", num_train_timesteps=1000
        ),
        "super_res_scheduler": UnCLIPScheduler(
            variance_type="fixed_small_log", prediction_type="epsilon", num_train_timesteps=1000
        ),
    }


def build_text_to_image(tmp: Path):
    """The reference diffusers UnCLIPPipeline over tiny components (not saved)."""
    from diffusers import UnCLIPPipeline

    tok = write_tokenizer(tmp / "tok_src")
    sch = schedulers()
    return UnCLIPPipeline(
        prior=prior(),
        decoder=decoder(),
        text_encoder=text_encoder(tok),
        tokenizer=tok,
        text_proj=text_proj(),
        super_res_first=super_res(0),
        super_res_last=super_res(1),
        **sch,
    )


def build_image_variation(t2i):
    """An UnCLIPImageVariationPipeline sharing the text-to-image pipeline's decoder, CLIP text and upsamplers."""
    from diffusers import UnCLIPImageVariationPipeline
    from transformers import CLIPImageProcessor

    proc = CLIPImageProcessor(crop_size=VISION_SIDE, size=VISION_SIDE)
    sch = schedulers()
    return UnCLIPImageVariationPipeline(
        decoder=t2i.decoder,
        text_encoder=t2i.text_encoder,
        tokenizer=t2i.tokenizer,
        text_proj=t2i.text_proj,
        feature_extractor=proc,
        image_encoder=image_encoder(),
        super_res_first=t2i.super_res_first,
        super_res_last=t2i.super_res_last,
        decoder_scheduler=sch["decoder_scheduler"],
        super_res_scheduler=sch["super_res_scheduler"],
    )
