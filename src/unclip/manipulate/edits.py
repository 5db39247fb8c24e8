"""The edits of unCLIP section 3 as latents to decode: variations, interpolations, text diffs.

Each ``*_latent`` function builds the decoder-level :class:`BipartiteLatent` whose eta-0 (or,
for variations, eta > 0) decoding is the edit; callers that show several edits (the demo,
the report, the web app) join them with :meth:`BipartiteLatent.cat` and decode one batch.
:func:`vary`, :func:`interpolate` and :func:`text_diff` do the whole job for one input:
invert (unless given a latent), build, decode.

* variations (section 3.1): keep (z_i, x_T) and decode with eta > 0, so detail not held in
  z_i is redrawn, more as eta grows;
* interpolations (section 3.2): z_theta = slerp(z_i1, z_i2, theta), with x_T either the
  slerp of the two inverted noises (the end frames then reconstruct the inputs) or one fixed
  random x_T for every frame (only the CLIP embeddings are needed then);
* text diffs (section 3.3): z_d = norm(z_t - z_t0) from a target caption and a caption of the
  current image, z_theta = slerp(z_i, z_d, theta) for theta from 0 to a maximum, decoded with
  the inverted x_T held fixed.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

import torch

from ..errors import InputError
from .geometry import slerp, text_diff_direction, theta_schedule
from .invert import ImageInput, as_image_tensor, decode_latent, invert, reconstruct
from .latent import DEFAULT_GUIDANCE, DEFAULT_REFINE, DEFAULT_STEPS, MIN_ALPHA_BAR, BipartiteLatent

if TYPE_CHECKING:  # pragma: no cover
    from ..pipeline import UnCLIP

NOISE_PATHS = ("slerp", "fixed")

__all__ = [
    "NOISE_PATHS", "interpolation_latent", "fixed_noise_latent", "text_diff_latent", "vary", "interpolate",
    "text_diff", "decode", "as_latent",
]  # fmt: skip


def interpolation_latent(a: BipartiteLatent, b: BipartiteLatent, thetas: torch.Tensor) -> BipartiteLatent:
    """Frames slerping z_i and x_T from latent ``a`` (theta 0) to ``b`` (theta 1): batch len(thetas)."""
    if len(a) != 1 or len(b) != 1:
        raise InputError("interpolate takes one image (or latent) at each end")
    shape = a.noise.shape[1:]
    if b.noise.shape[1:] != shape or b.image_embed.shape[1:] != a.image_embed.shape[1:]:
        raise InputError(
            f"cannot interpolate latents of different sizes: {tuple(a.noise.shape[1:])} and {tuple(b.noise.shape[1:])}"
        )
    z = slerp(a.image_embed[0].cpu(), b.image_embed[0].cpu(), thetas)
    x_T = slerp(a.noise[0].flatten().cpu(), b.noise[0].flatten().cpu(), thetas).view(-1, *shape)
    return BipartiteLatent(z, x_T, a.steps, a.guidance, None, a.model, a.min_alpha_bar)


def fixed_noise_latent(
    z_a: torch.Tensor, z_b: torch.Tensor, thetas: torch.Tensor, noise: torch.Tensor, *, steps: int, guidance: float
) -> BipartiteLatent:
    """Frames slerping z_i from ``z_a`` (E,) to ``z_b`` (E,), each decoded from the same ``noise`` (1, 3, S, S)."""
    z = slerp(z_a, z_b, thetas)
    return BipartiteLatent(z, noise.expand(len(thetas), -1, -1, -1), steps, guidance, None, "", MIN_ALPHA_BAR)


def text_diff_latent(
    latent: BipartiteLatent, z_t: torch.Tensor, z_t0: torch.Tensor, thetas: torch.Tensor
) -> BipartiteLatent:
    """Frames z_theta = slerp(z_i, norm(z_t - z_t0), theta) with the latent's x_T held fixed."""
    if len(latent) != 1:
        raise InputError("text_diff takes one image (or latent)")
    z_i = latent.image_embed[0].cpu()
    # z_d at |z_i|: unit for our CLIP (the paper's slerp on the sphere); raw embeddings (Karlo) keep their norm
    z = slerp(z_i, text_diff_direction(z_t, z_t0) * z_i.norm(), thetas)
    x_T = latent.noise.cpu().expand(len(thetas), -1, -1, -1)
    caps = None if latent.captions is None else latent.captions * len(thetas)
    return replace(latent.decoder_level(), image_embed=z, noise=x_T, captions=caps)


def as_latent(
    pipe: "UnCLIP", image: ImageInput | BipartiteLatent, steps: int, guidance: float, refine: int, progress: bool
) -> BipartiteLatent:
    """A given latent (on the pipeline's device), or the decoder-level inversion of an image."""
    if isinstance(image, BipartiteLatent):
        return image.to(pipe.device)
    return invert(pipe, image, steps=steps, guidance=guidance, refine=refine, progress=progress)


def decode(
    pipe: "UnCLIP",
    latent: BipartiteLatent,
    *,
    eta: float = 0.0,
    generator: torch.Generator | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """Decode a decoder-level latent with its own steps, guidance and noise level: (B, 3, S, S)."""
    return decode_latent(
        pipe, latent.image_embed, latent.noise, steps=latent.steps, guidance=latent.guidance, eta=eta,
        generator=generator, captions=latent.captions, min_alpha_bar=latent.min_alpha_bar, progress=progress,
    )  # fmt: skip


def _generator(pipe: "UnCLIP", seed: int) -> torch.Generator:
    device = pipe.device if pipe.device.type != "cpu" else "cpu"
    return torch.Generator(device=device).manual_seed(int(seed))


@torch.no_grad()
def vary(
    pipe: "UnCLIP",
    image: ImageInput | BipartiteLatent,
    *,
    eta: float = 1.0,
    n: int = 4,
    seed: int = 0,
    steps: int = DEFAULT_STEPS,
    guidance: float = DEFAULT_GUIDANCE,
    refine: int = DEFAULT_REFINE,
    size: int | None = None,
    upsampler_steps: int | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """Variations of image(s) (section 3.1): (B * n, 3, S, S), the n variations of each image in turn.

    Each image is inverted once; its (z_i, x_T) is decoded n times by DDIM with ``eta``,
    whose fresh noise comes from ``seed``. eta 0 reconstructs the image n times; larger eta
    keeps what z_i holds (for shapes: colour and shape) while redrawing the rest. A given
    :class:`BipartiteLatent` is used as it is (its own steps and guidance).

    ``size`` above the decoder's side returns images at that side, through the upsampler
    stages. At eta 0 the image is inverted through them too (:func:`invert` with ``size``),
    so the reconstruction is the input at that side; a given latent is decoded through its
    own stage noises when it has them up to ``size``. Otherwise (eta > 0, or a decoder-level
    latent) the variations are upsampled with fresh noise from ``seed``, as generation does.
    ``upsampler_steps``: DDIM steps per stage (None: each stage's default).
    """
    if int(n) < 1:
        raise InputError(f"n must be >= 1, got {n}")
    side = pipe.decoder.config.image_size
    target = side if size is None else pipe.resolve_size(size)
    if target > side and eta == 0.0:
        if isinstance(image, BipartiteLatent):
            lat = image.to(pipe.device)
        else:
            lat = invert(
                pipe, image, size=target, steps=steps, upsampler_steps=upsampler_steps, guidance=guidance,
                refine=refine, progress=progress,
            )  # fmt: skip
        if lat.size == target:  # one eta-0 decode serves all n copies
            return reconstruct(pipe, lat, progress=progress).repeat_interleave(int(n), dim=0)
    lat = as_latent(pipe, image, steps, guidance, refine, progress).decoder_level()
    x = decode(pipe, lat.repeat_each(int(n)), eta=eta, generator=_generator(pipe, seed), progress=progress)
    if target == side:
        return x
    return pipe.upsample_to(x, target, seed=seed, steps=upsampler_steps, progress=progress)


@torch.no_grad()
def interpolate(
    pipe: "UnCLIP",
    a: ImageInput | BipartiteLatent,
    b: ImageInput | BipartiteLatent,
    *,
    frames: int = 8,
    noise: str = "slerp",
    seed: int = 0,
    steps: int = DEFAULT_STEPS,
    guidance: float = DEFAULT_GUIDANCE,
    refine: int = DEFAULT_REFINE,
    progress: bool = False,
) -> torch.Tensor:
    """Interpolate between two images (section 3.2): (frames, 3, S, S), theta = 0 .. 1.

    ``noise="slerp"`` slerps the two inverted x_T too, so the end frames reconstruct the
    inputs; ``noise="fixed"`` decodes every frame from one random x_T drawn from ``seed``
    (no inversion, only the CLIP embeddings), which shows what z_i alone carries.
    """
    if noise not in NOISE_PATHS:
        raise InputError(f"noise must be one of {', '.join(NOISE_PATHS)}, got {noise!r}")
    thetas = theta_schedule(frames).to(torch.float32)
    size = pipe.decoder.config.image_size
    if noise == "slerp":
        la, lb = (as_latent(pipe, im, steps, guidance, refine, progress) for im in (a, b))
        return decode(pipe, interpolation_latent(la, lb, thetas), progress=progress)
    ends = []
    for im in (a, b):
        if isinstance(im, BipartiteLatent):
            ends.append(im.image_embed.cpu())
        else:
            ends.append(pipe.clip.encode_image(as_image_tensor(im, size).to(pipe.device)).float().cpu())
    if ends[0].shape[0] != 1 or ends[1].shape[0] != 1:
        raise InputError("interpolate takes one image (or latent) at each end")
    x_T = torch.randn(1, 3, size, size, generator=torch.Generator(device="cpu").manual_seed(int(seed)))
    lat = fixed_noise_latent(ends[0][0], ends[1][0], thetas, x_T, steps=steps, guidance=guidance)
    return decode(pipe, lat, progress=progress)


@torch.no_grad()
def text_diff(
    pipe: "UnCLIP",
    image: ImageInput | BipartiteLatent,
    from_text: str,
    to_text: str,
    *,
    max_theta: float | None = None,
    frames: int = 5,
    steps: int = DEFAULT_STEPS,
    guidance: float = DEFAULT_GUIDANCE,
    refine: int = DEFAULT_REFINE,
    progress: bool = False,
) -> torch.Tensor:
    """Edit an image towards a caption (section 3.3): (frames, 3, S, S) for theta = 0 .. max_theta.

    ``from_text`` describes the current image; "" is a neutral caption. Every frame is
    decoded from the image's inverted x_T, so theta 0 reconstructs the image. ``max_theta``
    None takes the model's calibrated default (``model.json`` defaults ``text_diff_max_theta``).
    """
    if max_theta is None:
        max_theta = pipe.defaults.text_diff_max_theta
    if not isinstance(to_text, str) or not to_text.strip():
        raise InputError("text_diff needs a non-empty target caption (--to)")
    lat = as_latent(pipe, image, steps, guidance, refine, progress)
    z_t = pipe.clip.encode_text([to_text, from_text or ""]).float().cpu()
    thetas = theta_schedule(frames, max_theta).to(torch.float32)
    return decode(pipe, text_diff_latent(lat, z_t[0], z_t[1], thetas), progress=progress)
