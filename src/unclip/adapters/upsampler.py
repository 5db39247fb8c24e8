"""Karlo's 64 -> 256 upsampler (diffusers ``UNet2DModel`` x 2) behind our upsampler call.

Our :class:`unclip.upsampler.model.Upsampler` is called as ``upsampler(x_t, t, low_res)``
and resizes the low-resolution image itself. Karlo's super-resolution model is two UNets
over the channel concatenation [x_t, bicubic(low_res)]: ``super_res_first`` for every step
but the last, ``super_res_last`` for the last (diffusers' UnCLIPPipeline switches on the
step index). Every sampler here ends on timestep 0 (our respacing and Karlo's always keep
it), so :class:`KarloUpsampler` switches on t == 0, which picks the same network at the
same step and also holds for DDIM inversion, whose first step starts at t = 0.

The low-resolution image is resized like diffusers does it: bicubic, antialiased, corners
not aligned, unclamped. No guidance (unCLIP section 2.1).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..diffusion import bind, ddpm_sample
from ..errors import InputError
from .schedules import StageSchedule


@dataclass(frozen=True)
class KarloUpsamplerInfo:
    """What :func:`unclip.upsampler.cascade.upsample` and the pipeline read from ``config``."""

    low_res: int
    high_res: int
    channel_mults: tuple[int, ...]


class KarloUpsampler(nn.Module):
    """``upsampler(x_t, t, low_res)`` over Karlo's ``super_res_first`` / ``super_res_last``.

    Args:
        first, last: the two ``UNet2DModel`` (6 input channels, 3 output).
        low_res: the decoder's side (64 for Karlo); ``first.config.sample_size`` is the output side.
    """

    def __init__(self, first: nn.Module, last: nn.Module, low_res: int) -> None:
        super().__init__()
        for name, net in (("super_res_first", first), ("super_res_last", last)):
            if net.config.in_channels != 2 * net.config.out_channels:
                raise InputError(
                    f"{name} must take 2 x {net.config.out_channels} input channels ([x_t, upsampled image]), got "
                    f"{net.config.in_channels}"
                )
        self.first, self.last = first, last
        high = int(first.config.sample_size)
        chans = tuple(int(c) for c in first.config.block_out_channels)
        self.config = KarloUpsamplerInfo(int(low_res), high, tuple(max(1, c // chans[0]) for c in chans))

    @property
    def dtype(self) -> torch.dtype:
        return self.first.conv_in.weight.dtype

    def condition(self, low_res: torch.Tensor, side: tuple[int, int]) -> torch.Tensor:
        """The low-resolution image (B, 3, h, w) resized to ``side`` as Karlo does (bicubic, antialiased)."""
        if tuple(low_res.shape[-2:]) == tuple(side):
            return low_res
        return F.interpolate(low_res, size=list(side), mode="bicubic", align_corners=False, antialias=True)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, low_res: torch.Tensor) -> torch.Tensor:
        """eps (B, 3, H, W), float32; ``super_res_last`` where t == 0, ``super_res_first`` elsewhere."""
        if low_res.shape[0] != x_t.shape[0]:
            raise InputError(f"low_res has batch {low_res.shape[0]} but x_t has {x_t.shape[0]}")
        dt = self.dtype
        inp = torch.cat([x_t, self.condition(low_res.to(x_t), tuple(x_t.shape[-2:]))], dim=1).to(dt)
        t = t.expand(x_t.shape[0]) if t.dim() == 0 else t
        final = t == 0
        if bool(final.all()):
            return self.last(sample=inp, timestep=t).sample.float()
        if not bool(final.any()):
            return self.first(sample=inp, timestep=t).sample.float()
        out = self.first(sample=inp, timestep=t).sample.float()
        return torch.where(final[:, None, None, None], self.last(sample=inp, timestep=t).sample.float(), out)


@torch.no_grad()
def karlo_upsample(
    upsampler: KarloUpsampler,
    schedule: StageSchedule,
    low_res_images: torch.Tensor,
    *,
    steps: int = 7,
    noise: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """Karlo's super-resolution sampling with our DDPM sampler: (B, 3, h, w) -> (B, 3, H, W) in [-1, 1].

    DDPM over Karlo's ``steps`` timesteps (default 7) with the posterior variance
    (``fixed_small_log``) and x0 clipped to the stage's range; no guidance. ``noise``
    (B, 3, H, W) fixes the start (else drawn from ``generator``), as does ``super_res_latents``.
    """
    b = low_res_images.shape[0]
    side = low_res_images.shape[-1] * upsampler.config.high_res // upsampler.config.low_res
    dev = next(upsampler.parameters()).device
    if noise is None:
        noise = torch.randn(b, 3, side, side, generator=generator)
    elif tuple(noise.shape) != (b, 3, side, side):
        raise InputError(f"noise must have shape {(b, 3, side, side)}, got {tuple(noise.shape)}")
    cond = upsampler.condition(low_res_images.to(dev).float(), (side, side))
    model_fn = bind(upsampler, low_res=cond)
    x = ddpm_sample(
        model_fn,
        schedule.diffusion(steps),
        noise.to(dev).float(),
        generator=generator,
        clip_x0=schedule.clip_x0,
        progress=progress,
    )
    return x.clamp(-1, 1)
