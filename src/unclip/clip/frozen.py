"""``FrozenCLIP``: the read-only CLIP every other part of unCLIP talks to.

unCLIP keeps CLIP frozen while the prior and decoder train (Ramesh et al. 2022,
section 2), so the rest of the code needs only embeddings, never gradients. This wrapper
holds a trained :class:`~unclip.clip.model.CLIP` in eval mode with ``requires_grad``
off, together with its :class:`~unclip.clip.tokenizer.Tokenizer`, takes either strings
or token tensors, batches large inputs, and saves/loads the ``clip`` component directory
(weights + config, the tokenizer in the config's ``extra``).

It is deliberately not an ``nn.Module``: a network that keeps a FrozenCLIP as an
attribute does not pick up CLIP's weights in its own state dict or optimizer.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from ..errors import CheckpointError, InputError
from ..storage.checkpoint import load_component, load_state_into, save_component
from .model import CLIP, CLIPConfig
from .tokenizer import Tokenizer

COMPONENT = "clip"


@dataclass
class TextEncoding:
    """CLIP's view of a batch of captions.

    Attributes:
        embed: (B, E) unit-norm text embeddings z_t.
        tokens: (B, L, text_width) final hidden states of every token position.
        mask: (B, L) bool, True at real (non-padding) tokens.
    """

    embed: torch.Tensor
    tokens: torch.Tensor
    mask: torch.Tensor

    def to(self, device: str | torch.device | None = None, dtype: torch.dtype | None = None) -> "TextEncoding":
        """Move to ``device``; ``dtype`` applies to the float tensors only."""
        return TextEncoding(
            self.embed.to(device=device, dtype=dtype),
            self.tokens.to(device=device, dtype=dtype),
            self.mask.to(device=device),
        )

    def __len__(self) -> int:
        return self.embed.shape[0]


def save_clip(directory: str | os.PathLike, model: CLIP, tokenizer: Tokenizer) -> Path:
    """Write a ``clip`` component directory (config.json + weights.safetensors)."""
    if tokenizer.vocab_size > model.config.vocab_size:
        raise InputError(
            f"tokenizer has {tokenizer.vocab_size} tokens but the CLIP embeds only {model.config.vocab_size}; build "
            "CLIPConfig(vocab_size=tokenizer.vocab_size)"
        )
    return save_component(
        directory, COMPONENT, model.config, model.state_dict(), extra={"tokenizer": tokenizer.to_dict()}
    )


def load_clip(directory: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[CLIP, Tokenizer]:
    """Read a ``clip`` component directory into a (trainable) CLIP and its tokenizer."""
    config, state, extra = load_component(directory, COMPONENT, CLIPConfig)
    if "tokenizer" not in extra:
        raise CheckpointError(
            f"{COMPONENT}: {directory} has no tokenizer in its config.json 'extra'; re-save it with FrozenCLIP.save "
            "or save_clip"
        )
    tokenizer = Tokenizer.from_dict(extra["tokenizer"])
    model = CLIP(config)
    load_state_into(model, state, COMPONENT)
    return model.to(device), tokenizer


class FrozenCLIP:
    """A trained CLIP and its tokenizer, inference only.

    Args:
        model: the CLIP; it is switched to eval mode and its parameters frozen.
        tokenizer: the tokenizer the CLIP was trained with.
        batch_size: inputs larger than this are encoded in chunks of this size.
    """

    def __init__(self, model: CLIP, tokenizer: Tokenizer, batch_size: int = 256) -> None:
        if tokenizer.vocab_size > model.config.vocab_size:
            raise InputError(
                f"tokenizer has {tokenizer.vocab_size} tokens but the CLIP embeds only {model.config.vocab_size}"
            )
        self.model = model.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.batch_size = batch_size

    @classmethod
    def from_model(cls, model: CLIP, tokenizer: Tokenizer, batch_size: int = 256) -> "FrozenCLIP":
        """Wrap a just-trained CLIP (it is put in eval mode and frozen in place)."""
        return cls(model, tokenizer, batch_size=batch_size)

    # ------------------------------------------------------------------ properties
    @property
    def config(self) -> CLIPConfig:
        return self.model.config

    @property
    def embed_dim(self) -> int:
        return self.model.config.embed_dim

    @property
    def text_width(self) -> int:
        return self.model.config.text_width

    @property
    def context_length(self) -> int:
        return self.model.config.context_length

    @property
    def image_size(self) -> int:
        return self.model.config.image_size

    @property
    def device(self) -> torch.device:
        return self.model.logit_scale.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.logit_scale.dtype

    def to(self, device: str | torch.device | None = None, dtype: torch.dtype | None = None) -> "FrozenCLIP":
        """Move the model (in place) and return self."""
        self.model.to(device=device, dtype=dtype)
        return self

    # ------------------------------------------------------------------ encoding
    def tokenize(self, texts: str | Sequence[str]) -> torch.Tensor:
        """Texts -> (B, context_length) int64 tokens on the CPU."""
        return self.tokenizer.encode(texts, self.context_length)

    def _tokens(self, texts: str | Sequence[str] | torch.Tensor) -> torch.Tensor:
        if isinstance(texts, torch.Tensor):
            if texts.dtype not in (torch.int64, torch.int32):
                raise InputError(f"token tensors must be integer (B, L), got dtype {texts.dtype}")
            tokens = texts.long()
        else:
            tokens = self.tokenize(texts)
        return tokens.to(self.device)

    def _chunks(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        # An empty batch gives no chunks (attention cannot reshape a batch of 0).
        return x.split(self.batch_size) if x.shape[0] else ()

    @torch.no_grad()
    def encode_text(self, texts: str | Sequence[str] | torch.Tensor) -> torch.Tensor:
        """Captions (a list of B strings, or (B, L) tokens) -> (B, E) unit-norm float32 z_t."""
        tokens = self._tokens(texts)
        parts = [self.model.encode_text(chunk).float() for chunk in self._chunks(tokens)]
        return torch.cat(parts) if parts else torch.zeros(0, self.embed_dim, device=self.device)

    @torch.no_grad()
    def encode_text_full(self, texts: str | Sequence[str] | torch.Tensor) -> TextEncoding:
        """Captions -> :class:`TextEncoding` (embed (B, E), tokens (B, L, W), mask (B, L)), float32."""
        tokens = self._tokens(texts)
        embeds, hidden, masks = [], [], []
        for chunk in self._chunks(tokens):
            e, h, m = self.model.encode_text_full(chunk)
            embeds.append(e.float())
            hidden.append(h.float())
            masks.append(m)
        if not embeds:
            L = tokens.shape[1] if tokens.dim() == 2 else self.context_length
            return TextEncoding(
                torch.zeros(0, self.embed_dim, device=self.device),
                torch.zeros(0, L, self.text_width, device=self.device),
                torch.zeros(0, L, dtype=torch.bool, device=self.device),
            )
        return TextEncoding(torch.cat(embeds), torch.cat(hidden), torch.cat(masks))

    @torch.no_grad()
    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, H, W) in [-1, 1] (any size; resized) -> (B, E) unit-norm float32 z_i."""
        if not isinstance(images, torch.Tensor):
            raise InputError(
                f"encode_image takes a (B, 3, H, W) tensor in [-1, 1], got {type(images).__name__}; convert PIL "
                "images first"
            )
        parts = [self.model.encode_image(chunk.to(self.device)).float() for chunk in self._chunks(images)]
        return torch.cat(parts) if parts else torch.zeros(0, self.embed_dim, device=self.device)

    # ------------------------------------------------------------------ disk
    def save(self, directory: str | os.PathLike) -> Path:
        """Write the ``clip`` component directory (weights + config + tokenizer)."""
        return save_clip(directory, self.model, self.tokenizer)

    @classmethod
    def load(
        cls, directory: str | os.PathLike, device: str | torch.device = "cpu", batch_size: int = 256
    ) -> "FrozenCLIP":
        """Read a ``clip`` component directory written by :meth:`save`."""
        model, tokenizer = load_clip(directory, device=device)
        return cls(model, tokenizer, batch_size=batch_size)

    def __repr__(self) -> str:
        c = self.config
        return (
            f"FrozenCLIP(image_size={c.image_size}, embed_dim={c.embed_dim}, vocab_size={self.tokenizer.vocab_size}, "
            f"device={self.device})"
        )
