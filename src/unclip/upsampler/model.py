"""The diffusion upsampler network (unCLIP section 2.1; ADM's ``SuperResModel``).

unCLIP's two upsamplers (64 -> 256 -> 1024) condition only on the low-resolution image:
no caption, no guidance, and no attention layers ("we only use spatial convolutions"),
so that the network trained on random crops of a quarter of the target side runs
unchanged on the full-size image. The low-resolution image is resized to the noisy
input's size and concatenated to it as three extra input channels.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError, InputError
from ..nn.unet import UNet, UNetConfig

_MODES = ("bicubic", "bilinear", "nearest")


@dataclass
class UpsamplerConfig:
    """Shape of an :class:`Upsampler` (flat, JSON-able).

    Attributes:
        low_res / high_res: sides of the conditioning image and of the output.
        base_channels, channel_mults, num_res_blocks, dropout, use_scale_shift_norm,
        resblock_updown, time_embed_mult: the conv-only UNet (see :class:`UNetConfig`).
        interpolation: how the low-resolution image is resized to x_t's size
            (``"bicubic"``, ``"bilinear"`` or ``"nearest"``).
        residual: the network predicts the clean image as the resized low-resolution
            image plus a correction (its output is added to the conditioning). Needs the
            ``"x0"`` prediction. Without it (``False``, the first shipped stage) the UNet
            must rebuild every pixel's absolute colour through GroupNorm, which removes the
            mean of each channel group over the crop: on flat-shaded images a crop is often
            one colour, and the colour of flat regions drifts (see ``docs/architecture.md``).
    """

    low_res: int = 32
    high_res: int = 128
    base_channels: int = 32
    channel_mults: tuple[int, ...] = (1, 2, 4)
    num_res_blocks: int = 2
    dropout: float = 0.0
    use_scale_shift_norm: bool = True
    resblock_updown: bool = True
    time_embed_mult: int = 4
    interpolation: str = "bicubic"
    residual: bool = False

    def __post_init__(self) -> None:
        self.channel_mults = tuple(int(m) for m in self.channel_mults)
        if self.low_res < 1 or self.high_res <= self.low_res:
            raise ConfigError(
                f"UpsamplerConfig needs 0 < low_res < high_res, got low_res={self.low_res}, high_res={self.high_res}"
            )
        if self.interpolation not in _MODES:
            raise ConfigError(f"UpsamplerConfig.interpolation={self.interpolation!r} must be one of {_MODES}")

    def unet_config(self) -> UNetConfig:
        return UNetConfig(
            in_channels=6,
            out_channels=3,
            base_channels=self.base_channels,
            channel_mults=self.channel_mults,
            num_res_blocks=self.num_res_blocks,
            attention_resolutions=(),
            image_size=self.high_res,
            dropout=self.dropout,
            context_dim=None,
            use_scale_shift_norm=self.use_scale_shift_norm,
            resblock_updown=self.resblock_updown,
            time_embed_mult=self.time_embed_mult,
        )


class Upsampler(nn.Module):
    """Conv-only UNet on ``cat([x_t, resize(low_res)])``: ``(x_t, t, low_res) -> (B, 3, H, W)``
    (plus ``resize(low_res)`` itself when ``config.residual``)."""

    def __init__(self, config: UpsamplerConfig) -> None:
        super().__init__()
        self.config = config
        self.unet = UNet(config.unet_config())

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, low_res: torch.Tensor) -> torch.Tensor:
        """Predict the raw output for noisy high-resolution images ``x_t``.

        Args:
            x_t: (B, 3, H, W) noisy images or crops; any H, W that are multiples of
                2 ** (levels - 1) (crops in training, the full ``high_res`` at inference).
            t: (B,) timesteps.
            low_res: (B, 3, h, w) the low-resolution image covering the same area as
                ``x_t``: the whole image at inference, the matching crop in crop training.
                Already at (H, W) is accepted too (then it is used as is).
        Returns:
            (B, 3, H, W).
        """
        if low_res.ndim != 4 or low_res.shape[:2] != (x_t.shape[0], 3):
            raise InputError(f"low_res must have shape ({x_t.shape[0]}, 3, h, w), got {tuple(low_res.shape)}")
        size = tuple(x_t.shape[-2:])
        h, w = low_res.shape[-2:]
        if h * size[1] != w * size[0]:
            raise InputError(
                f"low_res {h}x{w} and x_t {size[0]}x{size[1]} have different aspect ratios; low_res must cover the "
                "same area as x_t"
            )
        cond = low_res.to(x_t.dtype)
        if (h, w) != size:
            mode = self.config.interpolation
            kw = {} if mode == "nearest" else {"align_corners": False}
            cond = F.interpolate(cond, size=size, mode=mode, **kw)
        out = self.unet(torch.cat([x_t, cond], dim=1), t)
        return out + cond if self.config.residual else out


def check_prediction(config: UpsamplerConfig, prediction: str) -> None:
    """Refuse a residual upsampler paired with a diffusion that does not predict x0."""
    if config.residual and prediction != "x0":
        raise ConfigError(
            "a residual upsampler (output = low-res image + correction) predicts the clean image; its diffusion "
            f"needs prediction='x0', got {prediction!r}"
        )
