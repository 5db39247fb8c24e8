"""Tiny CLIP fixtures shared by the CLIP tests."""

import pytest
import torch

from unclip.clip import CLIP, CLIPConfig, Tokenizer

CAPTIONS = ["a red circle", "a blue square", "a green star left of a red circle", "a yellow triangle"]


def tiny_config(vocab_size: int, **overrides) -> CLIPConfig:
    base = dict(image_size=16, patch_size=4, vision_width=32, vision_depth=2, vision_heads=2, text_width=32, text_depth=2, text_heads=2, context_length=12, vocab_size=vocab_size, embed_dim=16)
    base.update(overrides)
    return CLIPConfig(**base)


@pytest.fixture
def tokenizer() -> Tokenizer:
    return Tokenizer.train(CAPTIONS)


@pytest.fixture
def tiny_clip(tokenizer) -> CLIP:
    torch.manual_seed(0)
    return CLIP(tiny_config(tokenizer.vocab_size)).eval()


@pytest.fixture
def single_thread():
    """Run a test on one intra-op thread: tiny tensors gain nothing from more, and on a
    busy machine OpenMP threads spinning against other processes cost 5-10x."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
