"""Tokenizer: vocabulary, special tokens, padding/truncation, unknown words, JSON round trip."""

import json

import pytest
import torch

from unclip.clip.tokenizer import Tokenizer, split_words
from unclip.errors import ConfigError, InputError

CAPTIONS = ["a red circle", "a blue square left of a red circle", "A Red star, on a white background!", "red circle"]


@pytest.fixture
def tok() -> Tokenizer:
    return Tokenizer.train(CAPTIONS)


def test_split_lowercases_and_drops_punctuation():
    assert split_words("A Red star, on-a  white_background!") == ["a", "red", "star", "on", "a", "white", "background"]
    assert split_words("left of 2 cats") == ["left", "of", "2", "cats"]


def test_specials_and_frequency_order(tok):
    assert (tok.pad_id, tok.bos_id, tok.eos_id, tok.unk_id) == (0, 1, 2, 3)
    assert tok.itos[:4] == ["<pad>", "<bos>", "<eos>", "<unk>"]
    # "a" (5x) and "red" (4x) are the most frequent words, in that order.
    assert tok.itos[4:6] == ["a", "red"]
    assert tok.vocab_size == 4 + len({w for c in CAPTIONS for w in split_words(c)})
    assert {"left", "of"} <= set(tok.words)


def test_training_is_order_independent():
    assert Tokenizer.train(CAPTIONS).words == Tokenizer.train(list(reversed(CAPTIONS))).words


def test_min_count_and_max_vocab():
    t = Tokenizer.train(CAPTIONS, min_count=2)
    assert set(t.words) == {"a", "red", "circle"}
    t = Tokenizer.train(CAPTIONS, max_vocab=6)
    assert t.vocab_size == 6 and t.words == ["a", "red"]
    with pytest.raises(ConfigError):
        Tokenizer.train(CAPTIONS, max_vocab=4)
    with pytest.raises(InputError):
        Tokenizer.train([])


def test_encode_layout_and_padding(tok):
    out = tok.encode(["a red circle", "red"], context_length=7)
    assert out.dtype == torch.int64 and out.shape == (2, 7)
    a, red, circle = tok.stoi["a"], tok.stoi["red"], tok.stoi["circle"]
    assert out[0].tolist() == [1, a, red, circle, 2, 0, 0]
    assert out[1].tolist() == [1, red, 2, 0, 0, 0, 0]


def test_truncation_keeps_eos(tok):
    out = tok.encode(["a blue square left of a red circle"], context_length=5)
    assert out.shape == (1, 5)
    assert out[0].tolist() == [1, tok.stoi["a"], tok.stoi["blue"], tok.stoi["square"], 2]
    # Exactly fitting captions are not truncated.
    assert tok.encode(["a red circle"], context_length=5)[0, -1].item() == 2


def test_unknown_words_map_to_unk(tok):
    out = tok.encode(["a purple zebra", "", "!!!"], context_length=6)
    assert out[0].tolist() == [1, tok.stoi["a"], 3, 3, 2, 0]
    assert out[1].tolist() == [1, 2, 0, 0, 0, 0]
    assert out[2].tolist() == [1, 2, 0, 0, 0, 0]
    assert tok.decode(out[0]) == "a <unk> <unk>"


def test_encode_rejects_bad_input(tok):
    with pytest.raises(ConfigError):
        tok.encode(["a"], context_length=1)
    with pytest.raises(InputError):
        tok.encode([3], context_length=8)
    with pytest.raises(InputError):
        tok.encode([["a"]], context_length=8)


def test_encode_empty_batch(tok):
    assert tok.encode([], context_length=8).shape == (0, 8)


def test_decode_round_trip(tok):
    texts = ["a red circle", "a blue square left of a red circle", "red star on a white background"]
    ids = tok.encode(texts, context_length=16)
    assert tok.decode(ids) == texts
    assert tok.decode(ids[0]) == texts[0]
    assert tok.decode(ids[0].tolist()) == texts[0]
    # Case and punctuation are normalised away.
    assert tok.decode(tok.encode("A Red, circle!", 8)[0]) == "a red circle"


def test_json_round_trip(tok):
    data = json.loads(json.dumps(tok.to_dict()))
    back = Tokenizer.from_dict(data)
    assert back == tok
    texts = ["a red circle", "unknown words here"]
    assert torch.equal(back.encode(texts, 12), tok.encode(texts, 12))


def test_from_dict_rejects_garbage():
    with pytest.raises(ConfigError):
        Tokenizer.from_dict({"words": ["a"]})
    with pytest.raises(ConfigError):
        Tokenizer.from_dict({"format": "unclip-word-tokenizer", "version": 99, "words": []})
    with pytest.raises(ConfigError):
        Tokenizer.from_dict({"format": "unclip-word-tokenizer", "version": 1, "words": ["a", "a"]})
    with pytest.raises(ConfigError):
        Tokenizer.from_dict({"format": "unclip-word-tokenizer", "version": 1, "words": ["two words"]})
