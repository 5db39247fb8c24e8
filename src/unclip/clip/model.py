"""A small CLIP: a ViT image tower and a causal text transformer in one embedding space.

unCLIP (Ramesh et al. 2022, section 2) conditions everything on a frozen CLIP: the prior
maps the text embedding z_t to an image embedding z_i, the decoder inverts z_i. This
module is our own CLIP (Radford et al. 2021, section 2.4), small enough to train on a
laptop on the ``shapes`` data:

- image tower: conv patch embedding, class token, learned position embedding, a
  non-causal :class:`~unclip.nn.transformer.Transformer`, a linear projection of the class
  token's output;
- text tower: token + position embeddings, a causal transformer with a key padding mask,
  pooled at the EOS token (the last real token), a linear projection;
- a learned temperature ``logit_scale`` (initialised at log(1/0.07), capped at log 100).

Both embeddings are L2-normalised, so their dot product is a cosine similarity.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError, InputError
from ..nn.transformer import Transformer, TransformerConfig

LOGIT_SCALE_INIT = math.log(1 / 0.07)
LOGIT_SCALE_MAX = math.log(100.0)


@dataclass
class CLIPConfig:
    """Sizes of both towers. Defaults suit 32 px ``shapes`` images and captions."""

    image_size: int = 32
    patch_size: int = 4
    vision_width: int = 128
    vision_depth: int = 4
    vision_heads: int = 4
    text_width: int = 128
    text_depth: int = 4
    text_heads: int = 4
    context_length: int = 24
    vocab_size: int = 512
    embed_dim: int = 128
    mlp_ratio: float = 4.0

    def __post_init__(self) -> None:
        if self.image_size % self.patch_size:
            raise ConfigError(
                f"CLIPConfig: image_size={self.image_size} is not a multiple of patch_size={self.patch_size}"
            )
        if self.vision_width % self.vision_heads:
            raise ConfigError(
                f"CLIPConfig: vision_width={self.vision_width} is not divisible by vision_heads={self.vision_heads}"
            )
        if self.text_width % self.text_heads:
            raise ConfigError(
                f"CLIPConfig: text_width={self.text_width} is not divisible by text_heads={self.text_heads}"
            )
        if self.context_length < 2:
            raise ConfigError(f"CLIPConfig: context_length must be >= 2 (bos + eos), got {self.context_length}")
        if self.vocab_size < 5:
            raise ConfigError(
                f"CLIPConfig: vocab_size={self.vocab_size} is too small; set it to the tokenizer's vocab_size"
            )

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2


class CLIP(nn.Module):
    """Contrastive image/text encoders (see the module docstring).

    Token id 0 is padding; every caption's last real token is its EOS (the
    :class:`~unclip.clip.tokenizer.Tokenizer` guarantees both).
    """

    def __init__(self, config: CLIPConfig) -> None:
        super().__init__()
        self.config = c = config
        # Image tower.
        self.patch_embed = nn.Conv2d(3, c.vision_width, kernel_size=c.patch_size, stride=c.patch_size, bias=False)
        scale = c.vision_width**-0.5
        self.class_token = nn.Parameter(scale * torch.randn(c.vision_width))
        self.vision_pos_embed = nn.Parameter(scale * torch.randn(c.num_patches + 1, c.vision_width))
        self.vision_ln_pre = nn.LayerNorm(c.vision_width)
        self.visual = Transformer(TransformerConfig(c.vision_width, c.vision_depth, c.vision_heads, c.mlp_ratio))
        self.image_proj = nn.Linear(c.vision_width, c.embed_dim, bias=False)
        # Text tower.
        self.token_embed = nn.Embedding(c.vocab_size, c.text_width)
        self.text_pos_embed = nn.Parameter(torch.empty(c.context_length, c.text_width))
        self.text = Transformer(TransformerConfig(c.text_width, c.text_depth, c.text_heads, c.mlp_ratio))
        self.text_proj = nn.Linear(c.text_width, c.embed_dim, bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(LOGIT_SCALE_INIT))
        # open_clip's initialisation: small embeddings, projections at width^-0.5.
        nn.init.normal_(self.token_embed.weight, std=0.02)
        nn.init.normal_(self.text_pos_embed, std=0.01)
        nn.init.normal_(self.image_proj.weight, std=c.vision_width**-0.5)
        nn.init.normal_(self.text_proj.weight, std=c.text_width**-0.5)

    # ------------------------------------------------------------------ image
    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, H, W) in [-1, 1] -> unit-norm embeddings (B, embed_dim).

        Inputs of another size are resized (antialiased bilinear) to ``image_size``.
        """
        if images.dim() != 4 or images.shape[1] != 3:
            raise InputError(f"CLIP.encode_image expects images of shape (B, 3, H, W), got {tuple(images.shape)}")
        s = self.config.image_size
        images = images.to(self.patch_embed.weight.dtype)
        if images.shape[-2:] != (s, s):
            images = F.interpolate(images, size=(s, s), mode="bilinear", antialias=True, align_corners=False)
        x = self.patch_embed(images).flatten(2).transpose(1, 2)  # (B, N, W)
        cls = self.class_token.expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1) + self.vision_pos_embed
        x = self.visual(self.vision_ln_pre(x))
        return F.normalize(self.image_proj(x[:, 0]), dim=-1)

    # ------------------------------------------------------------------ text
    def encode_text_full(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Tokens (B, L) -> (embed (B, E) unit-norm, encodings (B, L, text_width), mask (B, L)).

        ``encodings`` are the final (LayerNormed) hidden states of every position, for
        models that attend to the caption token by token (the unCLIP decoder, section 2.1);
        ``mask`` is True at real tokens. ``L`` may be shorter than ``context_length``.
        """
        if tokens.dim() != 2:
            raise InputError(f"CLIP text tokens must be (B, L), got shape {tuple(tokens.shape)}")
        b, length = tokens.shape
        if length > self.config.context_length:
            raise InputError(
                f"caption tokens have length {length}, more than this CLIP's "
                f"context_length={self.config.context_length}"
            )
        if b and (int(tokens.min()) < 0 or int(tokens.max()) >= self.config.vocab_size):
            raise InputError(
                f"token ids must lie in [0, {self.config.vocab_size}); was the text tokenized with this CLIP's "
                "tokenizer?"
            )
        mask = tokens != 0
        # Position 0 is always a key, so an all-padding row cannot produce an empty softmax.
        attn_mask = mask.clone()
        attn_mask[:, 0] = True
        x = self.token_embed(tokens) + self.text_pos_embed[:length]
        x = self.text(x, causal=True, key_padding_mask=attn_mask)
        # Pool at EOS = the last real token; causality makes it see the whole caption
        # and nothing after it, so padding length cannot change the embedding.
        last = (mask.sum(dim=1) - 1).clamp(min=0)
        pooled = x[torch.arange(b, device=x.device), last]
        return F.normalize(self.text_proj(pooled), dim=-1), x, mask

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        """Tokens (B, L) -> unit-norm text embeddings (B, embed_dim)."""
        return self.encode_text_full(tokens)[0]

    # ------------------------------------------------------------------ both
    def scale(self) -> torch.Tensor:
        """The temperature multiplier exp(logit_scale), capped at 100 (CLIP section 2.5)."""
        return self.logit_scale.clamp(max=LOGIT_SCALE_MAX).exp()

    def forward(self, images: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Returns ``(image_embed (B, E), text_embed (B, E), logit_scale)``.

        ``logit_scale`` is already exponentiated (the multiplier of the cosine
        similarities, at most 100), ready for :func:`unclip.clip.loss.contrastive_loss`.
        """
        return self.encode_image(images), self.encode_text(tokens), self.scale()
