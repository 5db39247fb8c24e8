"""CLIP model: shapes, norms, causality, padding invariance, resizing, config checks."""

import math

import pytest
import torch
import torch.nn.functional as F
from clip_helpers import CAPTIONS, tiny_config

from unclip.clip import CLIP, CLIPConfig
from unclip.errors import ConfigError, InputError


def _images(n, size=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, size, size, generator=g) * 2 - 1


def test_output_shapes_dtypes_and_unit_norm(tiny_clip, tokenizer):
    tokens = tokenizer.encode(CAPTIONS, 12)
    img, txt, scale = tiny_clip(_images(4), tokens)
    assert img.shape == (4, 16) and txt.shape == (4, 16)
    assert img.dtype == txt.dtype == torch.float32
    assert torch.allclose(img.norm(dim=-1), torch.ones(4), atol=1e-5)
    assert torch.allclose(txt.norm(dim=-1), torch.ones(4), atol=1e-5)
    assert scale.item() == pytest.approx(1 / 0.07, rel=1e-5)
    emb, hidden, mask = tiny_clip.encode_text_full(tokens)
    assert hidden.shape == (4, 12, 32) and mask.shape == (4, 12) and mask.dtype == torch.bool
    assert mask.sum(1).tolist() == [(t != 0).sum().item() for t in tokens]
    assert torch.allclose(emb, txt)
    # Hidden states are the final LayerNorm's output: zero mean, unit variance per position
    # before the LayerNorm's affine (which starts as identity).
    assert hidden.mean(-1).abs().max() < 1e-4


def test_different_inputs_give_different_embeddings(tiny_clip, tokenizer):
    txt = tiny_clip.encode_text(tokenizer.encode(CAPTIONS, 12))
    assert (txt[0] - txt[1]).abs().max() > 1e-3
    img = tiny_clip.encode_image(_images(2))
    assert (img[0] - img[1]).abs().max() > 1e-3


def test_logit_scale_is_capped_at_100(tiny_clip):
    with torch.no_grad():
        tiny_clip.logit_scale.fill_(10.0)
    assert tiny_clip.scale().item() == pytest.approx(100.0, rel=1e-5)
    with torch.no_grad():
        tiny_clip.logit_scale.fill_(math.log(20.0))
    assert tiny_clip.scale().item() == pytest.approx(20.0, rel=1e-5)


def test_text_is_causal(tiny_clip, tokenizer):
    tokens = tokenizer.encode(["a green star left of a red circle"], 12)
    changed = tokens.clone()
    changed[0, 5] = tokenizer.stoi["blue"]
    _, h1, _ = tiny_clip.encode_text_full(tokens)
    _, h2, _ = tiny_clip.encode_text_full(changed)
    assert torch.allclose(h1[:, :5], h2[:, :5], atol=1e-6)
    assert (h1[:, 5:] - h2[:, 5:]).abs().max() > 1e-3
    # ... and so the pooled embedding does change.
    assert (tiny_clip.encode_text(tokens) - tiny_clip.encode_text(changed)).abs().max() > 1e-4


def test_padding_invariance(tiny_clip, tokenizer):
    short = tokenizer.encode(CAPTIONS, 10)
    long = tokenizer.encode(CAPTIONS, 12)
    e1, h1, m1 = tiny_clip.encode_text_full(short)
    e2, h2, m2 = tiny_clip.encode_text_full(long)
    assert torch.allclose(e1, e2, atol=1e-5)
    assert torch.equal(m1, m2[:, :10])
    assert torch.allclose(h1[m1], h2[:, :10][m1], atol=1e-5)
    # The same caption batched next to a longer one embeds the same as alone.
    alone = tiny_clip.encode_text(tokenizer.encode(["a red circle"], 12))
    assert torch.allclose(alone[0], e2[0], atol=1e-5)


def test_all_padding_row_is_finite(tiny_clip):
    out = tiny_clip.encode_text(torch.zeros(2, 12, dtype=torch.long))
    assert torch.isfinite(out).all()


def test_image_resize_path(tiny_clip):
    big = _images(3, size=40)
    expected = tiny_clip.encode_image(
        F.interpolate(big, size=(16, 16), mode="bilinear", antialias=True, align_corners=False)
    )
    assert torch.allclose(tiny_clip.encode_image(big), expected, atol=1e-6)
    # A flat-colour image embeds the same at any size.
    flat = torch.full((1, 3, 16, 16), 0.3)
    assert torch.allclose(
        tiny_clip.encode_image(flat), tiny_clip.encode_image(torch.full((1, 3, 64, 64), 0.3)), atol=1e-5
    )


def test_gradients_reach_both_towers_and_scale(tiny_clip, tokenizer):
    from unclip.clip import contrastive_loss

    tiny_clip.train()
    img, txt, scale = tiny_clip(_images(4), tokenizer.encode(CAPTIONS, 12))
    contrastive_loss(img, txt, scale).backward()
    for name in [
        "patch_embed.weight",
        "class_token",
        "token_embed.weight",
        "text_proj.weight",
        "image_proj.weight",
        "logit_scale",
    ]:
        assert dict(tiny_clip.named_parameters())[name].grad.abs().sum() > 0, name


def test_input_errors(tiny_clip):
    with pytest.raises(InputError):
        tiny_clip.encode_image(torch.zeros(1, 1, 16, 16))
    with pytest.raises(InputError):
        tiny_clip.encode_text(torch.zeros(1, 13, dtype=torch.long))
    with pytest.raises(InputError):
        tiny_clip.encode_text(torch.full((1, 4), 10_000, dtype=torch.long))


def test_config_validation():
    with pytest.raises(ConfigError):
        CLIPConfig(image_size=30, patch_size=4)
    with pytest.raises(ConfigError):
        CLIPConfig(vision_width=30, vision_heads=4)
    with pytest.raises(ConfigError):
        CLIPConfig(context_length=1)
    assert CLIPConfig().num_patches == 64


def test_default_config_builds():
    model = CLIP(CLIPConfig(vocab_size=64))
    out = model.encode_image(torch.zeros(1, 3, 32, 32))
    assert out.shape == (1, 128)
    assert tiny_config(10).embed_dim == 16
