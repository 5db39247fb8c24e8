"""DDIM inversion and decoding of the bipartite latent, through the decoder and the upsampler stages.

:func:`invert` gives an image's latent: z_i from CLIP, then x_T by DDIM inversion under the
decoder conditioned on z_i, then (when ``size`` asks for more than the decoder's side) one
noise per upsampler stage (an EDICT pair by default), each stage inverted on the input at
its own side and conditioned on the level below. :func:`reconstruct` runs the same chain forwards; at eta 0
it retraces the inversions. A model without stages, or ``size=None``, is the chain of the
decoder alone: one code path for both.

Conditioning and guidance. DDIM inversion runs the sampler's deterministic update
backwards, so it is exact only when sampling uses the same model function as inversion:
the same z_i, caption and guidance scale. Every function here therefore takes one
``guidance`` (default 1.0: no classifier-free guidance, the plain conditional decoder,
which inverts best; with guidance > 1 the guided eps field is less smooth and the round
trip loses a few dB) and uses it for both inversion and decoding, and the latent records
the steps and guidance it was inverted with. The caption of an arbitrary input image is
unknown, so by default the decoder's caption is *dropped* (``text_keep=False``: its text
context is masked and a learned null vector replaces the pooled text state). The decoder
was trained with the caption dropped half the time, so this is an in-distribution
condition, unlike an empty caption ``""`` (which tokenizes to just the start and end
tokens, never seen in training). Pass ``caption=`` to condition on a caption instead.
Classifier-free guidance then contrasts z_i against the null embedding.

Noise levels. The cosine schedule ends at alpha-bar ~ 2e-9 (t = T - 1). A DDIM step down
from there divides by sqrt(alpha-bar) ~ 5e-5, so any mismatch between the eps the inversion
used and the eps the sampler sees is amplified ~20,000 times: inverting to T - 1
reconstructs nothing (measured: 5 dB PSNR on the shipped model). The manipulations
therefore run DDIM over evenly spaced timesteps from 0 to the last timestep with alpha-bar
>= ``MIN_ALPHA_BAR`` (2e-3: x_T keeps 4.5 % of the image's amplitude, 95.5 % noise; the
paper's own schedules stop at a similar level), see :func:`manipulation_diffusion`.

Which image conditions a stage's inversion (``condition=``):

* ``"decoded"`` (default): the eta-0 reconstruction of the level below, i.e. exactly what
  the stage will be conditioned on when the latent is decoded. Inversion and decoding then
  use the same model function, so the stage's round trip is as exact as its own
  inversion, whatever error the level below made; the stage's noise even absorbs that error
  (measured on the tiny model: the top level beats the decoder level by 1-3 dB). Costs one
  extra eta-0 decode per level.
* ``"input"``: the input resized to the side below. Simpler, but decoding then conditions
  on the decoded image instead, and the mismatch in the eps the stage predicts is amplified
  by 1/sqrt(alpha-bar) ~ 22 at the top noise level (see below): measured 6-8 dB worse on
  the tiny model (20-22 dB vs 27-28 dB at 64 px, refine 2).

How the stages are inverted (``stage_inversion=``):

* ``"edict"`` (default): EDICT's coupled sequences (:mod:`unclip.diffusion.edict`), exact
  by algebra whatever the network does; each stage keeps a noise pair. Why not DDIM: the
  shipped upsampler predicts x0 as the bicubic image plus a correction, and at the clean end
  it does not pass its input's fine detail through (given an outside image at sigma 0.006
  it returns 22 dB of it). DDIM's last step returns that x0, so no noise decodes to the
  outside image: DDIM inversion of the stage stalls at 23 dB with or without refinement or
  more steps, where EDICT gives the input back at over 80 dB (``benchmarks/inversion_defaults.py``).
  The pair absorbs the detail the network drops and is not a sample of N(0, I), so at
  eta > 0 an EDICT stage samples afresh from Gaussian noise, as generation does.
* ``"ddim"``: one DDIM-inverted noise per stage (``refine`` applies); exact only for a
  stage whose network can reach the image, and the noise then also serves eta > 0.

Schedules. Every level runs over :func:`manipulation_diffusion` (evenly spaced timesteps up
to the last with alpha-bar >= ``min_alpha_bar``) without clipping x0, in both directions;
:func:`unclip.upsampler.cascade.upsample` instead respaces over all timesteps and clips,
neither of which can be inverted. The upsamplers sample without guidance (section 2.1), so
their model function is the network bound to its low-resolution image, the same for
inversion and decoding. Each level's noise therefore still carries ~4.5% of the image's
amplitude and is not a sample of N(0, I): decode it here, not with :meth:`UnCLIP.upsample_to`.

Where it is inexact. The decoder level is inexact as documented in :mod:`unclip.manipulate`
(shrinks with ``steps`` and ``refine``). A DDIM-inverted stage is inexact in the same way,
and with ``condition="input"`` the error of the level below adds to it, amplified.
Variations (eta > 0) and edits of z_i change the image below a stage, so its noise, fitted
to the reconstruction, no longer reproduces the input's detail exactly.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence, Union

import torch
import torch.nn.functional as F
from PIL import Image

from ..decoder.conditioning import decoder_model_fn
from ..diffusion import GaussianDiffusion, bind, ddim_invert, ddim_sample, edict_invert, edict_sample
from ..diffusion.edict import DEFAULT_MIX
from ..errors import InputError
from ..storage.imageio import pil_to_tensor
from ..upsampler.cascade import steps_per_stage, upsample
from .latent import DEFAULT_GUIDANCE, DEFAULT_REFINE, DEFAULT_STEPS, MIN_ALPHA_BAR, BipartiteLatent

if TYPE_CHECKING:  # pragma: no cover
    from ..pipeline import UnCLIP
    from ..upsampler.cascade import CascadeStage

ImageInput = Union[Image.Image, Sequence[Image.Image], torch.Tensor]
CONDITIONS = ("input", "decoded")
STAGE_INVERSIONS = ("edict", "ddim")

__all__ = [
    "CONDITIONS", "STAGE_INVERSIONS", "ImageInput", "as_image_tensor", "manipulation_model_fn",
    "manipulation_diffusion", "decode_latent", "invert", "reconstruct",
]  # fmt: skip


def as_image_tensor(images: ImageInput, size: int) -> torch.Tensor:
    """PIL image(s) or a tensor in [-1, 1] -> float tensor (B, 3, size, size) in [-1, 1].

    PIL images are centre-cropped and resized (:func:`unclip.storage.imageio.pil_to_tensor`);
    square tensors of another size are resized with antialiased bilinear filtering.
    """
    if isinstance(images, torch.Tensor):
        x = images.unsqueeze(0) if images.dim() == 3 else images
        if x.dim() != 4 or x.shape[1] != 3:
            raise InputError(f"image tensors must be (B, 3, H, W) or (3, H, W) in [-1, 1], got {tuple(images.shape)}")
        if x.shape[-2] != x.shape[-1]:
            raise InputError(
                f"image tensors must be square, got {tuple(x.shape[-2:])}; pass PIL images to centre-crop them"
            )
        x = x.float()
        if x.shape[-1] != size:
            x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False).clamp(-1, 1)
        return x
    if isinstance(images, Image.Image) or (
        isinstance(images, Sequence) and images and all(isinstance(i, Image.Image) for i in images)
    ):
        return pil_to_tensor(images, size=size)
    raise InputError(f"images must be PIL images or a (B, 3, H, W) tensor in [-1, 1], got {type(images).__name__}")


def manipulation_model_fn(
    pipe: "UnCLIP", image_embed: torch.Tensor, captions: list[str] | None = None, guidance: float = DEFAULT_GUIDANCE
):
    """The decoder's model function for the manipulations: conditioned on z_i, the caption
    dropped when ``captions`` is None (see the module docstring)."""
    b = image_embed.shape[0]
    if captions is not None and len(captions) != b:
        raise InputError(f"{len(captions)} captions for {b} images")
    tokens = pipe.clip.tokenize(captions if captions is not None else [""] * b)
    return decoder_model_fn(pipe.decoder, tokens, image_embed, guidance=guidance, use_caption=captions is not None)


def manipulation_diffusion(
    diffusion: GaussianDiffusion, steps: int, min_alpha_bar: float = MIN_ALPHA_BAR
) -> GaussianDiffusion:
    """``diffusion`` respaced to ``steps`` timesteps evenly spaced from 0 to the top level.

    The top timestep is the last with alpha-bar >= ``min_alpha_bar`` (see the module
    docstring: inverting to alpha-bar ~ 0 is hopelessly ill-conditioned). Pass the result
    to the samplers with ``steps=None``; they call the network with original timesteps.
    """
    steps = _check_steps(steps)
    if not 0.0 < float(min_alpha_bar) < 1.0:
        raise InputError(f"min_alpha_bar must lie in (0, 1), got {min_alpha_bar}")
    above = torch.nonzero(diffusion.alphas_cumprod >= float(min_alpha_bar)).flatten()
    top = int(above.max()) if above.numel() else diffusion.num_timesteps - 1
    if steps > top + 1:
        raise InputError(f"steps={steps} exceeds the {top + 1} timesteps up to the top level t={top}; use fewer steps")
    ts = sorted({int(round(v)) for v in torch.linspace(0, top, steps, dtype=torch.float64).tolist()})
    return diffusion.respace(ts)


def _check_steps(steps: int) -> int:
    if int(steps) < 1:
        raise InputError(f"steps must be >= 1, got {steps}")
    return int(steps)


@torch.no_grad()
def decode_latent(
    pipe: "UnCLIP",
    image_embed: torch.Tensor,
    noise: torch.Tensor,
    *,
    steps: int = DEFAULT_STEPS,
    guidance: float = DEFAULT_GUIDANCE,
    eta: float = 0.0,
    generator: torch.Generator | None = None,
    captions: list[str] | None = None,
    min_alpha_bar: float = MIN_ALPHA_BAR,
    progress: bool = False,
) -> torch.Tensor:
    """DDIM-decode (z_i (B, E), x_T (B, 3, S, S)) at the decoder's level: images (B, 3, S, S) in [-1, 1].

    x0 estimates are not clipped, exactly as in :func:`invert`, so eta 0 retraces the
    inversion; the final images are clamped to [-1, 1].
    """
    model_fn = manipulation_model_fn(pipe, image_embed, captions, guidance)
    diffusion = manipulation_diffusion(pipe.decoder_diffusion, steps, min_alpha_bar)
    x = ddim_sample(model_fn, diffusion, noise.to(pipe.device).float(), eta=eta, generator=generator, progress=progress)
    return x.clamp(-1, 1)


def _stage_fn(stage: "CascadeStage", low_res: torch.Tensor):
    """The stage's network bound to its conditioning image: no caption, no guidance (section 2.1)."""
    return bind(stage.model, low_res=low_res.clamp(-1, 1))


def _decode_stage(
    stage: "CascadeStage",
    low_res: torch.Tensor,
    diffusion: GaussianDiffusion,
    noise: torch.Tensor,
    partner: torch.Tensor | None,
    mix: float,
    *,
    eta: float = 0.0,
    generator: torch.Generator | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """One stage from its noise (and EDICT partner) to images in [-1, 1], conditioned on ``low_res``.

    An EDICT pair decodes exactly at eta 0; at eta > 0 it is no starting point (see the
    module docstring), so the stage samples afresh as generation does.
    """
    fn = _stage_fn(stage, low_res)
    if partner is None:
        x = ddim_sample(fn, diffusion, noise.float(), eta=eta, generator=generator, progress=progress)
    elif eta == 0.0:
        x = edict_sample(fn, diffusion, noise.float(), partner.float(), mix=mix, progress=progress)
    else:
        n = diffusion.num_timesteps
        return upsample(
            stage.model,
            stage.settings,
            low_res,
            steps=n,
            eta=eta,
            generator=generator,
            progress=progress,
            start=stage.start,
            back_projection=stage.back_projection,
        )
    return x.clamp(-1, 1)


def _chain(pipe: "UnCLIP", size: int | None) -> list["CascadeStage"]:
    """The upsampler stages up to ``size``; none for ``size`` None or the decoder's own side."""
    if size is None or int(size) == pipe.decoder.config.image_size:
        return []
    return pipe.stage_chain(size)


@torch.no_grad()
def invert(
    pipe: "UnCLIP",
    images: ImageInput,
    *,
    size: int | None = None,
    steps: int = DEFAULT_STEPS,
    upsampler_steps: int | Sequence[int | None] | None = None,
    guidance: float = DEFAULT_GUIDANCE,
    refine: int = DEFAULT_REFINE,
    captions: list[str] | None = None,
    min_alpha_bar: float = MIN_ALPHA_BAR,
    condition: str = "decoded",
    stage_inversion: str = "edict",
    mix: float = DEFAULT_MIX,
    progress: bool = False,
) -> BipartiteLatent:
    """Encode images to their bipartite latent (section 3), through the stages up to ``size``.

    Args:
        pipe: a loaded :class:`~unclip.pipeline.UnCLIP`.
        images: PIL image(s) (centre-cropped) or a square tensor (B, 3, H, W) in [-1, 1].
        size: the top side: None (or the decoder's side) inverts the decoder alone; a larger
            side also inverts the upsampler stages that reach it.
        steps, guidance, captions: of the decoder's inversion (caption dropped unless
            ``captions`` is given); decode with the same (:func:`reconstruct` does).
        refine: fixed-point iterations per step of every DDIM inversion, (1 + refine) model calls per step.
        min_alpha_bar: the noise level every level inverts to.
        upsampler_steps: DDIM steps per stage: one int for all, one entry per stage (None
            entries take the stage's default), or None for every stage's default.
        condition: what conditions each stage's inversion: ``"decoded"``, the eta-0
            reconstruction of the level below (exact round trips), or ``"input"``, the
            resized input (see the module docstring).
        stage_inversion: ``"edict"`` (exact noise pairs; ``mix`` is EDICT's p) or ``"ddim"``
            (one noise per stage), see the module docstring.
    Returns:
        z_i (B, E), x_T (B, 3, S, S) and one (B, 3, H_k, H_k) noise per stage (and its EDICT
        partner); ``extra`` records ``refine`` (and ``size`` and ``condition`` with stages).
    """
    if condition not in CONDITIONS:
        raise InputError(f"condition must be one of {', '.join(CONDITIONS)}, got {condition!r}")
    if stage_inversion not in STAGE_INVERSIONS:
        raise InputError(f"stage_inversion must be one of {', '.join(STAGE_INVERSIONS)}, got {stage_inversion!r}")
    steps = _check_steps(steps)
    chain = _chain(pipe, size)
    per_steps = steps_per_stage(chain, upsampler_steps)
    side = pipe.decoder.config.image_size
    top = chain[-1].high_res if chain else side
    x_top = as_image_tensor(images, top).to(pipe.device)
    levels = [as_image_tensor(x_top, side)] + [as_image_tensor(x_top, st.high_res) for st in chain]
    z_i = pipe.clip.encode_image(levels[0]).float()
    model_fn = manipulation_model_fn(pipe, z_i, captions, guidance)
    diffusion = manipulation_diffusion(pipe.decoder_diffusion, steps, min_alpha_bar)
    x_T = ddim_invert(model_fn, diffusion, levels[0], refine=refine, progress=progress)
    caps = list(captions) if captions is not None else None
    lat = BipartiteLatent(
        z_i,
        x_T,
        steps,
        float(guidance),
        caps,
        str(getattr(pipe, "path", "")),
        float(min_alpha_bar),
        {"refine": int(refine)},
    )
    if not chain:
        return lat
    cond = levels[0]
    if condition == "decoded":
        cond = decode_latent(
            pipe,
            z_i,
            x_T,
            steps=steps,
            guidance=guidance,
            captions=captions,
            min_alpha_bar=min_alpha_bar,
            progress=progress,
        )
    lat.stage_mix = float(mix)
    for k, (stage, n) in enumerate(zip(chain, per_steps)):
        stage_diffusion = manipulation_diffusion(stage.settings.make(), n, min_alpha_bar)
        fn, partner = _stage_fn(stage, cond), None
        if stage_inversion == "edict":
            noise, partner = edict_invert(fn, stage_diffusion, levels[k + 1], mix=mix, progress=progress)
            lat.stage_partners.append(partner)
        else:
            noise = ddim_invert(fn, stage_diffusion, levels[k + 1], refine=refine, progress=progress)
        lat.stage_noises.append(noise)
        if condition == "decoded" and k + 1 < len(chain):  # the next stage's condition, as decoding will give it
            cond = _decode_stage(stage, cond, stage_diffusion, noise, partner, mix, progress=progress)
        else:
            cond = levels[k + 1]
    lat.stage_steps, lat.stage_low_res = list(per_steps), [st.low_res for st in chain]
    lat.extra.update(size=int(top), condition=condition)
    return lat


@torch.no_grad()
def reconstruct(
    pipe: "UnCLIP",
    latent: BipartiteLatent,
    *,
    eta: float = 0.0,
    generator: torch.Generator | None = None,
    return_levels: bool = False,
    progress: bool = False,
) -> torch.Tensor | list[torch.Tensor]:
    """Decode a latent through the decoder and its stages: (B, 3, H, H) in [-1, 1].

    The decoder decodes (z_i, x_T) with the latent's steps and guidance; each stage then runs
    its sampler (EDICT or DDIM, as it was inverted) from its noise, conditioned on the image
    decoded one level down. eta 0 gives the inverted images back; eta > 0 draws fresh noise
    from ``generator`` at every level (an EDICT stage then samples afresh).
    ``return_levels`` returns every level's images, smallest first, instead of the top one.
    """
    lat = latent.to(pipe.device)
    chain = pipe.stage_chain(lat.size) if lat.stage_noises else []
    if [st.low_res for st in chain] != lat.stage_low_res:
        raise InputError(
            f"the latent's stages take {lat.stage_low_res} px inputs but this model's chain to {lat.size} px takes "
            f"{[st.low_res for st in chain]}; decode it with the model it was inverted with ({lat.model or 'unknown'})"
        )
    x = decode_latent(
        pipe, lat.image_embed, lat.noise, steps=lat.steps, guidance=lat.guidance, eta=eta, generator=generator,
        captions=lat.captions, min_alpha_bar=lat.min_alpha_bar, progress=progress,
    )  # fmt: skip
    levels = [x]
    partners = lat.stage_partners or [None] * len(chain)
    for stage, noise, partner, n in zip(chain, lat.stage_noises, partners, lat.stage_steps):
        diffusion = manipulation_diffusion(stage.settings.make(), n, lat.min_alpha_bar)
        x = _decode_stage(stage, x, diffusion, noise, partner, lat.stage_mix, eta=eta, generator=generator,
                          progress=progress)  # fmt: skip
        levels.append(x)
    return levels if return_levels else x
