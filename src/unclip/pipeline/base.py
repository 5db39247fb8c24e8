"""``UnCLIPBase``: composes CLIP, a prior and the decoder into text-to-image generation.

The pipeline holds frozen components and calls the shared samplers in
``unclip.diffusion``; it never trains and has no sampling loop of its own
(DESIGN.md principle 6). Conditioning modes follow the paper's Figure 8:

* ``prior="diffusion"``: caption -> z_t -> diffusion prior -> z_i -> decoder (default);
* ``prior="ar"``: as above with the autoregressive prior (section 2.2), when the model has one;
* ``prior="text-embed"``: the text embedding z_t is fed to the decoder as if it were z_i;
* ``prior="none"``: the decoder sees the caption only (z_i replaced by its null embedding).

A model directory may also hold a GLIDE-style baseline decoder trained on captions alone
(component ``decoder_text_only``; ``UnCLIP.load(..., decoder="decoder_text_only")``) and
diffusion upsamplers (components ``upsampler_<side>``), which :meth:`UnCLIP.upsample_to`
chains after the decoder up to the requested output side (section 2.1's cascade).
"""

from __future__ import annotations

import logging
import os

import torch
from PIL import Image

from ..clip.frozen import FrozenCLIP
from ..decoder.conditioning import decoder_model_fn
from ..decoder.model import Decoder
from ..diffusion import DiffusionSettings, randn_like, sample
from ..errors import InputError
from ..manipulate import BipartiteLatent, ImageInput
from ..manipulate import interpolate as _interpolate
from ..manipulate import invert as _invert
from ..manipulate import text_diff as _text_diff
from ..manipulate import vary as _vary
from ..model_dir import (
    DECODERS,
    SHIPPED_MODELS,
    UPSAMPLER_PREFIX,
    SamplingDefaults,
    load_model,
    resolve_model_path,
    write_model_json,
)
from ..nn.precision import autocast, check_precision, default_precision
from ..prior.ar_prior import ARPrior, sample_ar_image_embeds
from ..prior.diffusion_prior import DiffusionPrior, sample_image_embeds
from ..storage.imageio import tensor_to_pil
from ..upsampler.cascade import CascadeStage, run_cascade

log = logging.getLogger(__name__)

PRIOR_MODES = ("diffusion", "ar", "text-embed", "none")

__all__ = [
    "DECODERS", "PRIOR_MODES", "SHIPPED_MODELS", "UPSAMPLER_PREFIX", "SamplingDefaults", "UnCLIPBase",
    "resolve_model_path", "write_model_json",
]  # fmt: skip


class UnCLIPBase:
    """Text-to-image with CLIP latents (see the module docstring for the modes)."""

    def __init__(
        self,
        clip: FrozenCLIP,
        decoder: Decoder,
        decoder_diffusion: DiffusionSettings,
        prior: DiffusionPrior | None = None,
        defaults: SamplingDefaults | None = None,
        *,
        ar_prior: ARPrior | None = None,
        upsamplers: list[CascadeStage] | None = None,
    ) -> None:
        self.clip = clip
        self.decoder = decoder
        self.decoder_settings = decoder_diffusion
        self.decoder_diffusion = decoder_diffusion.make()
        self.prior = prior
        self.ar_prior = ar_prior
        self.upsamplers = sorted(upsamplers or [], key=lambda st: st.low_res)
        self.defaults = defaults or SamplingDefaults()
        #: "fp32", "bf16" or "auto" for every network call while sampling (see unclip.nn.precision):
        #: the command line's --precision when given, else the model's recommended default
        self.precision = check_precision(default_precision(self.defaults.precision))

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_model_dir(
        cls, name_or_path: str | os.PathLike, device: str | torch.device = "cpu", *, decoder: str = "decoder"
    ):
        """Load an unclip model directory (a shipped name or a path); ``decoder`` picks the
        decoder component: ``"decoder"`` (unCLIP) or ``"decoder_text_only"`` (the GLIDE-style
        baseline, sampled with ``prior="none"``). The priors and upsamplers it holds are loaded too."""
        m = load_model(name_or_path, device, decoder=decoder)
        pipe = cls(
            m.clip, m.decoder, m.decoder_settings, m.prior, m.defaults, ar_prior=m.ar_prior, upsamplers=m.upsamplers
        )
        pipe.path = m.root
        pipe.decoder_name = decoder
        return pipe

    @property
    def device(self) -> torch.device:
        return next(self.decoder.parameters()).device

    # ------------------------------------------------------------------ stages
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
        """z_i for each prompt under a conditioning mode: (B, E) unit vectors (``method``: the
        diffusion prior's sampler, default ``defaults.sampler``)."""
        if mode not in PRIOR_MODES:
            raise InputError(f"unknown prior mode '{mode}'; choose one of {', '.join(PRIOR_MODES)}")
        if mode != "none" and not self.decoder.config.use_image_embed:
            raise InputError(
                f"this decoder is text-only (the GLIDE-style baseline) and ignores z_i; use prior 'none', not '{mode}'"
            )
        text = self.clip.encode_text_full(self.clip.tokenize(prompts).to(self.device))
        if mode == "text-embed":
            return text.embed.float()
        if mode == "none":
            return torch.zeros_like(text.embed, dtype=torch.float32)
        d = self.defaults
        if mode == "ar":
            if self.ar_prior is None:
                raise InputError(
                    "this model has no autoregressive prior; train one with `unclip train ar-prior --out MODEL_DIR`, "
                    "or use --prior diffusion"
                )
            if generator is not None and self.device.type != "cpu":
                generator = torch.Generator(device=self.device).manual_seed(
                    int(torch.randint(2**62, (1,), generator=generator))
                )
            return sample_ar_image_embeds(
                self.ar_prior,
                text.embed.float(),
                text.tokens.float(),
                text.mask,
                guidance_scale=d.prior_guidance if guidance is None else guidance,
                generator=generator,
            )
        if self.prior is None:
            raise InputError("this model has no diffusion prior; use --prior text-embed or --prior none")
        with autocast(self.precision, self.device):
            return sample_image_embeds(
                self.prior,
                text.embed.float(),
                text.tokens.float(),
                text.mask,
                steps=steps or d.prior_steps,
                guidance_scale=d.prior_guidance if guidance is None else guidance,
                best_of=best_of or d.best_of,
                generator=generator,
                progress=progress,
                method=method or d.sampler,
            )

    def decoder_model_fn(
        self, image_embed: torch.Tensor, prompts: list[str], *, guidance: float, use_image: bool = True
    ):
        """The decoder as a guided ``model_fn(x, t)`` conditioned on z_i and the prompts
        (see :func:`unclip.decoder.conditioning.decoder_model_fn`)."""
        tokens = self.clip.tokenize(prompts).to(self.device)
        return decoder_model_fn(self.decoder, tokens, image_embed, guidance=guidance, use_image=use_image)

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
        method: str | None = None,
        progress: bool = False,
    ) -> torch.Tensor:
        """Decode image embeddings (and captions) to images in [-1, 1], (B, 3, S, S).

        ``method``: "ddim" / "dpmpp2m" (both take ``eta``) or "ddpm"; default ``defaults.sampler``."""
        d = self.defaults
        size = self.decoder.config.image_size
        b = image_embed.shape[0]
        if noise is None:
            noise = randn_like(torch.empty(b, 3, size, size, device=self.device), generator)
        model_fn = self.decoder_model_fn(
            image_embed, prompts, guidance=d.decoder_guidance if guidance is None else guidance, use_image=use_image
        )
        method = method or d.sampler
        kwargs = {"eta": d.eta if eta is None else eta} if method != "ddpm" else {}
        with autocast(self.precision, self.device):
            x = sample(
                method,
                model_fn,
                self.decoder_diffusion,
                noise.to(self.device),
                steps=steps or d.decoder_steps,
                generator=generator,
                clip_x0=1.0,
                progress=progress,
                **kwargs,
            )
        return x.clamp(-1, 1)

    @property
    def output_sizes(self) -> list[int]:
        """The sides this model can produce: the decoder's, then each upsampler stage's in turn."""
        sizes = [self.decoder.config.image_size]
        for stage in self.upsamplers:
            if stage.low_res == sizes[-1]:
                sizes.append(stage.high_res)
        return sizes

    def resolve_size(self, size: int | None) -> int:
        """The output side for ``size`` (None: the model's default), checked against :attr:`output_sizes`."""
        size = size or self.defaults.size or self.decoder.config.image_size
        if size not in self.output_sizes:
            raise InputError(
                f"this model cannot produce {size} px images; available sizes: "
                f"{', '.join(map(str, self.output_sizes))} (the decoder's, then its upsampler stages')"
            )
        return int(size)

    def stage_chain(self, size: int | None, from_side: int | None = None) -> list[CascadeStage]:
        """The upsampler stages, in order, that take ``from_side`` (default: the decoder's)
        images to ``size`` (None: the model's default); empty when the sides are equal."""
        target = self.resolve_size(size)
        start = from_side or self.decoder.config.image_size
        chain, side = [], start
        for stage in self.upsamplers:  # sorted by input side: follow the chain up to the target
            if stage.low_res == side and stage.high_res <= target:
                chain.append(stage)
                side = stage.high_res
        if side != target:
            raise InputError(
                f"no chain of upsampler stages takes {start} px images to {target} px; available sizes: "
                f"{', '.join(map(str, self.output_sizes))}"
            )
        return chain

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
        """Run the upsampler stages from the images' side up to ``size`` (None: the model's default).

        ``images``: (B, 3, s, s) decoder outputs in [-1, 1]. Each stage samples DDIM with
        eta 0 from noise drawn from ``seed``; ``shared_noise`` gives every image the same
        noise (frames of an interpolation or text diff then change only where their
        low-res inputs do). ``steps``: per-stage DDIM steps (None: each stage's default).
        ``sampler``: "ddim" or "dpmpp2m" (default ``defaults.sampler``), eta 0 either way.
        ``start``: where each stage's sampler starts (None: each stage's default; "noise";
        a timestep), see :func:`~unclip.upsampler.cascade.starts_per_stage`.
        """
        stages = self.stage_chain(size, images.shape[-1])
        if not stages:
            return images
        generator = torch.Generator(device="cpu").manual_seed(int(seed))
        method = sampler or self.defaults.sampler
        with autocast(self.precision, self.device):
            return run_cascade(
                stages,
                images,
                steps=steps,
                generator=generator,
                progress=progress,
                method=method,
                start=start,
                shared_noise=shared_noise,
            )

    # ------------------------------------------------------------------ public API
    @torch.no_grad()
    def generate_tensors(
        self,
        prompts: list[str] | str,
        num_images: int = 1,
        seed: int = 0,
        *,
        prior: str = "diffusion",
        prior_guidance: float | None = None,
        decoder_guidance: float | None = None,
        prior_steps: int | None = None,
        steps: int | None = None,
        best_of: int | None = None,
        eta: float | None = None,
        size: int | None = None,
        upsampler_steps: int | list[int | None] | None = None,
        upsampler_start: int | str | None = None,
        image_embeds: torch.Tensor | None = None,
        progress: bool = False,
        sampler: str | None = None,
    ) -> tuple[torch.Tensor, list[str]]:
        """Like :meth:`generate` but returns ((B*num_images, 3, S, S) in [-1, 1], prompts per image).

        ``image_embeds`` (B*num_images, E) skips the prior and decodes these z_i (e.g. to
        compare decoder settings with the prior's samples held fixed). ``sampler`` ("ddim" or
        "dpmpp2m"; default ``defaults.sampler``) is used by the prior, the decoder and the upsamplers.
        """
        if isinstance(prompts, str):
            prompts = [prompts]
        if not prompts or any(not isinstance(p, str) or not p.strip() for p in prompts):
            raise InputError("prompts must be a non-empty list of non-empty strings")
        if num_images < 1:
            raise InputError(f"num_images must be >= 1, got {num_images}")
        expanded = [p for p in prompts for _ in range(num_images)]
        out_size = self.resolve_size(size)
        generator = torch.Generator(device="cpu").manual_seed(seed)
        if image_embeds is None:
            z_i = self.image_embeds_for(
                expanded,
                prior,
                generator=generator,
                steps=prior_steps,
                guidance=prior_guidance,
                best_of=best_of,
                progress=progress,
                method=sampler,
            )
        elif tuple(image_embeds.shape) != (len(expanded), self.clip.embed_dim):
            raise InputError(
                f"image_embeds must have shape {(len(expanded), self.clip.embed_dim)}, got {tuple(image_embeds.shape)}"
            )
        else:
            z_i = image_embeds.float().to(self.device)
        side = self.decoder.config.image_size
        noise = torch.randn(len(expanded), 3, side, side, generator=generator)
        images = self.decode(
            z_i,
            expanded,
            noise=noise,
            steps=steps,
            guidance=decoder_guidance,
            eta=eta,
            generator=generator,
            use_image=prior != "none",
            progress=progress,
            method=sampler,
        )
        images = self.upsample_to(
            images,
            out_size,
            seed=seed,
            steps=upsampler_steps,
            progress=progress,
            sampler=sampler,
            start=upsampler_start,
        )
        return images, expanded

    def generate(self, prompts: list[str] | str, num_images: int = 1, seed: int = 0, **kwargs) -> list[Image.Image]:
        """Generate ``num_images`` PIL images per prompt; same seed, same images.

        Keyword arguments: ``prior`` ("diffusion", "ar", "text-embed", "none"), ``prior_guidance``,
        ``decoder_guidance``, ``prior_steps``, ``steps`` (decoder DDIM steps), ``best_of``, ``eta``,
        ``size`` (output side; larger than the decoder's runs the upsamplers), ``upsampler_steps``,
        ``upsampler_start`` (None: each stage's default; "noise": the paper's sampling from
        pure noise; a timestep), ``sampler`` ("ddim" or "dpmpp2m").
        """
        images, _ = self.generate_tensors(prompts, num_images, seed, **kwargs)
        return tensor_to_pil(images)

    # ------------------------------------------------------------------ manipulations (paper section 3)
    def invert(self, images: ImageInput, *, size: int | None = None, **kwargs) -> BipartiteLatent:
        """Bipartite latent of image(s) by DDIM inversion, through the upsampler stages up to
        ``size`` (None: the decoder alone); see :func:`unclip.manipulate.invert`."""
        return _invert(self, images, size=size, **kwargs)

    def vary(self, image, eta: float = 1.0, n: int = 4, *, size: int | None = None, **kwargs) -> list[Image.Image]:
        """``n`` variations of an image (PIL) at side ``size`` (None: the model's default side);
        at eta 0 the reconstruction, through the stages' inversion too; see :func:`unclip.manipulate.vary`."""
        return tensor_to_pil(_vary(self, image, eta=eta, n=n, size=self.resolve_size(size), **kwargs))

    def interpolate(self, a, b, frames: int = 8, *, size: int | None = None, **kwargs) -> list[Image.Image]:
        """Frames between two images (PIL) at side ``size``; see :func:`unclip.manipulate.interpolate`.

        The upsamplers use one noise for every frame, so frames differ only where the decoder's do."""
        x = _interpolate(self, a, b, frames=frames, **kwargs)
        return tensor_to_pil(self.upsample_to(x, size, seed=kwargs.get("seed", 0), shared_noise=True))

    def text_diff(self, image, from_text: str, to_text: str, *, size: int | None = None, **kwargs) -> list[Image.Image]:
        """Frames of a text-diff edit (PIL) at side ``size``; see :func:`unclip.manipulate.text_diff`."""
        x = _text_diff(self, image, from_text, to_text, **kwargs)
        return tensor_to_pil(self.upsample_to(x, size, shared_noise=True))
