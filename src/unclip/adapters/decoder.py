"""Karlo's decoder (diffusers ``UnCLIPTextProjModel`` + ``UNet2DConditionModel``) behind our decoder call.

Our :class:`unclip.decoder.model.Decoder` is called as ``decoder(x_t, t, image_embed,
text_tokens, image_keep, text_keep)`` and returns eps and the learned-variance values
(B, 6, H, W). Karlo's decoder is the same network as the paper's (section 2.1: z_i
projected into the timestep embedding and into four extra context tokens), except that its
caption pathway is CLIP's own text encoder (projected ``text_embeds`` added to the timestep
embedding, projected and normalised ``last_hidden_state`` as context) rather than a text
transformer trained with the decoder. :class:`KarloDecoder` therefore encodes the token ids
with the CLIP text model it is given (the encoding is cached: a sampler calls the decoder
with the same captions at every step), then calls the text projection and the UNet as
diffusers' UnCLIPPipeline does.

Unconditional branches, as in diffusers: ``image_keep == False`` replaces z_i by the text
projection's learned guidance embedding; ``text_keep == False`` encodes "" instead of the
caption. The output channels are [eps (3), variance values (3)] (``learned_range``): our
learned-variance layout, so classifier-free guidance on the first 3 channels is what
diffusers does.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..clip.frozen import TextEncoding
from ..errors import InputError
from .clip import KarloCLIP


@dataclass(frozen=True)
class KarloDecoderInfo:
    """What our pipeline and manipulations read from ``decoder.config``."""

    image_size: int
    clip_embed_dim: int
    learned_variance: bool = True
    use_image_embed: bool = True
    use_text: bool = True
    image_channels: int = 3  # the output's leading eps channels (guidance mixes these)


class KarloDecoder(nn.Module):
    """``decoder(x_t, t, image_embed, text_tokens, image_keep, text_keep)`` over Karlo's text projection and UNet.

    Args:
        unet: the ``UNet2DConditionModel`` (``class_embed_type="identity"``, 6 output channels).
        text_proj: the ``UnCLIPTextProjModel``.
        clip: the :class:`KarloCLIP` whose text encoder conditions the decoder (held as a
            reference, not a submodule: its weights stay out of this module's state dict).
    """

    def __init__(self, unet: nn.Module, text_proj: nn.Module, clip: KarloCLIP) -> None:
        super().__init__()
        if unet.config.out_channels != 2 * unet.config.in_channels:
            raise InputError(
                f"Karlo's decoder must output 2 x {unet.config.in_channels} channels (eps and learned-range "
                f"variance), got {unet.config.out_channels}"
            )
        self.unet = unet
        self.text_proj = text_proj
        self.clip = clip
        self.config = KarloDecoderInfo(int(unet.config.sample_size), int(text_proj.config.clip_embeddings_dim))
        self._cache: tuple[bytes, TextEncoding] | None = None
        self._null_ids: torch.Tensor | None = None

    @property
    def dtype(self) -> torch.dtype:
        return self.unet.conv_in.weight.dtype

    def encode(self, ids: torch.Tensor) -> TextEncoding:
        """CLIP encoding of token ids (B, L), cached for the last batch of ids seen."""
        key = ids.detach().cpu().numpy().tobytes() + str(tuple(ids.shape)).encode()
        if self._cache is None or self._cache[0] != key:
            self._cache = (key, self.clip.encode_text_full(ids))
        return self._cache[1]

    def null_ids(self, batch: int, length: int) -> torch.Tensor:
        """Token ids of "" repeated ``batch`` times (the unconditional caption)."""
        if self._null_ids is None:
            self._null_ids = self.clip.tokenize([""])
        if self._null_ids.shape[1] != length:
            raise InputError(
                f"text_tokens have length {length} but Karlo's tokenizer pads to {self._null_ids.shape[1]}"
            )
        return self._null_ids.expand(batch, -1)

    def forward(
        self,
        x_t: torch.Tensor,
        t: torch.Tensor,
        image_embed: torch.Tensor | None = None,
        text_tokens: torch.Tensor | None = None,
        image_keep: torch.Tensor | None = None,
        text_keep: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Raw decoder output (B, 6, H, W), float32: eps, then the variance interpolation values.

        Args:
            x_t: (B, 3, H, W) noisy images; t: (B,) timesteps.
            image_embed: (B, E) raw CLIP image embeddings (ignored where ``image_keep`` is False).
            text_tokens: (B, L) ids from ``clip.tokenize``.
            image_keep, text_keep: (B,) bool flags; None means all True.
        """
        b, dev = x_t.shape[0], x_t.device
        if text_tokens is None or text_tokens.shape[0] != b:
            raise InputError(
                f"Karlo's decoder needs text_tokens of batch {b} (ids from clip.tokenize); pass text_keep=False to "
                "drop the caption"
            )
        ids = text_tokens.long().cpu()
        if text_keep is not None:
            drop = ~text_keep.bool().cpu()
            ids = torch.where(drop[:, None], self.null_ids(b, ids.shape[1]), ids)
        text = self.encode(ids).to(dev)
        cfg_embed = self.text_proj.learned_classifier_free_guidance_embeddings
        if image_embed is None:
            if image_keep is not None and not bool(image_keep.any()):
                image_embed = cfg_embed.detach().expand(b, -1)
            else:
                raise InputError(
                    "Karlo's decoder is conditioned on CLIP image embeddings: pass image_embed (B, E), or "
                    "image_keep=False"
                )
        if tuple(image_embed.shape) != (b, self.config.clip_embed_dim):
            raise InputError(
                f"image_embed must have shape ({b}, {self.config.clip_embed_dim}), got {tuple(image_embed.shape)}"
            )
        dt = self.dtype
        z = image_embed.to(device=dev, dtype=dt)
        if image_keep is not None:
            z = torch.where(image_keep.to(device=dev, dtype=torch.bool)[:, None], z, cfg_embed.to(dt))
        context, time_extra = self.text_proj(
            image_embeddings=z,
            prompt_embeds=text.embed.to(dt),
            text_encoder_hidden_states=text.tokens.to(dt),
            do_classifier_free_guidance=False,
        )
        mask = F.pad(text.mask, (self.text_proj.clip_extra_context_tokens, 0), value=True)
        out = self.unet(
            sample=x_t.to(dt), timestep=t, encoder_hidden_states=context, class_labels=time_extra, attention_mask=mask
        ).sample
        return out.float()
