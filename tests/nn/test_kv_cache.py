"""Chunked decoding with a key/value cache equals full recomputation (issue 16, item 2).

A causal transformer fed a prefix and then chunks of 1, 2, 3 or 7 tokens through a
``KVCache`` must give, at every position, the output of one forward pass over the whole
sequence. Before the fix, layers after the first read the cache length after layer 0 had
already grown it, so a chunk of more than one token was masked as if it sat further right.
"""

from __future__ import annotations

import pytest
import torch

from unclip.nn.attention import KVCache, MultiHeadAttention
from unclip.nn.transformer import Transformer, TransformerConfig

TOL = 1e-5  # float32: the only difference is summation order inside attention


def _model(depth: int = 3) -> Transformer:
    torch.manual_seed(0)
    return Transformer(TransformerConfig(width=32, depth=depth, heads=4)).eval()


def _chunked(
    model: Transformer, x: torch.Tensor, prefix: int, chunk: int, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Run ``x`` as a prefix then chunks of ``chunk`` tokens through one cache; concatenate outputs."""
    cache = KVCache()
    outs, start = [], 0
    for end in [prefix, *range(prefix + chunk, x.shape[1], chunk), x.shape[1]]:
        if end <= start:
            continue
        kpm = None if mask is None else mask[:, :end]
        outs.append(model(x[:, start:end], causal=True, key_padding_mask=kpm, cache=cache))
        start = end
    return torch.cat(outs, dim=1)


@pytest.mark.parametrize("chunk", [1, 2, 3, 7])
def test_chunked_decoding_matches_full_recomputation(chunk: int) -> None:
    model = _model()
    x = torch.randn(2, 20, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        full = model(x, causal=True)
        chunked = _chunked(model, x, prefix=5, chunk=chunk)
    assert chunked.shape == full.shape
    assert (chunked - full).abs().max().item() < TOL


@pytest.mark.parametrize("chunk", [1, 2, 3, 7])
def test_chunked_decoding_with_padding_mask_matches_full(chunk: int) -> None:
    """As the AR prior samples: a padded prefix, then chunks, the padding mask covering all keys."""
    model = _model()
    x = torch.randn(3, 18, 32, generator=torch.Generator().manual_seed(2))
    mask = torch.ones(3, 18, dtype=torch.bool)
    mask[0, 2:6] = False  # padding inside the prefix of the first row
    mask[2, 4:6] = False
    with torch.no_grad():
        full = model(x, causal=True, key_padding_mask=mask)
        chunked = _chunked(model, x, prefix=6, chunk=chunk, mask=mask)
    # Compare only real query positions; padded queries are never read by callers.
    diff = (chunked - full).abs()[mask]
    assert diff.max().item() < TOL


def test_cache_length_is_per_layer() -> None:
    cache = KVCache()
    assert cache.length(0) == 0 and cache.length(1) == 0
    k = torch.zeros(1, 2, 4, 8)
    cache.append(0, k, k)
    assert cache.length(0) == 4
    assert cache.length(1) == 0  # layer 1 has not seen the chunk yet
    cache.append(1, k[:, :, :3], k[:, :, :3])
    assert cache.length(1) == 3


def test_single_attention_layer_cache_masks_within_chunk() -> None:
    """Within a multi-token chunk, token i of the chunk must not see token i+1 (the causal mask)."""
    torch.manual_seed(3)
    attn = MultiHeadAttention(16, heads=2).eval()
    x = torch.randn(1, 6, 16)
    with torch.no_grad():
        full = attn(x, causal=True)
        cache = KVCache()
        first = attn(x[:, :3], causal=True, cache=cache)
        second = attn(x[:, 3:], causal=True, cache=cache)
    assert torch.allclose(torch.cat([first, second], dim=1), full, atol=TOL)


def test_check_can_fail_without_the_per_layer_length() -> None:
    """The comparison is sensitive: reading layer 0's length in later layers breaks chunks > 1."""
    model = _model()
    x = torch.randn(1, 12, 32, generator=torch.Generator().manual_seed(4))

    class StaleLengthCache(KVCache):
        def length(self, layer: int = 0) -> int:  # the old behaviour
            return super().length(0)

    with torch.no_grad():
        full = model(x, causal=True)
        cache = StaleLengthCache()
        model(x[:, :5], causal=True, cache=cache)
        out = model(x[:, 5:8], causal=True, cache=cache)
    assert (out - full[:, 5:8]).abs().max().item() > 1e-3
