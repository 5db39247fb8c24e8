"""Karlo's CLIP (transformers ``CLIPTextModelWithProjection`` / ``CLIPVisionModelWithProjection``)
behind the FrozenCLIP interface.

Karlo conditions its prior and decoder on OpenAI's CLIP ViT-L/14 *as the projections give
them*: the text embedding ``text_embeds``, the per-token ``last_hidden_state`` and the
image embedding ``image_embeds`` are used unnormalised (the prior's ``clip_mean`` /
``clip_std`` are statistics of unnormalised image embeddings). This adapter therefore
returns them raw, unlike our FrozenCLIP, whose embeddings are unit vectors; the geometry of
the manipulations (slerp with linearly interpolated norms, a text diff scaled to |z_i|)
works for both.

The text model is called without an attention mask, as diffusers' UnCLIPPipeline calls it
(CLIP's text transformer is causal, so padding cannot reach the real tokens); the mask
returned marks the tokenizer's real tokens (start token up to and including the first end
token), which is the tokenizer's own ``attention_mask``.

Images in [-1, 1] are resized (shorter side, bicubic with antialiasing), centre-cropped and
normalised with the feature extractor's statistics in torch. diffusers' CLIPImageProcessor
does the same steps with PIL on 8-bit images, so embeddings of the same picture differ
slightly between the two (tests/adapters/test_clip.py measures it).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..clip.frozen import TextEncoding
from ..clip.pretrained import CLIP_MEAN, CLIP_STD, PretrainedCLIP
from ..errors import InputError

NO_IMAGE_ENCODER = (
    "this diffusers unCLIP directory has no CLIP image encoder (kakaobrain/karlo-v1-alpha ships only the text "
    "encoder); pass the image-variations directory too: --image-encoder-from DIR "
    "(UnCLIP.load(..., image_encoder_from=DIR)), e.g. a download of kakaobrain/karlo-v1-alpha-image-variations"
)


class KarloCLIP(PretrainedCLIP):
    """transformers CLIP text (and optionally vision) towers with projection; raw embeddings.

    Args:
        tokenizer: a transformers CLIPTokenizer (Karlo pads with "!", id 0).
        text_model: ``CLIPTextModelWithProjection``.
        vision_model: ``CLIPVisionModelWithProjection`` or None (then :meth:`encode_image`
            raises an error that says where to get one).
        mean, std, image_size: the feature extractor's normalisation and crop side.
    """

    def __init__(
        self,
        tokenizer,
        text_model: nn.Module,
        vision_model: nn.Module | None = None,
        *,
        mean: Sequence[float] = CLIP_MEAN,
        std: Sequence[float] = CLIP_STD,
        image_size: int | None = None,
        batch_size: int = 64,
    ) -> None:
        towers = nn.ModuleDict(
            {"text": text_model} if vision_model is None else {"text": text_model, "vision": vision_model}
        )
        super().__init__(towers, mean, std, batch_size)
        self.tokenizer = tokenizer
        cfg = text_model.config
        self.embed_dim = int(cfg.projection_dim)
        self.text_width = int(cfg.hidden_size)
        self.context_length = int(getattr(tokenizer, "model_max_length", cfg.max_position_embeddings))
        if self.context_length > cfg.max_position_embeddings:
            self.context_length = int(cfg.max_position_embeddings)
        self.eos_id = int(tokenizer.eos_token_id)
        vision_size = int(vision_model.config.image_size) if vision_model is not None else 224
        self.image_size = int(image_size or vision_size)
        if vision_model is not None and int(vision_model.config.projection_dim) != self.embed_dim:
            raise InputError(
                f"the CLIP image encoder projects to {vision_model.config.projection_dim} dims but the text encoder "
                f"to {self.embed_dim}; both must come from the same CLIP"
            )

    @property
    def has_image_encoder(self) -> bool:
        return "vision" in self.model

    def tokenize(self, texts: str | Sequence[str]) -> torch.Tensor:
        """Texts -> (B, context_length) int64 ids, padded and truncated as diffusers does."""
        if isinstance(texts, str):
            texts = [texts]
        out = self.tokenizer(
            list(texts), padding="max_length", max_length=self.context_length, truncation=True, return_tensors="pt"
        )
        return out["input_ids"].long()

    def text_mask(self, ids: torch.Tensor) -> torch.Tensor:
        """(B, L) bool, True from the start token up to and including the first end token."""
        is_eos = (ids == self.eos_id).long()
        return (is_eos.cumsum(1) - is_eos) == 0

    def _text(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        out = self.model["text"](input_ids=ids)
        return out.text_embeds, out.last_hidden_state, self.text_mask(ids)

    @torch.no_grad()
    def encode_text_full(self, texts: str | Sequence[str] | torch.Tensor) -> TextEncoding:
        """Captions -> TextEncoding(embed (B, E) raw ``text_embeds``, tokens (B, L, W), mask (B, L)), float32."""
        ids = self._ids(texts)
        if not len(ids):
            dev = self.device
            return TextEncoding(
                torch.zeros(0, self.embed_dim, device=dev),
                torch.zeros(0, ids.shape[1], self.text_width, device=dev),
                torch.zeros(0, ids.shape[1], dtype=torch.bool, device=dev),
            )
        parts = [self._text(chunk) for chunk in ids.split(self.batch_size)]
        e, h, m = zip(*parts)
        return TextEncoding(torch.cat(e).float(), torch.cat(h).float(), torch.cat(m))

    def _image(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model["vision"](pixel_values=pixels).image_embeds

    @torch.no_grad()
    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, H, W) in [-1, 1] (any size) -> (B, E) raw float32 ``image_embeds``."""
        if not self.has_image_encoder:
            raise InputError(NO_IMAGE_ENCODER)
        pixels = self.preprocess(images)
        parts = [self._image(chunk).float() for chunk in pixels.split(self.batch_size)] if len(pixels) else []
        return torch.cat(parts) if parts else torch.zeros(0, self.embed_dim, device=self.device)

    def __repr__(self) -> str:
        return (
            f"KarloCLIP(embed_dim={self.embed_dim}, context_length={self.context_length}, "
            f"image_encoder={self.has_image_encoder}, device={self.device})"
        )
