"""Karlo's diffusion prior (diffusers ``PriorTransformer``) behind our prior call.

Our :class:`unclip.prior.diffusion_prior.DiffusionPrior` is called as
``prior(x_t, t, text_embed, text_tokens, text_mask, text_keep)`` and predicts the clean
embedding; so does Karlo's prior (``prediction_type="sample"``), in its own normalised
space (z - clip_mean) / clip_std (unCLIP section 2.2 trains on the clean z_i directly).
:class:`KarloPrior` maps that call onto ``PriorTransformer.forward`` and replaces the text
conditioning of examples with ``text_keep == False`` by the CLIP encoding of the empty
caption "", which is what diffusers' UnCLIPPipeline feeds its unconditional branch.

:func:`sample_karlo_image_embeds` samples with our DDPM sampler over Karlo's timesteps,
x0 clipped to its clip range (5.0), and maps the result back to raw CLIP image embeddings
with ``clip_std`` and ``clip_mean`` (diffusers' ``post_process_latents``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..clip.frozen import TextEncoding
from ..diffusion import classifier_free_guidance, ddpm_sample, randn_like
from ..errors import InputError
from .schedules import StageSchedule


@dataclass(frozen=True)
class KarloPriorInfo:
    """The sizes our pipeline reads from a prior's ``config``."""

    embed_dim: int
    context_length: int


class KarloPrior(nn.Module):
    """A diffusers ``PriorTransformer`` as ``prior(x_t, t, text_embed, text_tokens, text_mask, text_keep)``.

    Args:
        prior: the PriorTransformer (with ``clip_mean`` / ``clip_std``).
        null_text: the CLIP encoding of "" (batch 1): the unconditional branch's text.
    """

    def __init__(self, prior: nn.Module, null_text: TextEncoding) -> None:
        super().__init__()
        self.prior = prior
        self.register_buffer("null_embed", null_text.embed[0].detach().float().clone(), persistent=False)
        self.register_buffer("null_tokens", null_text.tokens[0].detach().float().clone(), persistent=False)
        self.register_buffer("null_mask", null_text.mask[0].detach().clone(), persistent=False)
        self.config = KarloPriorInfo(int(prior.config.embedding_dim), int(prior.config.num_embeddings))

    @property
    def dtype(self) -> torch.dtype:
        return self.prior.proj_in.weight.dtype

    def forward(
        self,
        x_t: torch.Tensor,
        t: torch.Tensor,
        text_embed: torch.Tensor,
        text_tokens: torch.Tensor,
        text_mask: torch.Tensor,
        text_keep: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Predict the clean normalised image embedding (B, E), float32.

        Args:
            x_t: (B, E) noised normalised embedding; t: (B,) timesteps.
            text_embed: (B, E) raw CLIP ``text_embeds``; text_tokens: (B, L, W) CLIP
                ``last_hidden_state``; text_mask: (B, L) bool, True at real tokens.
            text_keep: (B,) bool; False uses the encoding of "" instead (None: all True).
        """
        b = x_t.shape[0]
        if text_tokens.shape[1] != self.config.context_length:
            raise InputError(
                f"Karlo's prior takes exactly {self.config.context_length} text positions, got {text_tokens.shape[1]}"
            )
        if text_keep is not None:
            keep = text_keep.to(device=x_t.device, dtype=torch.bool)
            text_embed = torch.where(keep[:, None], text_embed, self.null_embed)
            text_tokens = torch.where(keep[:, None, None], text_tokens, self.null_tokens)
            text_mask = torch.where(keep[:, None], text_mask.bool(), self.null_mask)
        dt = self.dtype
        out = self.prior(
            hidden_states=x_t.to(dt),
            timestep=t.expand(b) if t.dim() == 0 else t,
            proj_embedding=text_embed.to(dt),
            encoder_hidden_states=text_tokens.to(dt),
            attention_mask=text_mask.bool(),
        )
        return out.predicted_image_embedding.float()

    def to_embedding(self, z: torch.Tensor) -> torch.Tensor:
        """Normalised prior samples (B, E) -> raw CLIP image embeddings: z clip_std + clip_mean."""
        return z.float() * self.prior.clip_std.float().to(z.device) + self.prior.clip_mean.float().to(z.device)

    @property
    def expected_norm(self) -> float:
        """sqrt(|clip_mean|^2 + |clip_std|^2): the root-mean-square norm of the image embeddings the prior models."""
        return float((self.prior.clip_mean.float().pow(2).sum() + self.prior.clip_std.float().pow(2).sum()).sqrt())


@torch.no_grad()
def sample_karlo_image_embeds(
    prior: KarloPrior,
    schedule: StageSchedule,
    text: TextEncoding,
    *,
    steps: int = 25,
    guidance_scale: float = 4.0,
    best_of: int = 1,
    generator: torch.Generator | None = None,
    x_T: torch.Tensor | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """Raw CLIP image embeddings (B, E) for captions, by Karlo's prior and our DDPM sampler.

    Samples ``best_of`` candidates per caption (Karlo: 1) and keeps the one with the highest
    cosine similarity to the caption's text embedding. ``x_T`` (B * best_of, E) fixes the
    starting noise (else drawn from ``generator``); the reverse steps draw from ``generator``.
    Classifier-free guidance contrasts the caption with "" in one batched forward.
    """
    if best_of < 1:
        raise InputError(f"best_of must be >= 1, got {best_of}")
    b, n = text.embed.shape[0], int(best_of)

    def rep(x):
        return x.repeat_interleave(n, dim=0)

    keep = torch.ones(b * n, dtype=torch.bool, device=text.embed.device)
    cond = {
        "text_embed": rep(text.embed),
        "text_tokens": rep(text.tokens),
        "text_mask": rep(text.mask),
        "text_keep": keep,
    }
    model_fn = classifier_free_guidance(prior, guidance_scale, cond, {**cond, "text_keep": ~keep})
    if x_T is None:
        x_T = randn_like(torch.empty(b * n, prior.config.embed_dim, device=text.embed.device), generator)
    elif tuple(x_T.shape) != (b * n, prior.config.embed_dim):
        raise InputError(f"x_T must have shape {(b * n, prior.config.embed_dim)}, got {tuple(x_T.shape)}")
    z = ddpm_sample(
        model_fn,
        schedule.diffusion(steps),
        x_T.float().to(text.embed.device),
        generator=generator,
        clip_x0=schedule.clip_x0,
        progress=progress,
    )
    z = prior.to_embedding(z).view(b, n, -1)
    if n == 1:
        return z[:, 0]
    scores = F.cosine_similarity(z, text.embed.float().view(b, 1, -1), dim=-1)
    return z[torch.arange(b, device=z.device), scores.argmax(dim=1)]
