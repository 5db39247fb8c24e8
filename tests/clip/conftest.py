"""Tiny CLIP fixtures shared by the CLIP tests."""

import pytest
import torch
from clip_helpers import CAPTIONS, tiny_config

from unclip.clip import CLIP, Tokenizer


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
