"""Running diffusion upsamplers after the decoder: one stage or a cascade of them.

unCLIP (section 2.1) samples its two upsamplers with few DDIM steps (27 for 64 -> 256,
15 for 256 -> 1024). Each stage starts from Gaussian noise at its output size, is
conditioned on the previous image (no caption, no guidance) and runs at full resolution
even though it was trained on crops. The ratio of a stage is ``high_res / low_res`` of its
config; any input size works as long as the output side divides by the UNet's
downsampling factor.

A stage may instead start part-way (``start``, a timestep): from the bicubic upsample of
its input diffused forward to that timestep, q(x_t | bicubic(x_low)), then denoised with
``steps`` steps over [0, start] (CCDF, Chung et al. 2022, "Come-Closer-Diffuse-Faster").
With one step from a moderate timestep this is the network's estimate of E[x_0 | x_t, x_low],
close to the posterior mean, the PSNR-optimal output; a full sample from noise draws
detail instead and loses PSNR where the network is unsure (see ``benchmarks/upsampler_start_calibration.py``).

``back_projection`` > 0 then makes the output consistent with its input: that many rounds of
x <- x + bicubic(low - area(x)) (iterative back-projection, Irani & Peleg 1991; the data-consistency
step of ILVR/DDNM-style samplers), so the output's box-filtered downsample matches the input. It
keeps the stage's edges and removes the low-frequency colour drift a stage trained on degraded
inputs shows on clean ones. A stage's defaults (``default_steps``, ``default_start``,
``default_back_projection``) live in its ``config.json``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from ..diffusion import UPSAMPLER_DEFAULT_STEPS, DiffusionSettings, GaussianDiffusion, bind, sample, spaced_timesteps
from ..errors import InputError
from .degradations import resize
from .model import Upsampler

NOISE_START = "noise"  # the paper's sampling: from pure Gaussian noise at the last timestep


@dataclass
class CascadeStage:
    """A loaded upsampler with what it needs to sample: its diffusion settings and default step count."""

    model: Upsampler
    settings: DiffusionSettings
    steps: int = 27
    degradation: str = "blur"
    start: int | None = None  # None: from pure noise; else the timestep of a bicubic-started sampler
    back_projection: int = 0  # rounds of back-projection onto the input after sampling

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
    start: int | None = None,
    back_projection: int = 0,
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
        start: None samples from ``noise`` alone; a timestep t in [0, T - 1] starts from the
            bicubic upsample diffused to t with ``noise`` and runs ``steps`` (<= t + 1) steps
            over timesteps 0..t (see the module docstring).
        back_projection: rounds of :func:`back_project` onto the input after sampling.
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
    low = low_res_images.to(device).clamp(-1, 1)
    model_fn = bind(upsampler, low_res=low)
    diffusion, x_start = settings.make(), noise.to(device)
    if start is not None:
        diffusion, x_start = _bicubic_start(diffusion, low, x_start, start, steps)
        steps = None  # the truncated diffusion already has them
    out = sample(
        method,
        model_fn,
        diffusion,
        x_start,
        steps=steps,
        eta=eta,
        generator=generator,
        clip_x0=1.0,
        progress=progress,
    )
    return back_project(out.clamp(-1, 1), low, back_projection)


def back_project(images: torch.Tensor, low_res_images: torch.Tensor, rounds: int) -> torch.Tensor:
    """``rounds`` of x <- x + bicubic(low - area(x)), clamped to [-1, 1]: each round moves the
    output's box-filtered downsample closer to the low-resolution input (the residual shrinks
    geometrically, as area(bicubic(r)) is close to r)."""
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 0:
        raise InputError(f"back_projection must be a number of rounds >= 0, got {rounds!r}")
    low = low_res_images.to(images.dtype)
    x = images
    for _ in range(rounds):
        x = x + resize(low - resize(x, low.shape[-2:], "area"), x.shape[-2:], "bicubic")
    return x.clamp(-1, 1)


def _bicubic_start(
    diffusion: GaussianDiffusion, low: torch.Tensor, noise: torch.Tensor, start: int, steps: int
) -> tuple[GaussianDiffusion, torch.Tensor]:
    """The diffusion over timesteps 0..start with ``steps`` kept, and x_start ~ q(x_start | bicubic(low))."""
    total = diffusion.num_timesteps
    if isinstance(start, bool) or not isinstance(start, int) or not 0 <= start < total:
        raise InputError(f"start must be a timestep in [0, {total - 1}] (or None to start from noise), got {start!r}")
    if not 1 <= steps <= start + 1:
        raise InputError(f"starting at timestep {start} leaves room for 1..{start + 1} steps, got {steps}")
    up = resize(low, tuple(noise.shape[-2:]), "bicubic").clamp(-1, 1).to(noise.dtype)
    abar = float(diffusion.alphas_cumprod[start])
    x_start = abar**0.5 * up + (1.0 - abar) ** 0.5 * noise
    return diffusion.respace(spaced_timesteps(start + 1, steps)), x_start


def starts_per_stage(stages: Sequence[CascadeStage], start: int | str | None) -> list[int | None]:
    """Where each stage's sampler starts: None takes every stage's default, ``"noise"`` starts
    every stage from pure noise (the paper's sampling), an int is that timestep for every stage."""
    if start is None:
        return [stage.start for stage in stages]
    if start == NOISE_START:
        return [None] * len(stages)
    if isinstance(start, bool) or not isinstance(start, int):
        raise InputError(f"upsampler start must be None, {NOISE_START!r} or a timestep, got {start!r}")
    return [start] * len(stages)


def plan_stages(
    stages: Sequence[CascadeStage], steps: int | Sequence[int | None] | None, start: int | str | None
) -> list[tuple[int, int | None]]:
    """(steps, start) for each stage, from the overrides (see :func:`steps_per_stage`,
    :func:`starts_per_stage`). A stage whose stored start is overridden with ``"noise"`` and whose
    steps are not given samples with the paper's step count for its kind (27 blur, 15 BSR), not
    with the few steps its part-way start needs."""
    per_start = starts_per_stage(stages, start)
    per_steps = steps_per_stage(stages, steps)  # checks the list's length
    given = [steps] * len(stages) if steps is None or isinstance(steps, int) else list(steps)
    return [
        (UPSAMPLER_DEFAULT_STEPS.get(st.degradation, 27), t0)
        if t0 is None and st.start is not None and g is None
        else (n, t0)
        for st, n, t0, g in zip(stages, per_steps, per_start, given)
    ]


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
    start: int | str | None = None,
    shared_noise: bool = False,
) -> torch.Tensor:
    """Apply ``stages`` in order (e.g. 32 -> 128 -> 512): (B, 3, h, w) -> (B, 3, H, W).

    Args:
        stages: loaded upsamplers (:func:`load_upsampler`); an empty list returns ``images``.
        images: (B, 3, h, w) in [-1, 1], the decoder's output.
        steps: DDIM steps per stage: one int for all, a list with one entry per stage
            (None entries take the stage's default), or None for every stage's default.
        generator: CPU generator; stage noise is drawn from it in order, so a seed fixes the result.
        start: where each stage starts (:func:`starts_per_stage`): None, each stage's default.
        shared_noise: every image gets the same starting noise at each stage (one draw of
            batch 1), so images change only where their low-res inputs do.
    """
    x = images
    for stage, (n, t0) in zip(stages, plan_stages(stages, steps, start)):
        noise = None
        if shared_noise:
            h, w = (side * stage.high_res // stage.low_res for side in x.shape[-2:])
            noise = torch.randn(1, 3, h, w, generator=generator).expand(x.shape[0], -1, -1, -1)
        x = upsample(
            stage.model,
            stage.settings,
            x,
            steps=n,
            eta=eta,
            generator=generator,
            noise=noise,
            progress=progress,
            method=method,
            start=t0,
            back_projection=stage.back_projection,
        )
    return x
