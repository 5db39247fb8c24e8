"""The autoregressive prior of unCLIP (Ramesh et al. 2022, section 2.2).

z_i is turned into a short sequence of discrete codes:

1. rotate onto the principal axes of the training image embeddings (:mod:`.pca`) and keep
   the leading ``num_components`` coefficients (the number whose reconstruction error is
   under 1%), ordered by decreasing eigenvalue;
2. quantise each coefficient into ``num_buckets`` buckets (1024 as in the paper). Bucket
   edges are the per-component *quantiles* of the training coefficients, so every bucket
   holds about the same number of training values: edges[j] = quantile(c_j, 0, 1/B, ..., 1)
   (the outer edges are the training min and max; values beyond them fall in the outer
   buckets). A bucket decodes to the mean of the training coefficients inside it (the
   midpoint of its edges when it is empty).

A causal transformer predicts the codes one at a time after a prefix that holds

    [caption token encodings (L), CLIP text embedding z_t, dot-product token]

where the dot-product token is z_i . z_t quantised into ``num_dot_buckets`` quantile
buckets of its training distribution. Coefficient tokens share one embedding table (by
bucket index, which is a quantile rank and so means the same for every component) plus a
learned position embedding per sequence position; one shared linear head gives the
logits of the next code.

Value features (``value_features=True``, our addition to the paper's recipe): a free
1024-way softmax per code learns slowly, since each bucket's row is trained on its own
and nothing tells the network that bucket 511 lies next to bucket 512. So each code also
enters as its (standardised) bucket value through a linear layer, and the logits get a
discretised-Gaussian term ``-(v_b - mu)^2 / (2 sigma^2)`` over the standardised bucket
values v_b, with mu and log sigma predicted by the network. The free logits stay, so the
output is still an arbitrary categorical distribution; the Gaussian term only gives it a
smooth, quickly-learnt starting shape.

Classifier-free guidance: 10% of training sequences replace the text conditioning (token
encodings, z_t *and* the dot-product token, which means nothing without z_t) by learned
null values. At sampling, the dot-product token is drawn from the top half of its training
distribution (the paper's trick for higher z_i . z_t), the codes are sampled one at a time
with a key/value cache (cost linear in the sequence length), guided logits come from one
batched forward of the conditional and unconditional branches, and the codes are decoded,
mapped back through the PCA and normalised.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InputError
from ..nn.attention import KVCache
from ..nn.transformer import Transformer, TransformerConfig
from .pca import PCA
from .text_conditioning import conditioned_text

COMPONENT = "prior_ar"


@dataclass
class ARPriorConfig:
    """Sizes of the AR prior and of its code book."""

    embed_dim: int = 128  # CLIP embedding size E
    text_width: int = 128  # width of CLIP's per-token text encodings
    context_length: int = 20  # maximum number of caption tokens
    num_components: int = 64  # PCA coefficients kept (sequence length of the codes)
    num_buckets: int = 1024  # quantisation buckets per coefficient
    num_dot_buckets: int = 64  # quantisation buckets of z_i . z_t
    width: int = 256
    depth: int = 4
    heads: int = 8
    text_drop_prob: float = 0.1
    value_features: bool = True  # bucket values as numbers, in and out (see the module docstring)


class ARPrior(nn.Module):
    """Causal transformer over [caption tokens, z_t, dot token, PCA-coefficient codes].

    Buffers (saved with the weights): ``pca_mean`` (E,), ``pca_components`` (K, E),
    ``bucket_edges`` (K, B+1), ``bucket_values`` (K, B), ``dot_edges`` (D+1,),
    ``dot_probs`` (D,) training frequencies of the dot-product buckets, ``coeff_scale`` (K,)
    standard deviations of the coefficients (square roots of the PCA eigenvalues).
    """

    def __init__(self, config: ARPriorConfig) -> None:
        super().__init__()
        self.config = config
        c, w = config, config.width
        k, nb, nd = c.num_components, c.num_buckets, c.num_dot_buckets
        self.register_buffer("pca_mean", torch.zeros(c.embed_dim))
        self.register_buffer("pca_components", torch.zeros(k, c.embed_dim))
        self.register_buffer("bucket_edges", torch.linspace(-1, 1, nb + 1).repeat(k, 1))
        self.register_buffer("bucket_values", torch.zeros(k, nb))
        self.register_buffer("dot_edges", torch.linspace(-1, 1, nd + 1))
        self.register_buffer("dot_probs", torch.full((nd,), 1.0 / nd))
        self.register_buffer("coeff_scale", torch.ones(k))
        self.text_token_proj = nn.Linear(c.text_width, w)
        self.text_embed_proj = nn.Linear(c.embed_dim, w)
        self.dot_embed = nn.Embedding(nd + 1, w)  # index nd: the null (dropped) dot token
        self.code_embed = nn.Embedding(nb, w)
        self.null_text_tokens = nn.Parameter(torch.randn(c.context_length, w) * 0.02)
        self.null_text_embed = nn.Parameter(torch.randn(w) * 0.02)
        self.positions = nn.Parameter(torch.randn(c.context_length + 2 + k, w) * 0.02)
        self.transformer = Transformer(TransformerConfig(width=w, depth=c.depth, heads=c.heads))
        self.head = nn.Linear(w, nb)
        if c.value_features:
            self.value_in = nn.Linear(1, w)
            self.value_out = nn.Linear(w, 2)
            nn.init.zeros_(self.value_out.weight)
            nn.init.zeros_(self.value_out.bias)

    # ------------------------------------------------------------------ code book
    @torch.no_grad()
    def fit_codebook(self, image_embeds: torch.Tensor, text_embeds: torch.Tensor, pca: PCA) -> None:
        """Set the PCA and the bucket buffers from training embeddings.

        Args:
            image_embeds: (N, E) unit CLIP image embeddings z_i.
            text_embeds: (N, E) unit CLIP text embeddings z_t of their captions.
            pca: a PCA fitted on (typically the same) image embeddings.
        """
        c = self.config
        k, nb, nd = c.num_components, c.num_buckets, c.num_dot_buckets
        if pca.dim != c.embed_dim or k > pca.dim:
            raise InputError(f"PCA of dim {pca.dim} does not fit embed_dim={c.embed_dim}, num_components={k}")
        self.pca_mean.copy_(pca.mean.float())
        self.pca_components.copy_(pca.components[:k].float())
        self.coeff_scale.copy_(pca.eigenvalues[:k].float().sqrt().clamp_min(1e-6))
        coeffs = pca.project(image_embeds.float(), k).T.contiguous()  # (K, N)
        q = torch.linspace(0, 1, nb + 1, dtype=torch.float64)
        edges = torch.quantile(coeffs.double(), q, dim=1).T.float()  # (K, nb+1)
        self.bucket_edges.copy_(edges)
        codes = self._bucketize(coeffs, edges)  # (K, N)
        sums = torch.zeros(k, nb).scatter_add_(1, codes, coeffs)
        counts = torch.zeros(k, nb).scatter_add_(1, codes, torch.ones_like(coeffs))
        mids = 0.5 * (edges[:, 1:] + edges[:, :-1])
        self.bucket_values.copy_(torch.where(counts > 0, sums / counts.clamp_min(1), mids))
        dots = (image_embeds.float() * text_embeds.float()).sum(-1)
        dot_edges = torch.quantile(dots.double(), torch.linspace(0, 1, nd + 1, dtype=torch.float64)).float()
        self.dot_edges.copy_(dot_edges)
        dot_codes = self._bucketize(dots[None], dot_edges[None])[0]
        self.dot_probs.copy_(torch.bincount(dot_codes, minlength=nd).float() / dots.numel())

    @staticmethod
    def _bucketize(values: torch.Tensor, edges: torch.Tensor) -> torch.Tensor:
        """Rows of ``values`` (R, N) into buckets of ``edges`` (R, B+1): (R, N) long in [0, B)."""
        inner = edges[:, 1:-1].contiguous()
        return torch.searchsorted(inner, values.contiguous(), right=True)

    def quantize(self, coeffs: torch.Tensor) -> torch.Tensor:
        """(N, K) PCA coefficients -> (N, K) bucket codes (long)."""
        return self._bucketize(coeffs.T.float(), self.bucket_edges).T

    def dequantize(self, codes: torch.Tensor) -> torch.Tensor:
        """(N, K') codes of the first K' components -> (N, K') coefficients (bucket means)."""
        k = codes.shape[-1]
        return self.bucket_values[torch.arange(k, device=codes.device), codes]

    def quantize_dot(self, dots: torch.Tensor) -> torch.Tensor:
        """(N,) values of z_i . z_t -> (N,) dot-product codes."""
        return self._bucketize(dots[None].float(), self.dot_edges[None])[0]

    def encode(self, image_embeds: torch.Tensor, text_embeds: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Training targets: (N,) dot-product codes and (N, K) coefficient codes."""
        coeffs = (image_embeds.float() - self.pca_mean) @ self.pca_components.T
        return self.quantize_dot((image_embeds.float() * text_embeds.float()).sum(-1)), self.quantize(coeffs)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """(N, K) codes -> (N, E) unit image embeddings."""
        coeffs = self.dequantize(codes)
        z = coeffs @ self.pca_components[: codes.shape[-1]] + self.pca_mean
        return F.normalize(z, dim=-1)

    # ------------------------------------------------------------------ network
    def _prefix(self, text_embed, text_tokens, text_mask, text_keep, dot_codes) -> tuple[torch.Tensor, torch.Tensor]:
        """Embedded prefix (B, L+2, W) and its key mask (B, L+2)."""
        b, length = text_tokens.shape[:2]
        tokens, mask, z_t = conditioned_text(self, text_embed, text_tokens, text_mask, text_keep)
        dot = self.dot_embed(torch.where(text_keep, dot_codes, torch.full_like(dot_codes, self.config.num_dot_buckets)))
        seq = torch.cat([tokens, z_t[:, None], dot[:, None].to(tokens.dtype)], dim=1)
        seq = seq + self.positions[: length + 2].to(seq.dtype)
        full_mask = torch.cat([mask, torch.ones(b, 2, dtype=torch.bool, device=mask.device)], dim=1)
        return seq, full_mask

    def _codes_in(self, codes: torch.Tensor, start: int, first: int = 0) -> torch.Tensor:
        """Embed codes of components ``first, first+1, ...`` at positions ``start, ...``: (B, n, W)."""
        x = self.code_embed(codes) + self.positions[start : start + codes.shape[1]]
        if self.config.value_features:
            comp = torch.arange(first, first + codes.shape[1], device=codes.device)
            values = self.bucket_values[comp, codes] / self.coeff_scale[comp]
            x = x + self.value_in(values[..., None].to(x.dtype))
        return x

    def _logits(self, h: torch.Tensor, first: int = 0) -> torch.Tensor:
        """(B, n, W) outputs predicting components ``first, ...`` -> (B, n, num_buckets) logits."""
        logits = self.head(h)
        if self.config.value_features:
            comp = torch.arange(first, first + h.shape[1], device=h.device)
            values = (self.bucket_values[comp] / self.coeff_scale[comp, None]).to(logits.dtype)  # (n, nb)
            mu, log_sigma = self.value_out(h).unbind(-1)
            inv = torch.exp(-log_sigma.clamp(-5.0, 3.0))
            logits = logits - 0.5 * ((values - mu[..., None]) * inv[..., None]) ** 2
        return logits

    def forward(
        self,
        text_embed: torch.Tensor,
        text_tokens: torch.Tensor,
        text_mask: torch.Tensor,
        text_keep: torch.Tensor,
        dot_codes: torch.Tensor,
        codes: torch.Tensor,
    ) -> torch.Tensor:
        """Logits of every code given the ones before it (teacher forcing).

        Args:
            text_embed: (B, E) unit z_t. text_tokens: (B, L, text_width). text_mask: (B, L) bool.
            text_keep: (B,) bool; False swaps the text conditioning for the null values.
            dot_codes: (B,) long dot-product codes.
            codes: (B, n) long, the first n coefficient codes, 0 <= n < num_components.
        Returns:
            (B, n + 1, num_buckets): logits of codes 0..n.
        """
        prefix, mask = self._prefix(text_embed, text_tokens, text_mask, text_keep, dot_codes)
        length = prefix.shape[1]
        seq = torch.cat([prefix, self._codes_in(codes, length).to(prefix.dtype)], dim=1)
        mask = torch.cat([mask, torch.ones(codes.shape, dtype=torch.bool, device=mask.device)], dim=1)
        h = self.transformer(seq, causal=True, key_padding_mask=mask)
        return self._logits(h[:, length - 1 :])

    def loss(
        self, text_embed, text_tokens, text_mask, text_keep, dot_codes, codes
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean cross-entropy over all K codes and the per-code accuracy (detached)."""
        logits = self(text_embed, text_tokens, text_mask, text_keep, dot_codes, codes[:, :-1])
        loss = F.cross_entropy(logits.float().flatten(0, 1), codes.flatten())
        acc = (logits.detach().argmax(-1) == codes).float().mean()
        return loss, acc


@torch.no_grad()
def sample_dot_codes(
    prior: ARPrior, n: int, *, generator: torch.Generator | None = None, top_half: bool = True
) -> torch.Tensor:
    """Draw (n,) dot-product codes from the training distribution (its top half by default).

    The top half: buckets whose probability mass lies at or above the training median;
    the bucket holding the median keeps only its share above it.
    """
    probs = prior.dot_probs.detach().float().cpu()
    if top_half:
        below = torch.cumsum(probs, 0) - probs  # mass strictly below each bucket
        probs = (probs - (0.5 - below).clamp(0.0)).clamp(0.0)
    if float(probs.sum()) <= 0:
        probs = torch.ones_like(probs)
    return torch.multinomial(probs, n, replacement=True, generator=generator).to(prior.dot_probs.device)


@torch.no_grad()
def sample_ar_codes(
    prior: ARPrior,
    text_embed: torch.Tensor,
    text_tokens: torch.Tensor,
    text_mask: torch.Tensor,
    *,
    dot_codes: torch.Tensor | None = None,
    guidance_scale: float = 1.0,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
    return_logits: bool = False,
):
    """Sample (B, K) coefficient codes one at a time with a key/value cache.

    With ``guidance_scale != 1`` the conditional and unconditional branches run as one
    batch of 2B and the logits are mixed as ``u + s * (c - u)`` (on log-probabilities).
    Random draws use ``generator`` on the CPU, so results do not depend on the device.
    ``return_logits`` also returns the (B, K, num_buckets) guided logits used at each step.
    """
    if temperature <= 0:
        raise InputError(f"temperature must be > 0, got {temperature}")
    b = text_embed.shape[0]
    device = text_embed.device
    if dot_codes is None:
        dot_codes = sample_dot_codes(prior, b, generator=generator)
    guided = guidance_scale != 1.0
    keep = torch.ones(b, dtype=torch.bool, device=device)
    if guided:
        text_embed, text_tokens, text_mask, dot_codes = (
            torch.cat([x, x]) for x in (text_embed, text_tokens, text_mask, dot_codes)
        )
        keep = torch.cat([keep, ~keep])
    prefix, mask = prior._prefix(text_embed, text_tokens, text_mask, keep, dot_codes)
    cache = KVCache()
    h = prior.transformer(prefix, causal=True, key_padding_mask=mask, cache=cache)[:, -1]
    start = prefix.shape[1]
    k = prior.config.num_components
    codes, all_logits = [], []
    for j in range(k):
        logits = F.log_softmax(prior._logits(h[:, None], first=j)[:, 0].float(), dim=-1)
        if guided:
            cond, uncond = logits.chunk(2)
            logits = uncond + guidance_scale * (cond - uncond)
        if return_logits:
            all_logits.append(logits)
        probs = torch.softmax(logits / temperature, dim=-1).cpu()
        code = torch.multinomial(probs, 1, generator=generator)[:, 0].to(device)
        codes.append(code)
        if j + 1 == k:
            break
        step = torch.cat([code, code]) if guided else code
        mask = torch.cat([mask, torch.ones(mask.shape[0], 1, dtype=torch.bool, device=device)], dim=1)
        x = prior._codes_in(step[:, None], start + j, first=j).to(prefix.dtype)
        h = prior.transformer(x, causal=True, key_padding_mask=mask, cache=cache)[:, -1]
    codes = torch.stack(codes, dim=1)
    return (codes, torch.stack(all_logits, dim=1)) if return_logits else codes


@torch.no_grad()
def sample_ar_image_embeds(
    prior: ARPrior,
    text_embed: torch.Tensor,
    text_tokens: torch.Tensor,
    text_mask: torch.Tensor,
    *,
    guidance_scale: float = 1.0,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Sample unit CLIP image embeddings for captions with the AR prior (paper section 2.2).

    Args:
        text_embed: (B, E) unit z_t; text_tokens: (B, L, text_width); text_mask: (B, L) bool.
    Returns:
        (B, E) float32 unit image embeddings.
    """
    dtype = next(prior.parameters()).dtype
    codes = sample_ar_codes(
        prior,
        text_embed.to(dtype),
        text_tokens.to(dtype),
        text_mask,
        guidance_scale=guidance_scale,
        temperature=temperature,
        generator=generator,
    )
    return prior.decode(codes).float()
