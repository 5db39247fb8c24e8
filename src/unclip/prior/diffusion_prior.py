"""The diffusion prior of unCLIP (Ramesh et al. 2022, section 2.2).

A decoder-only transformer with a causal mask runs over the sequence

    [text token encodings (L), CLIP text embedding z_t, timestep embedding,
     noised CLIP image embedding z_i^(t), learned final query]

and the output at the final query predicts the *clean* image embedding z_i directly
(the paper trains with an MSE on z_i, not on the noise).

Normalisation: CLIP embeddings are unit vectors; the prior works on ``sqrt(E) * z`` so
that each coordinate has roughly unit variance, the scale a Gaussian diffusion expects.
Sampled embeddings are divided by ``sqrt(E)`` and projected back onto the unit sphere.

Classifier-free guidance: during training the text conditioning (tokens and z_t) is
replaced by learned null values 10% of the time; the noised z_i is never dropped.

Sampling cost. Under the causal mask the text tokens and z_t never see the timestep or
the noised z_i, so their keys and values are the same at every sampling step.
:class:`TextPrefixCache` runs that prefix once per conditioning and each step then runs
only the last three tokens against the cached keys/values: the same function (tested
against the full forward), at a fraction of the work per step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from ..diffusion import GaussianDiffusion, classifier_free_guidance, randn_like, sample
from ..nn.attention import KVCache
from ..nn.layers import timestep_embedding
from ..nn.transformer import Transformer, TransformerConfig
from .text_conditioning import conditioned_text


@dataclass
class DiffusionPriorConfig:
    """Sizes of the prior transformer and its diffusion."""

    embed_dim: int = 128  # CLIP embedding size E (z_t and z_i)
    text_width: int = 128  # width of CLIP's per-token text encodings
    context_length: int = 24  # maximum number of text tokens
    width: int = 256
    depth: int = 6
    heads: int = 8
    num_timesteps: int = 1000
    schedule: str = "cosine"
    text_drop_prob: float = 0.1


class DiffusionPrior(nn.Module):
    """Predicts the clean (scaled) image embedding from a noised one and the caption."""

    def __init__(self, config: DiffusionPriorConfig) -> None:
        super().__init__()
        self.config = config
        w = config.width
        self.text_token_proj = nn.Linear(config.text_width, w)
        self.text_embed_proj = nn.Linear(config.embed_dim, w)
        self.image_embed_proj = nn.Linear(config.embed_dim, w)
        self.time_mlp = nn.Sequential(nn.Linear(w, w), nn.SiLU(), nn.Linear(w, w))
        self.final_query = nn.Parameter(torch.randn(w) * 0.02)
        self.null_text_tokens = nn.Parameter(torch.randn(config.context_length, w) * 0.02)
        self.null_text_embed = nn.Parameter(torch.randn(w) * 0.02)
        self.positions = nn.Parameter(torch.randn(config.context_length + 4, w) * 0.02)
        self.transformer = Transformer(TransformerConfig(width=w, depth=config.depth, heads=config.heads))
        self.out = nn.Linear(w, config.embed_dim)

    @property
    def scale(self) -> float:
        """Factor between unit CLIP embeddings and the prior's diffusion space."""
        return math.sqrt(self.config.embed_dim)

    def forward(
        self,
        x_t: torch.Tensor,
        t: torch.Tensor,
        text_embed: torch.Tensor,
        text_tokens: torch.Tensor,
        text_mask: torch.Tensor,
        text_keep: torch.Tensor,
    ) -> torch.Tensor:
        """Predict the clean scaled image embedding.

        Args:
            x_t: (B, E) noised scaled image embedding.
            t: (B,) timesteps.
            text_embed: (B, E) unit CLIP text embedding z_t.
            text_tokens: (B, L, text_width) CLIP per-token encodings.
            text_mask: (B, L) bool, True at real tokens.
            text_keep: (B,) bool; False replaces the text conditioning by the null values.
        Returns:
            (B, E) predicted clean scaled embedding.
        """
        prefix, mask = self._prefix_tokens(text_embed, text_tokens, text_mask, text_keep)
        seq = torch.cat([prefix, self._step_tokens(x_t, t, prefix.dtype, prefix.shape[1])], dim=1)
        h = self.transformer(seq, causal=True, key_padding_mask=_with_step_keys(mask))
        return self.out(h[:, -1])

    def _prefix_tokens(
        self, text_embed: torch.Tensor, text_tokens: torch.Tensor, text_mask: torch.Tensor, text_keep: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The step-independent tokens [text tokens, z_t] with their positions (B, L + 1, W), and their key mask."""
        tokens, mask, z_t = conditioned_text(self, text_embed, text_tokens, text_mask, text_keep)
        seq = torch.cat([tokens, z_t[:, None]], dim=1)
        seq = seq + self.positions[: seq.shape[1]].to(seq.dtype)
        return seq, torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)

    def _step_tokens(self, x_t: torch.Tensor, t: torch.Tensor, dtype: torch.dtype, start: int) -> torch.Tensor:
        """The step-dependent tokens [timestep embedding, noised z_i, final query] with their
        positions, which follow the ``start`` prefix tokens: (B, 3, W)."""
        time = self.time_mlp(timestep_embedding(t, self.config.width).to(dtype))
        query = self.final_query.to(dtype).expand(x_t.shape[0], -1)
        seq = torch.stack([time, self.image_embed_proj(x_t), query], dim=1)
        return seq + self.positions[start : start + 3].to(seq.dtype)

    def encode_prefix(
        self, text_embed: torch.Tensor, text_tokens: torch.Tensor, text_mask: torch.Tensor, text_keep: torch.Tensor
    ) -> "TextPrefix":
        """Run the step-independent tokens (text tokens, z_t) once: their keys/values per layer."""
        seq, mask = self._prefix_tokens(text_embed, text_tokens, text_mask, text_keep)
        cache = KVCache()
        self.transformer(seq, causal=True, key_padding_mask=mask, cache=cache)
        return TextPrefix(cache, mask, seq.dtype)

    def forward_from_prefix(self, x_t: torch.Tensor, t: torch.Tensor, prefix: "TextPrefix") -> torch.Tensor:
        """:meth:`forward` with the text part taken from :meth:`encode_prefix` (same result)."""
        seq = self._step_tokens(x_t, t, prefix.dtype, prefix.mask.shape[1])
        mask = _with_step_keys(prefix.mask)
        h = self.transformer(seq, causal=True, key_padding_mask=mask, cache=prefix.cache.fork())
        return self.out(h[:, -1])

    def make_diffusion(self) -> GaussianDiffusion:
        """The Gaussian diffusion this prior was trained with (x0 prediction)."""
        return GaussianDiffusion.make(
            schedule=self.config.schedule, num_timesteps=self.config.num_timesteps, prediction="x0"
        )


def _with_step_keys(prefix_mask: torch.Tensor) -> torch.Tensor:
    """The key mask of the whole sequence: the prefix's, then the three step tokens (always real)."""
    return torch.cat([prefix_mask, torch.ones_like(prefix_mask[:, :3])], dim=1)


@dataclass
class TextPrefix:
    """Keys/values of the text tokens and z_t for every layer, with their key mask (B, L + 1)."""

    cache: KVCache
    mask: torch.Tensor
    dtype: torch.dtype


class TextPrefixCache:
    """Calls like the prior, ``(x_t, t, **text conditioning)``, for sampling: the text prefix
    runs once per conditioning and each call runs the three step tokens only. The samplers
    pass the same conditioning tensors at every step (``bind`` and ``classifier_free_guidance``
    build them once), so the prefix is recomputed only when they are other tensors. Build one
    per sampling run; it assumes the weights do not change."""

    def __init__(self, prior: DiffusionPrior) -> None:
        self.prior = prior
        self._inputs: tuple[torch.Tensor, ...] | None = None
        self._prefix: TextPrefix | None = None

    def __call__(
        self,
        x_t: torch.Tensor,
        t: torch.Tensor,
        text_embed: torch.Tensor,
        text_tokens: torch.Tensor,
        text_mask: torch.Tensor,
        text_keep: torch.Tensor,
    ) -> torch.Tensor:
        inputs = (text_embed, text_tokens, text_mask, text_keep)
        if self._prefix is None or not _same(inputs, self._inputs):
            self._prefix = self.prior.encode_prefix(*inputs)
            self._inputs = inputs
        return self.prior.forward_from_prefix(x_t, t, self._prefix)


def _same(a: tuple[torch.Tensor, ...], b: tuple[torch.Tensor, ...] | None) -> bool:
    return b is not None and all(x is y for x, y in zip(a, b))


@torch.no_grad()
def sample_image_embeds(
    prior: DiffusionPrior,
    text_embed: torch.Tensor,
    text_tokens: torch.Tensor,
    text_mask: torch.Tensor,
    *,
    steps: int = 64,
    guidance_scale: float = 1.0,
    best_of: int = 2,
    method: str = "ddim",
    eta: float = 0.0,
    generator: torch.Generator | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """Sample unit CLIP image embeddings for captions (paper section 2.2).

    Draws ``best_of`` candidates per caption and keeps the one with the highest dot
    product with z_t. Guidance and the unconditional branch share one batched forward.

    Args:
        text_embed: (B, E) unit text embeddings; text_tokens (B, L, W); text_mask (B, L).
    Returns:
        (B, E) unit image embeddings.
    """
    if best_of < 1:
        raise ValueError(f"best_of must be >= 1, got {best_of}")
    b = text_embed.shape[0]
    n = best_of
    rep = lambda x: x.repeat_interleave(n, dim=0)  # noqa: E731 - tiny local helper
    cond = {"text_embed": rep(text_embed), "text_tokens": rep(text_tokens), "text_mask": rep(text_mask)}
    keep = torch.ones(b * n, dtype=torch.bool, device=text_embed.device)
    uncond = {**cond, "text_keep": ~keep}
    cond["text_keep"] = keep
    network = TextPrefixCache(prior) if isinstance(prior, DiffusionPrior) else prior  # wrappers run as they are
    model_fn = classifier_free_guidance(network, guidance_scale, cond, uncond)
    diffusion = prior.make_diffusion()
    x_T = randn_like(
        torch.empty(b * n, prior.config.embed_dim, device=text_embed.device, dtype=text_embed.dtype), generator
    )
    kwargs = {"eta": eta} if method == "ddim" else {}
    z = sample(method, model_fn, diffusion, x_T, steps=steps, generator=generator, progress=progress, **kwargs)
    z = torch.nn.functional.normalize(z.float(), dim=-1).view(b, n, -1)
    scores = (z * text_embed.float().view(b, 1, -1)).sum(-1)
    best = scores.argmax(dim=1)
    return z[torch.arange(b, device=z.device), best]
