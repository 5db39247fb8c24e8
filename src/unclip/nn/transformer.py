"""A pre-LayerNorm transformer stack, causal or not, used by CLIP, the priors and the decoder's text encoder."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .attention import KVCache, MultiHeadAttention


@dataclass
class TransformerConfig:
    """Width, depth and heads of a transformer stack."""

    width: int = 256
    depth: int = 4
    heads: int = 4
    mlp_ratio: float = 4.0


class TransformerBlock(nn.Module):
    """LayerNorm -> attention -> residual; LayerNorm -> MLP (GELU) -> residual."""

    def __init__(self, width: int, heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.ln_attn = nn.LayerNorm(width)
        self.attn = MultiHeadAttention(width, heads)
        self.ln_mlp = nn.LayerNorm(width)
        hidden = int(width * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, width))

    def forward(
        self,
        x: torch.Tensor,
        *,
        causal: bool,
        key_padding_mask: torch.Tensor | None,
        cache: KVCache | None,
        layer_index: int,
    ) -> torch.Tensor:
        x = x + self.attn(
            self.ln_attn(x), causal=causal, key_padding_mask=key_padding_mask, cache=cache, layer_index=layer_index
        )
        return x + self.mlp(self.ln_mlp(x))


class Transformer(nn.Module):
    """A stack of :class:`TransformerBlock` with a final LayerNorm.

    Input and output are (B, N, width). ``causal=True`` makes position i attend only to
    positions j <= i; ``key_padding_mask`` (B, N, True = real) hides padding keys.
    """

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.config = config
        self.blocks = nn.ModuleList(
            TransformerBlock(config.width, config.heads, config.mlp_ratio) for _ in range(config.depth)
        )
        self.ln_final = nn.LayerNorm(config.width)

    def forward(
        self,
        x: torch.Tensor,
        *,
        causal: bool = False,
        key_padding_mask: torch.Tensor | None = None,
        cache: KVCache | None = None,
    ) -> torch.Tensor:
        for i, block in enumerate(self.blocks):
            x = block(x, causal=causal, key_padding_mask=key_padding_mask, cache=cache, layer_index=i)
        return self.ln_final(x)
