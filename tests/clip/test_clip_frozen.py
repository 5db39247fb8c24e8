"""FrozenCLIP: frozen weights, strings or tokens, batching, save/load round trip."""

import json

import pytest
import torch
from clip_helpers import CAPTIONS, tiny_config

from unclip.clip import CLIP, FrozenCLIP, TextEncoding, load_clip
from unclip.errors import CheckpointError, InputError


@pytest.fixture
def frozen(tiny_clip, tokenizer) -> FrozenCLIP:
    return FrozenCLIP.from_model(tiny_clip.train(), tokenizer, batch_size=3)


def _images(n, size=16):
    g = torch.Generator().manual_seed(1)
    return torch.rand(n, 3, size, size, generator=g) * 2 - 1


def test_frozen_and_eval(frozen):
    assert not frozen.model.training
    assert not any(p.requires_grad for p in frozen.model.parameters())
    assert (frozen.embed_dim, frozen.text_width, frozen.context_length, frozen.image_size) == (16, 32, 12, 16)
    assert frozen.device == torch.device("cpu")
    assert not frozen.encode_text(CAPTIONS).requires_grad


def test_strings_and_tokens_agree_and_batching_is_invisible(frozen, tiny_clip):
    texts = CAPTIONS * 2  # 8 texts, batch_size 3 -> 3 chunks
    tokens = frozen.tokenize(texts)
    assert tokens.shape == (8, 12)
    a = frozen.encode_text(texts)
    assert torch.allclose(a, frozen.encode_text(tokens))
    assert torch.allclose(a, tiny_clip.encode_text(tokens), atol=1e-6)
    full = frozen.encode_text_full(texts)
    assert isinstance(full, TextEncoding) and len(full) == 8
    assert full.tokens.shape == (8, 12, 32) and full.mask.shape == (8, 12)
    assert torch.allclose(full.embed, a)
    images = _images(7)
    assert torch.allclose(frozen.encode_image(images), tiny_clip.encode_image(images), atol=1e-6)


def test_single_string_and_empty(frozen):
    assert frozen.encode_text("a red circle").shape == (1, 16)
    assert frozen.encode_text([]).shape == (0, 16)
    assert frozen.encode_image(torch.zeros(0, 3, 16, 16)).shape == (0, 16)
    assert frozen.encode_text_full([]).tokens.shape == (0, 12, 32)


def test_rejects_non_tensor_images_and_float_tokens(frozen):
    with pytest.raises(InputError):
        frozen.encode_image([[0.0]])
    with pytest.raises(InputError):
        frozen.encode_text(torch.zeros(1, 12))


def test_save_load_round_trip(frozen, tmp_path):
    frozen.save(tmp_path / "clip")
    payload = json.loads((tmp_path / "clip" / "config.json").read_text())
    assert payload["component"] == "clip" and payload["extra"]["tokenizer"]["words"] == frozen.tokenizer.words
    back = FrozenCLIP.load(tmp_path / "clip", batch_size=frozen.batch_size)
    assert back.tokenizer == frozen.tokenizer
    assert back.config == frozen.config
    texts = CAPTIONS + ["an unknown caption"]
    assert torch.equal(back.encode_text(texts), frozen.encode_text(texts))
    assert torch.equal(back.encode_text_full(texts).tokens, frozen.encode_text_full(texts).tokens)
    images = _images(5)
    assert torch.equal(back.encode_image(images), frozen.encode_image(images))
    model, tok = load_clip(tmp_path / "clip")
    assert isinstance(model, CLIP) and tok == frozen.tokenizer


def test_load_errors(frozen, tmp_path):
    with pytest.raises(CheckpointError):
        FrozenCLIP.load(tmp_path / "missing")
    frozen.save(tmp_path / "clip")
    path = tmp_path / "clip" / "config.json"
    payload = json.loads(path.read_text())
    del payload["extra"]
    path.write_text(json.dumps(payload))
    with pytest.raises(CheckpointError, match="tokenizer"):
        FrozenCLIP.load(tmp_path / "clip")


def test_tokenizer_bigger_than_embedding_is_rejected(tokenizer):
    with pytest.raises(InputError):
        FrozenCLIP(CLIP(tiny_config(tokenizer.vocab_size - 1)), tokenizer)
