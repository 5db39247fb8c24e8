"""The decoder as a sampler's ``model_fn(x, t)``: conditioning and classifier-free guidance.

Generation and every manipulation sample the decoder through this one function. The
decoder sees z_i (or its learned null embedding) and the caption (or, dropped, a masked
text context), as it was trained (unCLIP section 2.1: z_i dropped 10% and the caption 50%
of the time). Guidance contrasts the condition with the fully unconditional decoder (null
z_i, caption dropped) in one batched forward; a scale of 1 is a single plain forward.
"""

from __future__ import annotations

import torch
from torch import nn

from ..diffusion import bind, classifier_free_guidance
from ..diffusion.guidance import ModelFn
from ..errors import InputError


def guided_channels(decoder: nn.Module) -> int | None:
    """The leading output channels guidance mixes: the eps channels when the decoder also
    outputs variance values (learned variance), else None (all of them)."""
    config = decoder.config
    return config.image_channels if config.learned_variance else None


def decoder_model_fn(
    decoder: nn.Module,
    text_tokens: torch.Tensor,
    image_embed: torch.Tensor,
    *,
    guidance: float,
    use_image: bool = True,
    use_caption: bool = True,
) -> ModelFn:
    """The decoder conditioned on z_i and a caption, with classifier-free guidance ``guidance``.

    Args:
        decoder: a :class:`~unclip.decoder.model.Decoder` (or a network with its call).
        text_tokens: (B, L) token ids of the captions (ignored where ``use_caption`` is False).
        image_embed: (B, E) z_i (ignored where ``use_image`` is False: the null embedding).
        guidance: classifier-free guidance scale; 1.0 is the plain conditional decoder.
        use_image, use_caption: keep z_i / the caption in the conditional branch.
    """
    b = image_embed.shape[0]
    if text_tokens.shape[0] != b:
        raise InputError(f"{text_tokens.shape[0]} captions for {b} image embeddings")
    device = next(decoder.parameters()).device
    ones = torch.ones(b, dtype=torch.bool, device=device)
    cond = {
        "image_embed": image_embed.to(device).float(),
        "text_tokens": text_tokens.to(device),
        "image_keep": ones if use_image else ~ones,
        "text_keep": ones if use_caption else ~ones,
    }
    if float(guidance) == 1.0:
        return bind(decoder, **cond)
    uncond = {**cond, "image_keep": ~ones, "text_keep": ~ones}
    return classifier_free_guidance(decoder, guidance, cond, uncond, guided_channels=guided_channels(decoder))
