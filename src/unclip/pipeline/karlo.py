"""``KarloUnCLIP``: our pipeline over a diffusers unCLIP directory (Kakao Brain's Karlo weights).

:meth:`unclip.pipeline.UnCLIP.load` returns one when the directory holds a
``model_index.json``. Everything but three sampling choices is the base pipeline's:
guidance, the manipulations (DDIM inversion, variations, slerp interpolations, text diffs,
PCA probing) and the upsampler cascade run unchanged on the adapters of
:mod:`unclip.adapters`. What differs is what Karlo itself does:

* z_i are *raw* CLIP ViT-L/14 image embeddings (not unit vectors), as Karlo's decoder was
  trained on them; the diffusion prior samples in its normalised space, x0 clipped to
  [-5, 5], and maps back with ``clip_std`` and ``clip_mean``; no best-of by default.
* ``prior="text-embed"`` feeds the text embedding rescaled to the prior's root-mean-square
  image-embedding norm (raw text and image embeddings have different norms; without a
  prior, the raw text embedding).
* generation samples like Karlo: DDPM over Karlo's timesteps for the prior, the decoder
  (learned-range variance) and the upsampler (``super_res_first`` then ``super_res_last``),
  unless an ``eta`` is given, which selects our DDIM for the decoder. Upsampling with one
  shared noise (interpolations, text diffs) keeps the base pipeline's DDIM with eta 0.
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F

from ..adapters.karlo import KarloComponents, load_diffusers_unclip
from ..adapters.prior import sample_karlo_image_embeds
from ..adapters.upsampler import karlo_upsample
from ..diffusion import ddpm_sample, randn_like
from ..errors import InputError
from ..model_dir import SamplingDefaults
from ..upsampler.cascade import NOISE_START, steps_per_stage
from .base import PRIOR_MODES, UnCLIPBase


class KarloUnCLIP(UnCLIPBase):
    """UnCLIP over Karlo's networks; see the module docstring for what differs from the base."""

    def __init__(self, parts: KarloComponents) -> None:
        super().__init__(
            parts.clip,
            parts.decoder,
            parts.decoder_settings,
            parts.prior,
            SamplingDefaults(**parts.defaults),
            upsamplers=parts.upsamplers,
        )
        self.parts = parts
        self.schedules = parts.schedules
        self.path = parts.path
        self.decoder_name = "decoder"

    @classmethod
    def from_diffusers(
        cls,
        path: str | os.PathLike,
        device: str | torch.device = "cpu",
        *,
        image_encoder_from: str | os.PathLike | None = None,
        dtype: torch.dtype | None = None,
    ) -> KarloUnCLIP:
        """Load a diffusers unCLIP directory (see :func:`unclip.adapters.karlo.load_diffusers_unclip`)."""
        return cls(load_diffusers_unclip(path, image_encoder_from=image_encoder_from, device=device, dtype=dtype))

    @torch.no_grad()
    def image_embeds_for(
        self,
        prompts: list[str],
        mode: str = "diffusion",
        *,
        generator: torch.Generator | None = None,
        steps: int | None = None,
        guidance: float | None = None,
        best_of: int | None = None,
        progress: bool = False,
        method: str | None = None,
    ) -> torch.Tensor:
        """Raw CLIP image embeddings (B, E) for each prompt under a conditioning mode.

        Karlo's prior is always sampled with its own DDPM schedule, so ``method`` (the
        sampler chosen for the decoder and upsamplers) does not apply to it."""
        if mode not in ("diffusion", "text-embed"):
            if mode == "ar":
                raise InputError("Karlo has no autoregressive prior; use --prior diffusion, text-embed or none")
            if mode not in PRIOR_MODES:
                raise InputError(f"unknown prior mode '{mode}'; choose one of {', '.join(PRIOR_MODES)}")
            return super().image_embeds_for(
                prompts, mode, generator=generator, steps=steps, guidance=guidance, best_of=best_of, progress=progress
            )
        text = self.clip.encode_text_full(self.clip.tokenize(prompts).to(self.device))
        if mode == "text-embed":
            if self.prior is None:
                return text.embed.float()
            return F.normalize(text.embed.float(), dim=-1) * self.prior.expected_norm
        if self.prior is None:
            raise InputError(
                f"{self.path} has no prior (an image-variations directory); load the text-to-image directory "
                "(kakaobrain/karlo-v1-alpha), or use --prior text-embed or none"
            )
        d = self.defaults
        return sample_karlo_image_embeds(
            self.prior,
            self.schedules["prior"],
            text,
            steps=steps or d.prior_steps,
            guidance_scale=d.prior_guidance if guidance is None else guidance,
            best_of=best_of or d.best_of,
            generator=generator,
            progress=progress,
        )

    @torch.no_grad()
    def decode(
        self,
        image_embed: torch.Tensor,
        prompts: list[str],
        *,
        noise: torch.Tensor | None = None,
        steps: int | None = None,
        guidance: float | None = None,
        eta: float | None = None,
        generator: torch.Generator | None = None,
        use_image: bool = True,
        method: str = "ddim",
        progress: bool = False,
    ) -> torch.Tensor:
        """Decode raw z_i (B, E) to (B, 3, 64, 64) in [-1, 1]: Karlo's DDPM unless ``eta`` is given (then our DDIM)."""
        if eta is not None or method != "ddim":
            return super().decode(
                image_embed,
                prompts,
                noise=noise,
                steps=steps,
                guidance=guidance,
                eta=eta,
                generator=generator,
                use_image=use_image,
                method=method,
                progress=progress,
            )
        d = self.defaults
        size = self.decoder.config.image_size
        if noise is None:
            noise = randn_like(torch.empty(image_embed.shape[0], 3, size, size, device=self.device), generator)
        model_fn = self.decoder_model_fn(
            image_embed, prompts, guidance=d.decoder_guidance if guidance is None else guidance, use_image=use_image
        )
        schedule = self.schedules["decoder"]
        x = ddpm_sample(
            model_fn,
            schedule.diffusion(steps or d.decoder_steps),
            noise.to(self.device).float(),
            generator=generator,
            clip_x0=schedule.clip_x0,
            progress=progress,
        )
        return x.clamp(-1, 1)

    @torch.no_grad()
    def upsample_to(
        self,
        images: torch.Tensor,
        size: int | None = None,
        *,
        seed: int = 0,
        steps: int | list[int | None] | None = None,
        shared_noise: bool = False,
        progress: bool = False,
        sampler: str | None = None,
        start: int | str | None = None,
    ) -> torch.Tensor:
        """Karlo's DDPM super-resolution up to ``size``; with ``shared_noise``, the base pipeline's
        sampler (``sampler``, default DDIM at eta 0). Karlo's stage always starts from noise:
        ``start`` may only be None or "noise"."""
        if start not in (None, NOISE_START):
            raise InputError(
                f"Karlo's super-resolution stage samples from noise on its own schedule; upsampler start {start!r} "
                "applies to unclip's stages only (leave it out)"
            )
        if shared_noise:
            return super().upsample_to(
                images, size, seed=seed, steps=steps, shared_noise=True, progress=progress, sampler=sampler
            )
        stages = self.stage_chain(size, images.shape[-1])
        generator = torch.Generator(device="cpu").manual_seed(int(seed))
        x = images
        for stage, n in zip(stages, steps_per_stage(stages, steps)):
            x = karlo_upsample(
                stage.model, self.schedules["super_res"], x, steps=n, generator=generator, progress=progress
            )
        return x
