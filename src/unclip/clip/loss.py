"""The symmetric contrastive (InfoNCE) loss that trains CLIP (Radford et al. 2021, Fig. 3).

Within a batch of B (image, caption) pairs, each image must pick its caption among the B
captions and each caption its image, with cross-entropy over cosine similarities times a
learned temperature. Templated datasets repeat captions (many ``shapes`` images share
``a red circle``); calling those duplicates negatives would push apart embeddings that
should coincide, so with ``caption_ids`` every pair with the same caption is a positive
and the target is spread uniformly over them.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..errors import InputError


def caption_ids_from_tokens(tokens: torch.Tensor) -> torch.Tensor:
    """Ids (B,) equal exactly where the token rows (B, L) are equal: duplicate-caption groups."""
    return torch.unique(tokens, dim=0, return_inverse=True)[1]


def contrastive_loss(
    image_embed: torch.Tensor,
    text_embed: torch.Tensor,
    logit_scale: torch.Tensor | float,
    caption_ids: torch.Tensor | None = None,
) -> torch.Tensor:
    """Symmetric InfoNCE over a batch.

    Args:
        image_embed: (B, E) unit-norm image embeddings.
        text_embed: (B, E) unit-norm text embeddings; row i is image i's caption.
        logit_scale: the temperature multiplier (already exponentiated, as returned by
            :meth:`CLIP.forward`), a scalar tensor or float.
        caption_ids: optional (B,) ints; pairs with equal ids count as positives.
    Returns:
        scalar loss: mean of the image->text and text->image cross-entropies. With random
        embeddings and ``logit_scale`` 1 it is about log(B).
    """
    if image_embed.shape != text_embed.shape or image_embed.dim() != 2:
        raise InputError(
            f"contrastive_loss needs two (B, E) embeddings of one shape, got {tuple(image_embed.shape)} and "
            f"{tuple(text_embed.shape)}"
        )
    b = image_embed.shape[0]
    logits = logit_scale * image_embed.float() @ text_embed.float().t()  # (B_image, B_text)
    if caption_ids is None:
        labels = torch.arange(b, device=logits.device)
        return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels))
    if caption_ids.shape != (b,):
        raise InputError(f"caption_ids must have shape ({b},), got {tuple(caption_ids.shape)}")
    caption_ids = caption_ids.to(logits.device)
    same = (caption_ids[:, None] == caption_ids[None, :]).float()  # symmetric, diagonal 1
    targets = same / same.sum(dim=1, keepdim=True)
    # The matrix of matches is symmetric, so the same row targets serve both directions.
    loss_i = -(targets * F.log_softmax(logits, dim=1)).sum(dim=1).mean()
    loss_t = -(targets * F.log_softmax(logits.t(), dim=1)).sum(dim=1).mean()
    return 0.5 * (loss_i + loss_t)


def chance_loss(batch_size: int) -> float:
    """log(B): the loss of embeddings that carry no information, a reference for logs."""
    return math.log(batch_size)
