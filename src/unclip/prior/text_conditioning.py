"""Caption conditioning shared by the diffusion and autoregressive priors.

Both priors project CLIP's per-token text encodings and the text embedding z_t to their
width, and for classifier-free guidance replace them by learned null values where
``text_keep`` is False (paper section 2.2: the text is dropped 10% of the time).
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import InputError


def conditioned_text(
    prior: nn.Module,
    text_embed: torch.Tensor,
    text_tokens: torch.Tensor,
    text_mask: torch.Tensor,
    text_keep: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Projected text tokens (B, L, W), their key mask (B, L) and projected z_t (B, W).

    ``prior`` provides ``text_token_proj``, ``text_embed_proj``, ``null_text_tokens``
    (context_length, W), ``null_text_embed`` (W) and ``config.embed_dim`` /
    ``config.context_length``. z_t (a unit vector) is scaled by sqrt(E) so its coordinates
    have roughly unit variance. A dropped caption keeps only position 0 unmasked, so no
    attention row is ever fully masked.
    """
    b, length, _ = text_tokens.shape
    if length > prior.config.context_length:
        raise InputError(
            f"{type(prior).__name__} got {length} text tokens, its context_length is {prior.config.context_length}"
        )
    keep = text_keep.view(b, 1, 1)
    tokens = prior.text_token_proj(text_tokens)
    tokens = torch.where(keep, tokens, prior.null_text_tokens[:length].to(tokens.dtype).expand(b, -1, -1))
    null_mask = torch.zeros_like(text_mask)
    null_mask[:, 0] = True
    mask = torch.where(text_keep.view(b, 1), text_mask, null_mask)
    z_t = prior.text_embed_proj(text_embed * prior.config.embed_dim**0.5)
    z_t = torch.where(keep[:, 0], z_t, prior.null_text_embed.to(z_t.dtype).expand(b, -1))
    return tokens, mask, z_t
