"""Running diffusion upsamplers after the decoder: one stage or a cascade of them.

unCLIP (section 2.1) samples its two upsamplers with few DDIM steps (27 for 64 -> 256,
15 for 256 -> 1024). Each stage starts from Gaussian noise at its output size, is
conditioned on the previous image (no caption, no guidance) and runs at full resolution
even though it was trained on crops. The ratio of a stage is ``high_res / low_res`` of its
config; any input size works as long as the output side divides by the UNet's
downsampling factor.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from ..diffusion import DiffusionSettings, bind, sample
from ..errors import InputError
from .model import Upsampler


@dataclass
class CascadeStage:
    """A loaded upsampler with what it needs to sample: its diffusion settings and default step count."""

    model: Upsampler
    settings: DiffusionSettings
    steps: int = 27
    degradation: str = "blur"

    @property
    def low_res(self) -> int:
        return self.model.config.low_res

    @property
    def high_res(self) -> int:
        return self.model.config.high_res


@torch.no_grad()
def upsample(
    upsampler: Upsampler,
    settings: DiffusionSettings,
    low_res_images: torch.Tensor,
    *,
    steps: int = 27,
    eta: float = 0.0,
    generator: torch.Generator | None = None,
    noise: torch.Tensor | None = None,
    progress: bool = False,
    method: str = "ddim",
) -> torch.Tensor:
    """Upsample images with one diffusion upsampler and DDIM (or ``method="dpmpp2m"``).

    Args:
        upsampler: the network (its config's ``high_res / low_res`` is the ratio).
        settings: the diffusion it was trained with.
        low_res_images: (B, 3, h, w) in [-1, 1]; typically h = w = ``config.low_res``.
        steps: DDIM steps (the paper: 27 for the first stage, 15 for the second).
        eta: DDIM eta (0: deterministic given the starting noise).
        generator: CPU generator for the starting noise (and eta > 0 noise).
        noise: (B, 3, H, W) starting noise; drawn from ``generator`` when omitted.
    Returns:
        (B, 3, H, W) in [-1, 1] with H = h * high_res / low_res (W likewise).
    """
    cfg = upsampler.config
    if low_res_images.ndim != 4 or low_res_images.shape[1] != 3:
        raise InputError(f"low_res_images must have shape (B, 3, h, w), got {tuple(low_res_images.shape)}")
    h, w = low_res_images.shape[-2:]
    out_h, out_w = h * cfg.high_res / cfg.low_res, w * cfg.high_res / cfg.low_res
    factor = 2 ** (len(cfg.channel_mults) - 1)
    if out_h != int(out_h) or out_w != int(out_w) or int(out_h) % factor or int(out_w) % factor:
        raise InputError(
            f"a {h}x{w} input gives a {out_h:g}x{out_w:g} output at ratio {cfg.high_res}/{cfg.low_res}; "
            f"the output sides must be whole multiples of {factor}: pass images of side {cfg.low_res}"
        )
    device = next(upsampler.parameters()).device
    b = low_res_images.shape[0]
    if noise is None:
        noise = torch.randn(b, 3, int(out_h), int(out_w), generator=generator)
    elif tuple(noise.shape) != (b, 3, int(out_h), int(out_w)):
        raise InputError(f"noise must have shape {(b, 3, int(out_h), int(out_w))}, got {tuple(noise.shape)}")
    model_fn = bind(upsampler, low_res=low_res_images.to(device).clamp(-1, 1))
    out = sample(
        method,
        model_fn,
        settings.make(),
        noise.to(device),
        steps=steps,
        eta=eta,
        generator=generator,
        clip_x0=1.0,
        progress=progress,
    )
    return out.clamp(-1, 1)


def steps_per_stage(stages: Sequence[CascadeStage], steps: int | Sequence[int | None] | None) -> list[int]:
    """DDIM steps for each stage: one int for all, one entry per stage (None: the stage's
    default), or None for every stage's default."""
    if steps is None or isinstance(steps, int):
        per = [steps] * len(stages)
    else:
        per = list(steps)
        if len(per) != len(stages):
            raise InputError(
                f"upsampler steps has {len(per)} entries for {len(stages)} upsampler stages; give one per stage (or "
                "one number for all)"
            )
    out = [int(n) if n is not None else int(st.steps) for st, n in zip(stages, per)]
    if any(n < 1 for n in out):
        raise InputError(f"upsampler steps must be >= 1, got {out}")
    return out


@torch.no_grad()
def run_cascade(
    stages: Sequence[CascadeStage],
    images: torch.Tensor,
    *,
    steps: Sequence[int | None] | int | None = None,
    eta: float = 0.0,
    generator: torch.Generator | None = None,
    progress: bool = False,
    method: str = "ddim",
) -> torch.Tensor:
    """Apply ``stages`` in order (e.g. 32 -> 128 -> 512): (B, 3, h, w) -> (B, 3, H, W).

    Args:
        stages: loaded upsamplers (:func:`load_upsampler`); an empty list returns ``images``.
        images: (B, 3, h, w) in [-1, 1], the decoder's output.
        steps: DDIM steps per stage: one int for all, a list with one entry per stage
            (None entries take the stage's default), or None for every stage's default.
        generator: CPU generator; stage noise is drawn from it in order, so a seed fixes the result.
    """
    x = images
    for stage, n in zip(stages, steps_per_stage(stages, steps)):
        x = upsample(
            stage.model, stage.settings, x, steps=n, eta=eta, generator=generator, progress=progress, method=method
        )
    return x
