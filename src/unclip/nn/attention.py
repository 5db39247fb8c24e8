"""Multi-head attention on ``scaled_dot_product_attention``.

One module serves self-attention (optionally causal, with a key padding mask) and
attention over an external context, and it can carry a key/value cache so that
autoregressive sampling costs grow linearly with sequence length.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class KVCache:
    """Per-layer cache of keys and values, grown one step at a time during sampling."""

    def __init__(self) -> None:
        self.keys: dict[int, torch.Tensor] = {}
        self.values: dict[int, torch.Tensor] = {}

    def append(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Append ``k, v`` (B, H, L, Dh) for ``layer`` and return the whole cached sequence."""
        if layer in self.keys:
            k = torch.cat([self.keys[layer], k], dim=2)
            v = torch.cat([self.values[layer], v], dim=2)
        self.keys[layer], self.values[layer] = k, v
        return k, v

    def fork(self) -> "KVCache":
        """A cache that starts from this one's contents; appending to it leaves this one unchanged
        (the tensors are shared, never written in place). Reuses a fixed prefix many times."""
        other = KVCache()
        other.keys, other.values = dict(self.keys), dict(self.values)
        return other

    def length(self, layer: int = 0) -> int:
        """Number of positions cached for ``layer`` (0 if none yet).

        The length is per layer: while a chunk passes through the stack, layer 0 has already
        grown by the chunk when layer 1 asks, so reading another layer's length would place
        the chunk's causal mask too far right (issue 16).
        """
        return self.keys[layer].shape[2] if layer in self.keys else 0


class MultiHeadAttention(nn.Module):
    """Multi-head attention: queries from ``x``, keys/values from ``x`` or ``context``.

    Args:
        dim: model width (must divide by ``heads``).
        heads: number of heads.
        context_dim: width of the context sequence for cross-attention (None: self-attention only).
    """

    def __init__(self, dim: int, heads: int, context_dim: int | None = None) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"attention width {dim} is not divisible by heads={heads}")
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.context_kv = nn.Linear(context_dim, 2 * dim) if context_dim is not None else None
        self.out = nn.Linear(dim, dim)

    def _split(self, t: torch.Tensor) -> torch.Tensor:
        b, n, d = t.shape
        return t.view(b, n, self.heads, d // self.heads).transpose(1, 2)

    def forward(
        self,
        x: torch.Tensor,
        *,
        causal: bool = False,
        key_padding_mask: torch.Tensor | None = None,
        context: torch.Tensor | None = None,
        context_mask: torch.Tensor | None = None,
        cache: KVCache | None = None,
        layer_index: int = 0,
    ) -> torch.Tensor:
        """Attend.

        Args:
            x: (B, N, D) queries (and keys/values for self-attention).
            causal: mask future positions (position i sees j <= i).
            key_padding_mask: (B, N) bool, True where a position of ``x`` is a real token.
            context: (B, M, Dc) extra keys/values, concatenated to the self keys (GLIDE-style).
            context_mask: (B, M) bool, True where a context position is real.
            cache: key/value cache; when given, ``x`` holds only the new positions.
        Returns:
            (B, N, D).
        """
        b, n, _ = x.shape
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        q, k, v = self._split(q), self._split(k), self._split(v)
        if cache is not None:
            past = cache.length(layer_index)
            k, v = cache.append(layer_index, k, v)
        else:
            past = 0
        mask = None
        if causal:
            total = k.shape[2]
            rows = torch.arange(past, past + n, device=x.device)[:, None]
            cols = torch.arange(total, device=x.device)[None, :]
            mask = (cols <= rows)[None, None]  # (1, 1, N, total)
        if key_padding_mask is not None:
            kpm = key_padding_mask[:, None, None, :]
            mask = kpm if mask is None else mask & kpm
        if context is not None:
            if self.context_kv is None:
                raise ValueError("this attention layer was built without context_dim")
            ck, cv = self.context_kv(context).chunk(2, dim=-1)
            k = torch.cat([self._split(ck), k], dim=2)
            v = torch.cat([self._split(cv), v], dim=2)
            if mask is not None or context_mask is not None:
                m = context.shape[1]
                cm = context_mask if context_mask is not None else torch.ones(b, m, dtype=torch.bool, device=x.device)
                cm = cm[:, None, None, :].expand(b, 1, n, m)
                own = (
                    mask.expand(b, 1, n, k.shape[2] - m)
                    if mask is not None
                    else torch.ones(b, 1, n, k.shape[2] - m, dtype=torch.bool, device=x.device)
                )
                mask = torch.cat([cm, own], dim=-1)
        y = _attend(q, k, v, mask)
        return self.out(y.transpose(1, 2).reshape(b, n, -1))


def _attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """``scaled_dot_product_attention``, in fp32 when training on CPU under bf16 autocast.

    The CPU flash-attention backward is slow in bf16 (measured with 2 threads on the prior's
    shapes, 64 x 8 heads x 81 tokens x 32 channels: 113 ms against 22 ms in fp32), and the
    attention core is a small share of the FLOPs, so there it runs in fp32 (which also keeps
    its softmax in fp32). Inference keeps autocast's bf16 kernel, which is as fast or faster.
    """
    if q.dtype == torch.bfloat16 and q.device.type == "cpu" and torch.is_grad_enabled():
        with torch.autocast("cpu", enabled=False):
            return F.scaled_dot_product_attention(q.float(), k.float(), v.float(), attn_mask=mask)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
