"""Pretrained-CLIP loading: clear errors, and a tiny random HF CLIPModel round trip."""

import sys

import pytest
import torch

from unclip.clip.pretrained import load_pretrained_clip
from unclip.errors import CheckpointError, ConfigError, UnclipError


def test_missing_path_and_pickles_are_refused(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_pretrained_clip(tmp_path / "nope")
    (tmp_path / "model.pkl").write_bytes(b"\x80")
    with pytest.raises(CheckpointError, match="safetensors"):
        load_pretrained_clip(tmp_path / "model.pkl")
    (tmp_path / "model.bin").write_bytes(b"\x80")  # read only with torch.load(weights_only=True)
    with pytest.raises(CheckpointError, match="weights_only"):
        load_pretrained_clip(tmp_path / "model.bin", model_name="ViT-B-32")
    with pytest.raises(CheckpointError, match="config.json"):
        load_pretrained_clip(tmp_path)
    (tmp_path / "w.safetensors").write_bytes(b"")
    with pytest.raises(ConfigError, match="model_name"):
        load_pretrained_clip(tmp_path / "w.safetensors")


def test_missing_library_names_the_package(tmp_path, monkeypatch):
    (tmp_path / "config.json").write_text("{}")
    monkeypatch.setitem(sys.modules, "transformers", None)  # import now raises ImportError
    with pytest.raises(UnclipError, match="pip install transformers"):
        load_pretrained_clip(tmp_path)
    (tmp_path / "w.safetensors").write_bytes(b"")  # OpenCLIP weights are read into transformers' CLIPModel
    with pytest.raises(UnclipError, match="pip install transformers"):
        load_pretrained_clip(tmp_path / "w.safetensors", model_name="ViT-B-32")


def _tiny_hf_clip(directory):
    transformers = pytest.importorskip("transformers")
    from tokenizers import pre_tokenizers

    chars = pre_tokenizers.ByteLevel.alphabet()
    specials = ["<|startoftext|>", "<|endoftext|>"]
    vocab = {t: i for i, t in enumerate(specials + sorted(chars) + sorted(c + "</w>" for c in chars))}
    tok = transformers.CLIPTokenizer(vocab=vocab, merges=[])
    tok.save_pretrained(directory)
    config = transformers.CLIPConfig(
        text_config=dict(
            vocab_size=len(vocab),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            max_position_embeddings=24,
            bos_token_id=tok.bos_token_id,
            eos_token_id=tok.eos_token_id,
            pad_token_id=tok.pad_token_id,
        ),
        vision_config=dict(
            image_size=16,
            patch_size=8,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
        ),
        projection_dim=8,
    )
    torch.manual_seed(0)
    model = transformers.CLIPModel(config).eval()
    model.save_pretrained(directory, safe_serialization=True)
    return model, tok


def test_tiny_hf_clip_round_trip(tmp_path):
    model, tok = _tiny_hf_clip(tmp_path)
    clip = load_pretrained_clip(tmp_path)
    assert (clip.embed_dim, clip.text_width, clip.context_length, clip.image_size) == (8, 32, 24, 16)
    texts = ["a red circle", "a much longer caption about a blue square"]
    ids = clip.tokenize(texts)
    assert ids.shape == (2, 24)
    g = torch.Generator().manual_seed(0)
    images = torch.rand(2, 3, 16, 16, generator=g) * 2 - 1
    enc = tok(texts, padding="max_length", truncation=True, max_length=24, return_tensors="pt")
    pixels = (((images + 1) / 2) - clip.mean) / clip.std
    with torch.no_grad():
        ref = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], pixel_values=pixels)
    full = clip.encode_text_full(texts)
    assert torch.allclose(full.embed, ref.text_embeds, atol=1e-5)
    assert full.tokens.shape == (2, 24, 32) and full.mask.shape == (2, 24)
    assert torch.equal(full.mask, enc["attention_mask"].bool())
    assert torch.allclose(clip.encode_text(ids), full.embed)
    assert torch.allclose(clip.encode_image(images), ref.image_embeds, atol=1e-5)
    # Other sizes are resized to the model's input size.
    assert clip.encode_image(torch.zeros(1, 3, 40, 32)).shape == (1, 8)
