"""An ADM-style UNet backbone (Dhariwal & Nichol 2021, section 3; GLIDE, Nichol et al. 2021).

One backbone serves every image network of the project (DESIGN.md principle 5): the
decoder adds its CLIP and text conditioning through ``emb_extra`` (added to the timestep
embedding) and ``context`` (tokens that every attention layer also attends to, GLIDE
style), and the upsampler widens ``in_channels`` to take the low-resolution image. The
network maps ``(x_t, t, conditioning)`` to a raw output and knows nothing of diffusion.

Layout: timestep embedding -> MLP -> ``emb``; an input conv; per resolution level
``num_res_blocks`` residual blocks (plus self-attention where the feature map's side is in
``attention_resolutions``) and a downsampling step; a middle block; the mirrored upsampling
path fed by skip connections; GroupNorm -> SiLU -> zero-initialised output conv. Every
residual branch ends in a zero-initialised layer, so a fresh network is close to the
identity on each branch and its output starts at exactly zero.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from torch import nn

from ..errors import ConfigError, InputError
from .attention import MultiHeadAttention
from .layers import timestep_embedding  # noqa: F401 - re-exported as part of this module's API
from .precision import FP32GroupNorm


@dataclass
class UNetConfig:
    """Shape of a :class:`UNet`.

    Attributes:
        in_channels / out_channels: channels of the input x_t and of the raw output.
        base_channels: width of the first level; level i has ``base_channels * channel_mults[i]``.
        channel_mults: one entry per resolution level; the map halves between levels.
        num_res_blocks: residual blocks per level on the way down (one more on the way up).
        attention_resolutions: feature-map sides (at ``image_size`` input) where
            self-attention runs. Empty, with ``context_dim=None``, gives a conv-only network.
        image_size: the nominal input side that ``attention_resolutions`` refers to. The
            network runs at any side divisible by ``2 ** (len(channel_mults) - 1)``;
            attention then runs at the same levels whatever the actual side.
        head_channels: channels per attention head.
        dropout: dropout inside the residual blocks.
        context_dim: width of the context tokens; when set, every attention layer also
            attends to them (keys/values concatenated, GLIDE-style), and the middle block
            always has attention so that context reaches even a network without
            ``attention_resolutions``.
        use_scale_shift_norm: the embedding scales and shifts the second GroupNorm
            (ADM's adaptive group norm) instead of being added before it.
        resblock_updown: down/upsample inside residual blocks (BigGAN style) rather than
            with a strided conv / nearest-neighbour upsampling + conv.
        time_embed_mult: ``emb`` has ``base_channels * time_embed_mult`` channels.
    """

    in_channels: int = 3
    out_channels: int = 3
    base_channels: int = 64
    channel_mults: tuple[int, ...] = (1, 2, 4)
    num_res_blocks: int = 2
    attention_resolutions: tuple[int, ...] = (16, 8)
    image_size: int = 32
    head_channels: int = 32
    dropout: float = 0.0
    context_dim: int | None = None
    use_scale_shift_norm: bool = True
    resblock_updown: bool = True
    time_embed_mult: int = 4

    def __post_init__(self) -> None:
        # JSON turns tuples into lists; keep the config hashable and comparable.
        self.channel_mults = tuple(int(m) for m in self.channel_mults)
        self.attention_resolutions = tuple(int(r) for r in self.attention_resolutions)
        if not self.channel_mults or min(self.channel_mults) < 1:
            raise ConfigError(
                f"UNetConfig.channel_mults={self.channel_mults} must be a non-empty tuple of positive ints, e.g. (1, "
                "2, 4)"
            )
        if self.base_channels < 1 or self.num_res_blocks < 1 or self.head_channels < 1 or self.time_embed_mult < 1:
            raise ConfigError(
                "UNetConfig.base_channels, num_res_blocks, head_channels and time_embed_mult must be positive "
                f"(got {self.base_channels}, {self.num_res_blocks}, {self.head_channels}, {self.time_embed_mult})"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"UNetConfig.dropout={self.dropout} must lie in [0, 1)")
        factor = 2 ** (len(self.channel_mults) - 1)
        if self.image_size % factor:
            raise ConfigError(
                f"UNetConfig.image_size={self.image_size} must be divisible by {factor} (2 ** (len(channel_mults) - 1))"
            )
        sides = [self.image_size // 2**i for i in range(len(self.channel_mults))]
        bad = [r for r in self.attention_resolutions if r not in sides]
        if bad:
            raise ConfigError(
                f"UNetConfig.attention_resolutions {bad} are not feature-map sides of this network; at "
                f"image_size={self.image_size} the sides are {sides}"
            )

    @property
    def emb_dim(self) -> int:
        return self.base_channels * self.time_embed_mult


def group_norm(channels: int, max_groups: int = 32) -> nn.GroupNorm:
    """GroupNorm with the largest group count <= ``max_groups`` that divides ``channels``
    (computed in fp32 under bf16 autocast, see :class:`.precision.FP32GroupNorm`)."""
    groups = next(g for g in range(min(max_groups, channels), 0, -1) if channels % g == 0)
    return FP32GroupNorm(groups, channels)


def zero_module(module: nn.Module) -> nn.Module:
    """Zero a module's parameters, so a residual branch starts as the identity."""
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class Downsample(nn.Module):
    """Halve the side with a stride-2 3x3 conv (used when ``resblock_updown`` is False)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    """Double the side: nearest-neighbour then a 3x3 conv (used when ``resblock_updown`` is False)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class ResBlock(nn.Module):
    """Residual block conditioned on ``emb`` (ADM).

    ``h = conv(SiLU(GN(x)))``; ``h = GN(h) * (1 + scale) + shift`` (or ``GN(h + emb)``);
    ``h = zero_conv(dropout(SiLU(h)))``; ``out = skip(x) + h``. With ``up``/``down`` the
    feature map is resized inside the block (nearest / average pooling) on both paths.

    Shapes: x (B, C_in, H, W), emb (B, emb_dim) -> (B, C_out, H', W').
    """

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        emb_dim: int,
        *,
        dropout: float = 0.0,
        use_scale_shift_norm: bool = True,
        up: bool = False,
        down: bool = False,
    ) -> None:
        super().__init__()
        self.use_scale_shift_norm = use_scale_shift_norm
        self.up, self.down = up, down
        self.norm_in = group_norm(in_ch)
        self.conv_in = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.emb_proj = nn.Linear(emb_dim, 2 * out_ch if use_scale_shift_norm else out_ch)
        self.norm_out = group_norm(out_ch)
        self.dropout = nn.Dropout(dropout)
        self.conv_out = zero_module(nn.Conv2d(out_ch, out_ch, 3, padding=1))
        self.skip = nn.Identity() if in_ch == out_ch else nn.Conv2d(in_ch, out_ch, 1)

    def _resize(self, x: torch.Tensor) -> torch.Tensor:
        if self.up:
            return F.interpolate(x, scale_factor=2.0, mode="nearest")
        if self.down:
            return F.avg_pool2d(x, 2)
        return x

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = recompute_in_backward(_norm_silu, self.norm_in, x)
        h = self.conv_in(self._resize(h))
        x = self._resize(x)
        e = self.emb_proj(F.silu(emb))[:, :, None, None].to(h.dtype)
        if self.use_scale_shift_norm:
            h = recompute_in_backward(_norm_modulate_silu, self.norm_out, h, e)
        else:
            h = recompute_in_backward(_norm_silu, self.norm_out, h + e)
        h = self.conv_out(self.dropout(h))
        return self.skip(x) + h


def _norm_silu(norm: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return F.silu(norm(x))


def _norm_modulate_silu(norm: nn.Module, x: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
    scale, shift = e.chunk(2, dim=1)
    return F.silu(norm(x) * (1 + scale) + shift)


def recompute_in_backward(fn: Callable[..., torch.Tensor], *args: Any) -> torch.Tensor:
    """``fn(*args)``, its intermediates recomputed in backward rather than stored (training only).

    Used for the elementwise GroupNorm -> (scale, shift) -> SiLU chains of the residual
    blocks (two to three full-size activations per block otherwise) and for the attention
    blocks (their queries, keys, values and softmax statistics): together about half of the
    decoder's saved activations, for a few percent of its FLOPs. Only the inputs are kept.
    """
    if not torch.is_grad_enabled():
        return fn(*args)
    return torch.utils.checkpoint.checkpoint(fn, *args, use_reentrant=False)


class AttentionBlock(nn.Module):
    """Self-attention over the H*W positions of a feature map, optionally also over context tokens.

    GroupNorm -> multi-head attention (SDPA) with the context keys/values concatenated to
    the spatial ones (GLIDE) -> zero-initialised output projection -> residual.

    Shapes: x (B, C, H, W), context (B, M, context_dim), context_mask (B, M) -> (B, C, H, W).
    """

    def __init__(self, channels: int, head_channels: int, context_dim: int | None = None) -> None:
        super().__init__()
        heads = max(1, channels // head_channels)
        if channels % heads:
            raise ConfigError(
                f"attention over {channels} channels cannot split into heads of {head_channels} channels; pick "
                f"head_channels dividing {channels}"
            )
        self.norm = group_norm(channels)
        self.attn = MultiHeadAttention(channels, heads, context_dim=context_dim)
        zero_module(self.attn.out)

    def forward(
        self, x: torch.Tensor, context: torch.Tensor | None = None, context_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        return x + recompute_in_backward(self._attend, x, context, context_mask)

    def _attend(self, x: torch.Tensor, context: torch.Tensor | None, context_mask: torch.Tensor | None) -> torch.Tensor:
        b, c, h, w = x.shape
        tokens = self.norm(x).flatten(2).transpose(1, 2)  # (B, HW, C)
        out = self.attn(tokens, context=context, context_mask=context_mask)
        return out.transpose(1, 2).reshape(b, c, h, w)


class _Stage(nn.ModuleList):
    """A ResBlock (or resampler) optionally followed by an AttentionBlock, run in order."""

    def forward(
        self, x: torch.Tensor, emb: torch.Tensor, context: torch.Tensor | None, context_mask: torch.Tensor | None
    ) -> torch.Tensor:  # type: ignore[override]
        for layer in self:
            if isinstance(layer, ResBlock):
                x = layer(x, emb)
            elif isinstance(layer, AttentionBlock):
                x = layer(x, context, context_mask)
            else:
                x = layer(x)
        return x


class UNet(nn.Module):
    """The ADM UNet: ``(x_t, t, emb_extra, context) -> raw output``.

    Conditioning hooks for variants (the decoder, the upsampler):

    - ``emb_extra`` (B, emb_dim) is added to the timestep embedding (GLIDE adds its
      pooled text state there; unCLIP adds the projected CLIP image embedding).
    - ``context`` (B, M, context_dim) are extra keys/values for every attention layer,
      with ``context_mask`` (B, M) True where a token is real.
    """

    def __init__(self, config: UNetConfig) -> None:
        super().__init__()
        self.config = cfg = config
        self.emb_dim = cfg.emb_dim
        self.time_embed = nn.Sequential(
            nn.Linear(cfg.base_channels, self.emb_dim), nn.SiLU(), nn.Linear(self.emb_dim, self.emb_dim)
        )
        use_attn_mid = bool(cfg.attention_resolutions) or cfg.context_dim is not None

        def res(i: int, o: int, **kw: bool) -> ResBlock:
            return ResBlock(
                i, o, self.emb_dim, dropout=cfg.dropout, use_scale_shift_norm=cfg.use_scale_shift_norm, **kw
            )

        def attn(ch: int) -> AttentionBlock:
            return AttentionBlock(ch, cfg.head_channels, cfg.context_dim)

        ch = cfg.base_channels
        self.input_conv = nn.Conv2d(cfg.in_channels, ch, 3, padding=1)
        skip_chs = [ch]
        side = cfg.image_size
        self.down = nn.ModuleList()
        for level, mult in enumerate(cfg.channel_mults):
            for _ in range(cfg.num_res_blocks):
                stage = _Stage([res(ch, mult * cfg.base_channels)])
                ch = mult * cfg.base_channels
                if side in cfg.attention_resolutions:
                    stage.append(attn(ch))
                self.down.append(stage)
                skip_chs.append(ch)
            if level != len(cfg.channel_mults) - 1:
                self.down.append(_Stage([res(ch, ch, down=True) if cfg.resblock_updown else Downsample(ch)]))
                skip_chs.append(ch)
                side //= 2

        self.middle = _Stage([res(ch, ch)] + ([attn(ch)] if use_attn_mid else []) + [res(ch, ch)])

        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(cfg.channel_mults))):
            for i in range(cfg.num_res_blocks + 1):
                stage = _Stage([res(ch + skip_chs.pop(), mult * cfg.base_channels)])
                ch = mult * cfg.base_channels
                if side in cfg.attention_resolutions:
                    stage.append(attn(ch))
                if level and i == cfg.num_res_blocks:
                    stage.append(res(ch, ch, up=True) if cfg.resblock_updown else Upsample(ch))
                    side *= 2
                self.up.append(stage)

        self.out = nn.Sequential(group_norm(ch), nn.SiLU(), zero_module(nn.Conv2d(ch, cfg.out_channels, 3, padding=1)))
        # Activation checkpointing (training only): each block's activations are recomputed
        # in backward instead of stored. Set by ``unclip train --grad-checkpointing``.
        self.grad_checkpointing = False

    @property
    def downsample_factor(self) -> int:
        """Input sides must be multiples of this."""
        return 2 ** (len(self.config.channel_mults) - 1)

    def forward(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        *,
        emb_extra: torch.Tensor | None = None,
        context: torch.Tensor | None = None,
        context_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Run the network.

        Args:
            x: (B, in_channels, H, W), H and W multiples of :attr:`downsample_factor`.
            t: (B,) timesteps (long or float).
            emb_extra: (B, emb_dim) added to the timestep embedding.
            context: (B, M, context_dim) tokens the attention layers also attend to.
            context_mask: (B, M) bool, True where a context token is real.
        Returns:
            (B, out_channels, H, W) raw output (eps, x0, v, ... as the caller trains it).
        """
        cfg = self.config
        if x.ndim != 4 or x.shape[1] != cfg.in_channels:
            raise InputError(f"UNet input x must have shape (B, {cfg.in_channels}, H, W), got {tuple(x.shape)}")
        f = self.downsample_factor
        if x.shape[-1] % f or x.shape[-2] % f:
            raise InputError(
                f"UNet input side {tuple(x.shape[-2:])} must be divisible by {f}; crop or pad the image to a "
                f"multiple of {f}"
            )
        if t.ndim != 1 or t.shape[0] != x.shape[0]:
            raise InputError(f"timesteps t must have shape ({x.shape[0]},), got {tuple(t.shape)}")
        if context is not None and cfg.context_dim is None:
            raise InputError("context was given to a UNet built without context_dim; set UNetConfig.context_dim")
        emb = self.time_embed(timestep_embedding(t, cfg.base_channels).to(self.input_conv.weight.dtype))
        if emb_extra is not None:
            if emb_extra.shape != emb.shape:
                raise InputError(
                    f"emb_extra must have shape {tuple(emb.shape)} (B, emb_dim), got {tuple(emb_extra.shape)}"
                )
            emb = emb + emb_extra.to(emb.dtype)
        run = self._checkpointed if self.grad_checkpointing and torch.is_grad_enabled() else _call
        h = self.input_conv(x)
        skips = [h]
        for stage in self.down:
            h = run(stage, h, emb, context, context_mask)
            skips.append(h)
        h = run(self.middle, h, emb, context, context_mask)
        for stage in self.up:
            h = run(stage, torch.cat([h, skips.pop()], dim=1), emb, context, context_mask)
        return self.out(h)

    @staticmethod
    def _checkpointed(block: nn.Module, *args: torch.Tensor | None) -> torch.Tensor:
        return torch.utils.checkpoint.checkpoint(block, *args, use_reentrant=False)


def _call(block: nn.Module, *args: torch.Tensor | None) -> torch.Tensor:
    return block(*args)
