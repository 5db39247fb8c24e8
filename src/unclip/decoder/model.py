"""The unCLIP decoder: a GLIDE text-conditional UNet that is also conditioned on z_i.

unCLIP (Ramesh et al. 2022), section 2.1: the decoder is GLIDE (Nichol et al. 2021) with
the CLIP image embedding z_i added in two places,

1. projected and added to the timestep embedding, and
2. projected into ``num_clip_tokens`` (four in the paper) extra context tokens,
   concatenated to the sequence of outputs of GLIDE's text encoder,

while GLIDE's own text pathway is kept: a transformer trained with the decoder, whose
final-token state is projected and added to the timestep embedding and whose per-token
states are context for every attention layer of the UNet.

Classifier-free guidance (section 2.1: drop z_i 10% and the caption 50% of the time) is
driven by per-example keep flags, so conditional and unconditional halves can share one
batched forward:

- ``image_keep[b] == False``: a learned null embedding replaces z_i for example b (in
  both the timestep embedding and the context tokens).
- ``text_keep[b] == False``: example b's text tokens are masked out of the attention
  context and a learned null vector replaces its pooled text state.

The text encoder is non-causal with a key padding mask (GLIDE's is causal; with padding
masked out, letting every token see the whole caption is the simpler and at least as
expressive choice), and is pooled at the last real token.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..errors import ConfigError, InputError
from ..nn.transformer import Transformer, TransformerConfig
from ..nn.unet import UNet, UNetConfig


@dataclass
class DecoderConfig:
    """Shape of a :class:`Decoder` (flat, JSON-able).

    Attributes:
        image_size: training resolution (the paper's decoder works at 64 px).
        base_channels, channel_mults, num_res_blocks, attention_resolutions, head_channels,
        dropout, use_scale_shift_norm, resblock_updown, time_embed_mult: the UNet's fields
            (see :class:`unclip.nn.unet.UNetConfig`); ``attention_resolutions`` are
            feature-map sides at ``image_size``.
        learned_variance: output 6 channels (eps and the variance interpolation values,
            Nichol & Dhariwal 2021) instead of 3.
        use_image_embed: condition on the CLIP image embedding z_i (False: the GLIDE
            text-only baseline; ``image_embed`` is then ignored).
        clip_embed_dim: width E of z_i.
        num_clip_tokens: context tokens made from z_i (0: only the timestep-embedding path).
        use_text: build the decoder's own text encoder (False: z_i is the only condition).
        vocab_size, context_length, pad_token_id: token ids are in [0, vocab_size);
            captions are at most ``context_length`` tokens; ``pad_token_id`` marks padding.
        text_width, text_depth, text_heads: the text transformer; ``text_width`` is also
            the width of every context token (text and CLIP alike).
    """

    image_size: int = 32
    base_channels: int = 64
    channel_mults: tuple[int, ...] = (1, 2, 2)
    num_res_blocks: int = 2
    attention_resolutions: tuple[int, ...] = (16, 8)
    head_channels: int = 32
    dropout: float = 0.0
    use_scale_shift_norm: bool = True
    resblock_updown: bool = True
    time_embed_mult: int = 4
    learned_variance: bool = False
    use_image_embed: bool = True
    clip_embed_dim: int = 128
    num_clip_tokens: int = 4
    use_text: bool = True
    vocab_size: int = 512
    context_length: int = 24
    pad_token_id: int = 0
    text_width: int = 256
    text_depth: int = 2
    text_heads: int = 4

    def __post_init__(self) -> None:
        self.channel_mults = tuple(int(m) for m in self.channel_mults)
        self.attention_resolutions = tuple(int(r) for r in self.attention_resolutions)
        if self.num_clip_tokens < 0:
            raise ConfigError(f"DecoderConfig.num_clip_tokens={self.num_clip_tokens} must be >= 0")
        if self.use_text and (self.vocab_size < 1 or self.context_length < 1):
            raise ConfigError(
                f"DecoderConfig.vocab_size={self.vocab_size} and context_length={self.context_length} must be "
                "positive when use_text is True"
            )
        if self.use_text and not 0 <= self.pad_token_id < self.vocab_size:
            raise ConfigError(
                f"DecoderConfig.pad_token_id={self.pad_token_id} must lie in [0, vocab_size={self.vocab_size})"
            )
        if self.text_width % self.text_heads:
            raise ConfigError(
                f"DecoderConfig.text_width={self.text_width} must be divisible by text_heads={self.text_heads}"
            )

    @property
    def out_channels(self) -> int:
        return 6 if self.learned_variance else 3

    @property
    def context_dim(self) -> int | None:
        """Width of the UNet's context tokens, or None when there are none."""
        has_context = self.use_text or (self.use_image_embed and self.num_clip_tokens > 0)
        return self.text_width if has_context else None

    @property
    def image_channels(self) -> int:
        """Channels of the image (and of the eps part of the output)."""
        return 3

    def unet_config(self) -> UNetConfig:
        return UNetConfig(
            in_channels=self.image_channels,
            out_channels=self.out_channels,
            base_channels=self.base_channels,
            channel_mults=self.channel_mults,
            num_res_blocks=self.num_res_blocks,
            attention_resolutions=self.attention_resolutions,
            image_size=self.image_size,
            head_channels=self.head_channels,
            dropout=self.dropout,
            context_dim=self.context_dim,
            use_scale_shift_norm=self.use_scale_shift_norm,
            resblock_updown=self.resblock_updown,
            time_embed_mult=self.time_embed_mult,
        )


class DecoderTextEncoder(nn.Module):
    """GLIDE's caption encoder, trained with the decoder.

    Token + learned position embeddings -> non-causal :class:`Transformer` with a key
    padding mask. Returns per-token states (B, L, W), the pooled state at the last real
    token (B, W), and the mask (B, L) True at real tokens.
    """

    def __init__(self, config: DecoderConfig) -> None:
        super().__init__()
        self.config = config
        self.token_embedding = nn.Embedding(config.vocab_size, config.text_width)
        self.position_embedding = nn.Parameter(torch.randn(config.context_length, config.text_width) * 0.01)
        self.transformer = Transformer(
            TransformerConfig(width=config.text_width, depth=config.text_depth, heads=config.text_heads)
        )

    def forward(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        cfg = self.config
        if tokens.ndim != 2 or tokens.dtype not in (torch.int64, torch.int32):
            raise InputError(f"text_tokens must be a (B, L) integer tensor, got {tuple(tokens.shape)} {tokens.dtype}")
        b, length = tokens.shape
        if length > cfg.context_length:
            raise InputError(
                f"text_tokens has length {length} but the decoder's context_length is {cfg.context_length}; truncate "
                "the tokens"
            )
        # Range check on CPU only: on an accelerator it would force a device sync every
        # step, and an out-of-range id fails loudly in the embedding there anyway.
        if (
            tokens.device.type == "cpu"
            and tokens.numel()
            and (int(tokens.min()) < 0 or int(tokens.max()) >= cfg.vocab_size)
        ):
            raise InputError(
                f"text_tokens ids must lie in [0, {cfg.vocab_size}); got range [{int(tokens.min())}, "
                f"{int(tokens.max())}]; was the caption tokenized with the matching tokenizer?"
            )
        mask = tokens != cfg.pad_token_id
        # The first position always counts as real: an empty caption still yields a
        # well-defined (all-pad) sequence instead of a fully masked attention row.
        mask[:, 0] = True
        x = self.token_embedding(tokens) + self.position_embedding[:length]
        x = self.transformer(x, key_padding_mask=mask)
        last = (mask * torch.arange(length, device=tokens.device)).argmax(dim=1)  # index of the last real token
        pooled = x[torch.arange(b, device=tokens.device), last]
        return x, pooled, mask


class Decoder(nn.Module):
    """P(x | z_i, y): the unCLIP decoder network (section 2.1).

    ``forward(x_t, t, image_embed, text_tokens, image_keep, text_keep)`` returns the raw
    UNet output (B, 3 or 6, H, W); the diffusion code decides what it means.
    """

    def __init__(self, config: DecoderConfig) -> None:
        super().__init__()
        self.config = cfg = config
        self.unet = UNet(cfg.unet_config())
        emb_dim = self.unet.emb_dim
        if cfg.use_image_embed:
            self.null_image_embed = nn.Parameter(torch.randn(cfg.clip_embed_dim) * cfg.clip_embed_dim**-0.5)
            self.image_to_emb = nn.Linear(cfg.clip_embed_dim, emb_dim)
            self.image_to_tokens = (
                nn.Linear(cfg.clip_embed_dim, cfg.num_clip_tokens * cfg.text_width) if cfg.num_clip_tokens else None
            )
        if cfg.use_text:
            self.text_encoder = DecoderTextEncoder(cfg)
            self.null_text_pooled = nn.Parameter(torch.randn(cfg.text_width) * 0.02)
            self.text_to_emb = nn.Linear(cfg.text_width, emb_dim)

    def forward(
        self,
        x_t: torch.Tensor,
        t: torch.Tensor,
        image_embed: torch.Tensor | None = None,
        text_tokens: torch.Tensor | None = None,
        image_keep: torch.Tensor | None = None,
        text_keep: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Predict the raw output for noisy images ``x_t``.

        Args:
            x_t: (B, 3, H, W) noisy images, H and W multiples of 2 ** (levels - 1).
            t: (B,) timesteps.
            image_embed: (B, E) CLIP image embeddings z_i (ignored when ``use_image_embed`` is False).
            text_tokens: (B, L) caption token ids, L <= context_length, padded with
                ``pad_token_id`` (ignored when ``use_text`` is False).
            image_keep: (B,) bool; False replaces z_i by the learned null embedding. None: all True.
            text_keep: (B,) bool; False drops the caption (masked context, null pooled vector). None: all True.
        Returns:
            (B, 6, H, W) eps and variance values when ``learned_variance``, else (B, 3, H, W).
        """
        cfg = self.config
        b = x_t.shape[0]
        dev = x_t.device
        emb_extra = None
        tokens: list[torch.Tensor] = []
        masks: list[torch.Tensor] = []
        if cfg.use_text:
            if text_tokens is None:
                raise InputError(
                    "this decoder uses text: pass text_tokens (B, L); to drop the caption pass text_keep=False"
                )
            if text_tokens.shape[0] != b:
                raise InputError(f"text_tokens has batch {text_tokens.shape[0]}, x_t has batch {b}")
            keep = self._keep(text_keep, b, dev, "text_keep")
            states, pooled, mask = self.text_encoder(text_tokens.to(dev))
            pooled = torch.where(keep[:, None], pooled, self.null_text_pooled.to(pooled.dtype))
            emb_extra = self.text_to_emb(pooled)
            tokens.append(states)
            masks.append(mask & keep[:, None])
        if cfg.use_image_embed:
            if image_embed is None:
                raise InputError(
                    "this decoder is conditioned on CLIP image embeddings: pass image_embed (B, E); to drop it pass "
                    "image_keep=False"
                )
            if image_embed.shape != (b, cfg.clip_embed_dim):
                raise InputError(
                    f"image_embed must have shape ({b}, {cfg.clip_embed_dim}), got {tuple(image_embed.shape)}"
                )
            keep = self._keep(image_keep, b, dev, "image_keep")
            z = image_embed.to(device=dev, dtype=self.null_image_embed.dtype)
            z = torch.where(keep[:, None], z, self.null_image_embed)
            e = self.image_to_emb(z)
            emb_extra = e if emb_extra is None else emb_extra + e
            if self.image_to_tokens is not None:
                tokens.append(self.image_to_tokens(z).view(b, cfg.num_clip_tokens, cfg.text_width))
                masks.append(torch.ones(b, cfg.num_clip_tokens, dtype=torch.bool, device=dev))
        context = torch.cat(tokens, dim=1) if tokens else None
        context_mask = torch.cat(masks, dim=1) if masks else None
        return self.unet(x_t, t, emb_extra=emb_extra, context=context, context_mask=context_mask)

    @staticmethod
    def _keep(flags: torch.Tensor | None, b: int, device: torch.device, name: str) -> torch.Tensor:
        if flags is None:
            return torch.ones(b, dtype=torch.bool, device=device)
        if flags.shape != (b,):
            raise InputError(f"{name} must be a ({b},) bool tensor, got shape {tuple(flags.shape)}")
        return flags.to(device=device, dtype=torch.bool)
