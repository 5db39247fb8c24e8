"""``UnCLIP``: composes CLIP, a prior and the decoder into text-to-image generation.

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
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path

import torch
from PIL import Image

from .checkpoint import atomic_write_json, load_component, load_state_into
from .clip.frozen import FrozenCLIP
from .decoder.model import Decoder, DecoderConfig
from .diffusion import bind, classifier_free_guidance, randn_like, sample
from .errors import CheckpointError, InputError
from .imageio import tensor_to_pil
from .model_dir import MODEL_FORMAT, MODEL_VERSION, read_model_json
from .nn.precision import autocast, check_precision, default_precision
from .prior.ar_prior import ARPrior, load_ar_prior, sample_ar_image_embeds
from .prior.diffusion_prior import DiffusionPrior, DiffusionPriorConfig, sample_image_embeds
from .train.stages import DiffusionSettings
from .upsampler.cascade import CascadeStage, load_upsampler, run_cascade, steps_per_stage, upsample

log = logging.getLogger(__name__)

PRIOR_MODES = ("diffusion", "ar", "text-embed", "none")
DECODERS = ("decoder", "decoder_text_only")
UPSAMPLER_PREFIX = "upsampler_"
SHIPPED_MODELS = ("shapes",)


@dataclass
class SamplingDefaults:
    """Sampling settings a model directory recommends (stored in model.json)."""

    prior_steps: int = 64
    prior_guidance: float = 1.0
    best_of: int = 2
    decoder_steps: int = 50
    decoder_guidance: float = 3.0
    # Stochastic DDIM (eta 1) by default: with the cosine schedule the deterministic path
    # (eta 0) left visible residual noise in some samples of the shipped model, while
    # eta 1 gave clean images at 25 steps. Manipulations use eta 0 where they must retrace
    # an inversion.
    eta: float = 1.0
    # Output side of generate/vary/interpolate/text_diff: None is the decoder's own side;
    # a larger side runs the model's upsamplers after the decoder.
    size: int | None = None
    # Sampler of the prior, decoder and upsamplers: "ddim" (eta above for the decoder) or
    # "dpmpp2m" (DPM-Solver++(2M), second order: fewer steps; eta > 0 is its SDE variant).
    sampler: str = "ddim"


def resolve_model_path(name_or_path: str | os.PathLike) -> Path:
    """A shipped model name (``"shapes"``) or a model directory -> its path."""
    path = Path(name_or_path)
    if path.is_dir():
        return path
    if str(name_or_path) in SHIPPED_MODELS:
        shipped = Path(str(resources.files("unclip") / "models" / str(name_or_path)))
        if (shipped / "model.json").is_file():
            return shipped
        raise CheckpointError(f"the shipped model '{name_or_path}' is not installed at {shipped}; reinstall unclip or train one with `unclip train all --data shapes --out DIR`")
    raise CheckpointError(f"model '{name_or_path}' is neither a shipped model ({', '.join(SHIPPED_MODELS)}) nor a directory")


def load_decoder(directory: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[Decoder, DiffusionSettings]:
    """Load a decoder component and the diffusion settings it was trained with."""
    config, state, extra = load_component(directory, "decoder", DecoderConfig)
    model = Decoder(config)
    load_state_into(model, state, "decoder")
    settings = DiffusionSettings(**extra.get("diffusion", {}))
    return model.to(device).eval().requires_grad_(False), settings


def load_diffusion_prior(directory: str | os.PathLike, device: str | torch.device = "cpu") -> DiffusionPrior:
    """Load a diffusion-prior component."""
    config, state, _ = load_component(directory, "prior_diffusion", DiffusionPriorConfig)
    model = DiffusionPrior(config)
    load_state_into(model, state, "prior_diffusion")
    return model.to(device).eval().requires_grad_(False)


class UnCLIP:
    """Text-to-image with CLIP latents (see the module docstring for the modes)."""

    def __init__(self, clip: FrozenCLIP, decoder: Decoder, decoder_diffusion: DiffusionSettings, prior: DiffusionPrior | None = None, defaults: SamplingDefaults | None = None, *, ar_prior: ARPrior | None = None, upsamplers: list[CascadeStage] | None = None) -> None:
        self.clip = clip
        self.decoder = decoder
        self.decoder_settings = decoder_diffusion
        self.decoder_diffusion = decoder_diffusion.make()
        self.prior = prior
        self.ar_prior = ar_prior
        self.upsamplers = sorted(upsamplers or [], key=lambda st: st.low_res)
        self.defaults = defaults or SamplingDefaults()
        #: "fp32", "bf16" or "auto" for every network call while sampling (see unclip.nn.precision)
        self.precision = check_precision(default_precision())

    # ------------------------------------------------------------------ loading
    @classmethod
    def load(cls, name_or_path: str | os.PathLike, device: str | torch.device = "cpu", *, decoder: str = "decoder") -> "UnCLIP":
        """Load a shipped model by name (``"shapes"``) or a model directory.

        ``decoder`` picks the decoder component: ``"decoder"`` (unCLIP) or
        ``"decoder_text_only"`` (the GLIDE-style baseline, sampled with ``prior="none"``).
        The priors and upsamplers the directory holds are loaded too.
        """
        root = resolve_model_path(name_or_path)
        meta = read_model_json(root)
        comps = meta.get("components", {})
        if decoder not in DECODERS:
            raise InputError(f"unknown decoder '{decoder}'; choose one of {', '.join(DECODERS)}")
        for needed in ("clip", decoder):
            if needed not in comps:
                hint = " (train it with `unclip train decoder --text-only --out DIR`)" if needed == "decoder_text_only" else ""
                raise CheckpointError(f"{root / 'model.json'}: the model has no '{needed}' component{hint}")
        known = {"clip", "prior_diffusion", "prior_ar", *DECODERS}
        unknown = [c for c in comps if c not in known and not c.startswith(UPSAMPLER_PREFIX)]
        if unknown:
            log.warning("%s: ignoring unknown components %s", root, unknown)
        clip = FrozenCLIP.load(root / comps["clip"]).to(device)
        dec, settings = load_decoder(root / comps[decoder], device)
        prior = load_diffusion_prior(root / comps["prior_diffusion"], device) if "prior_diffusion" in comps else None
        ar_prior = load_ar_prior(root / comps["prior_ar"], device) if "prior_ar" in comps else None
        upsamplers = [load_upsampler(root / path, device) for name, path in comps.items() if name.startswith(UPSAMPLER_PREFIX)]
        defaults = SamplingDefaults(**meta.get("defaults", {}))
        pipe = cls(clip, dec, settings, prior, defaults, ar_prior=ar_prior, upsamplers=upsamplers)
        pipe.path = root
        pipe.decoder_name = decoder
        return pipe

    @staticmethod
    def write_model_json(root: str | os.PathLike, components: dict[str, str], defaults: SamplingDefaults | None = None, info: dict | None = None) -> None:
        """Write ``model.json`` for a model directory whose components are already saved."""
        payload = {"format": MODEL_FORMAT, "version": MODEL_VERSION, "components": components, "defaults": asdict(defaults or SamplingDefaults())}
        if info:
            payload["info"] = info
        atomic_write_json(Path(root) / "model.json", payload)

    @property
    def device(self) -> torch.device:
        return next(self.decoder.parameters()).device

    # ------------------------------------------------------------------ stages
    @torch.no_grad()
    def image_embeds_for(self, prompts: list[str], mode: str = "diffusion", *, generator: torch.Generator | None = None, steps: int | None = None, guidance: float | None = None, best_of: int | None = None, progress: bool = False, method: str | None = None) -> torch.Tensor:
        """z_i for each prompt under a conditioning mode: (B, E) unit vectors (``method``: the
        diffusion prior's sampler, default ``defaults.sampler``)."""
        if mode not in PRIOR_MODES:
            raise InputError(f"unknown prior mode '{mode}'; choose one of {', '.join(PRIOR_MODES)}")
        if mode != "none" and not self.decoder.config.use_image_embed:
            raise InputError(f"this decoder is text-only (the GLIDE-style baseline) and ignores z_i; use prior 'none', not '{mode}'")
        text = self.clip.encode_text_full(self.clip.tokenize(prompts).to(self.device))
        if mode == "text-embed":
            return text.embed.float()
        if mode == "none":
            return torch.zeros_like(text.embed, dtype=torch.float32)
        d = self.defaults
        if mode == "ar":
            if self.ar_prior is None:
                raise InputError("this model has no autoregressive prior; train one with `unclip train ar-prior --out MODEL_DIR`, or use --prior diffusion")
            if generator is not None and self.device.type != "cpu":
                generator = torch.Generator(device=self.device).manual_seed(int(torch.randint(2**62, (1,), generator=generator)))
            return sample_ar_image_embeds(self.ar_prior, text.embed.float(), text.tokens.float(), text.mask, guidance_scale=d.prior_guidance if guidance is None else guidance, generator=generator)
        if self.prior is None:
            raise InputError("this model has no diffusion prior; use --prior text-embed or --prior none")
        with autocast(self.precision, self.device):
            return sample_image_embeds(
                self.prior, text.embed.float(), text.tokens.float(), text.mask,
                steps=steps or d.prior_steps, guidance_scale=d.prior_guidance if guidance is None else guidance,
                best_of=best_of or d.best_of, generator=generator, progress=progress, method=method or d.sampler,
            )

    def decoder_model_fn(self, image_embed: torch.Tensor, prompts: list[str], *, guidance: float, use_image: bool = True):
        """The decoder as a guided ``model_fn(x, t)`` (one batched forward for both branches)."""
        b = image_embed.shape[0]
        tokens = self.clip.tokenize(prompts).to(self.device)
        if tokens.shape[0] != b:
            raise InputError(f"{tokens.shape[0]} prompts for {b} image embeddings")
        ones = torch.ones(b, dtype=torch.bool, device=self.device)
        cond = {"image_embed": image_embed.to(self.device), "text_tokens": tokens, "image_keep": ones & use_image, "text_keep": ones}
        uncond = {**cond, "image_keep": ~ones, "text_keep": ~ones}
        channels = 3 if self.decoder_settings.learned_variance else None
        if guidance == 1.0:
            return bind(self.decoder, **cond)
        return classifier_free_guidance(self.decoder, guidance, cond, uncond, guided_channels=channels)

    @torch.no_grad()
    def decode(self, image_embed: torch.Tensor, prompts: list[str], *, noise: torch.Tensor | None = None, steps: int | None = None, guidance: float | None = None, eta: float | None = None, generator: torch.Generator | None = None, use_image: bool = True, method: str | None = None, progress: bool = False) -> torch.Tensor:
        """Decode image embeddings (and captions) to images in [-1, 1], (B, 3, S, S).

        ``method``: "ddim" / "dpmpp2m" (both take ``eta``) or "ddpm"; default ``defaults.sampler``."""
        d = self.defaults
        size = self.decoder.config.image_size
        b = image_embed.shape[0]
        if noise is None:
            noise = randn_like(torch.empty(b, 3, size, size, device=self.device), generator)
        model_fn = self.decoder_model_fn(image_embed, prompts, guidance=d.decoder_guidance if guidance is None else guidance, use_image=use_image)
        method = method or d.sampler
        kwargs = {"eta": d.eta if eta is None else eta} if method != "ddpm" else {}
        with autocast(self.precision, self.device):
            x = sample(method, model_fn, self.decoder_diffusion, noise.to(self.device), steps=steps or d.decoder_steps, generator=generator, clip_x0=1.0, progress=progress, **kwargs)
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
            raise InputError(f"this model cannot produce {size} px images; available sizes: {', '.join(map(str, self.output_sizes))} (the decoder's, then its upsampler stages')")
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
            raise InputError(f"no chain of upsampler stages takes {start} px images to {target} px; available sizes: {', '.join(map(str, self.output_sizes))}")
        return chain

    @torch.no_grad()
    def upsample_to(self, images: torch.Tensor, size: int | None = None, *, seed: int = 0, steps: int | list[int | None] | None = None, shared_noise: bool = False, progress: bool = False, sampler: str | None = None) -> torch.Tensor:
        """Run the upsampler stages from the images' side up to ``size`` (None: the model's default).

        ``images``: (B, 3, s, s) decoder outputs in [-1, 1]. Each stage samples DDIM with
        eta 0 from noise drawn from ``seed``; ``shared_noise`` gives every image the same
        noise (frames of an interpolation or text diff then change only where their
        low-res inputs do). ``steps``: per-stage DDIM steps (None: each stage's default).
        ``sampler``: "ddim" or "dpmpp2m" (default ``defaults.sampler``), eta 0 either way.
        """
        stages = self.stage_chain(size, images.shape[-1])
        if not stages:
            return images
        generator = torch.Generator(device="cpu").manual_seed(int(seed))
        method = sampler or self.defaults.sampler
        with autocast(self.precision, self.device):
            if not shared_noise:
                return run_cascade(stages, images, steps=steps, generator=generator, progress=progress, method=method)
            x = images
            for stage, n in zip(stages, steps_per_stage(stages, steps)):
                side = x.shape[-1] * stage.high_res // stage.low_res
                noise = torch.randn(1, 3, side, side, generator=generator).expand(x.shape[0], -1, -1, -1)
                x = upsample(stage.model, stage.settings, x, steps=n, noise=noise, progress=progress, method=method)
            return x

    # ------------------------------------------------------------------ public API
    @torch.no_grad()
    def generate_tensors(self, prompts: list[str] | str, num_images: int = 1, seed: int = 0, *, prior: str = "diffusion", prior_guidance: float | None = None, decoder_guidance: float | None = None, prior_steps: int | None = None, steps: int | None = None, best_of: int | None = None, eta: float | None = None, size: int | None = None, upsampler_steps: int | list[int | None] | None = None, image_embeds: torch.Tensor | None = None, progress: bool = False, sampler: str | None = None) -> tuple[torch.Tensor, list[str]]:
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
            z_i = self.image_embeds_for(expanded, prior, generator=generator, steps=prior_steps, guidance=prior_guidance, best_of=best_of, progress=progress, method=sampler)
        elif tuple(image_embeds.shape) != (len(expanded), self.clip.embed_dim):
            raise InputError(f"image_embeds must have shape {(len(expanded), self.clip.embed_dim)}, got {tuple(image_embeds.shape)}")
        else:
            z_i = image_embeds.float().to(self.device)
        side = self.decoder.config.image_size
        noise = torch.randn(len(expanded), 3, side, side, generator=generator)
        images = self.decode(z_i, expanded, noise=noise, steps=steps, guidance=decoder_guidance, eta=eta, generator=generator, use_image=prior != "none", progress=progress, method=sampler)
        images = self.upsample_to(images, out_size, seed=seed, steps=upsampler_steps, progress=progress, sampler=sampler)
        return images, expanded

    def generate(self, prompts: list[str] | str, num_images: int = 1, seed: int = 0, **kwargs) -> list[Image.Image]:
        """Generate ``num_images`` PIL images per prompt; same seed, same images.

        Keyword arguments: ``prior`` ("diffusion", "ar", "text-embed", "none"), ``prior_guidance``,
        ``decoder_guidance``, ``prior_steps``, ``steps`` (decoder DDIM steps), ``best_of``, ``eta``,
        ``size`` (output side; larger than the decoder's runs the upsamplers), ``upsampler_steps``,
        ``sampler`` ("ddim" or "dpmpp2m").
        """
        images, _ = self.generate_tensors(prompts, num_images, seed, **kwargs)
        return tensor_to_pil(images)

    # ------------------------------------------------------------------ manipulations (paper section 3)
    def invert(self, images, *, size: int | None = None, **kwargs):
        """Bipartite latent (z_i, x_T) of image(s) by DDIM inversion; see :func:`unclip.manipulate.invert`.

        With ``size`` above the decoder's side, the upsampler stages are inverted too and a
        :class:`unclip.manipulate_cascade.CascadeLatent` is returned (see ``invert_cascade``)."""
        if size is not None and size != self.decoder.config.image_size:
            from .manipulate_cascade import invert_cascade

            return invert_cascade(self, images, size, **kwargs)
        from .manipulate import invert

        return invert(self, images, **kwargs)

    def vary(self, image, eta: float = 1.0, n: int = 4, *, size: int | None = None, **kwargs) -> list[Image.Image]:
        """``n`` variations of an image (PIL) at side ``size``; see :func:`unclip.manipulate.vary`."""
        from .manipulate import vary

        x = vary(self, image, eta=eta, n=n, **kwargs)
        return tensor_to_pil(self.upsample_to(x, size, seed=kwargs.get("seed", 0)))

    def interpolate(self, a, b, frames: int = 8, *, size: int | None = None, **kwargs) -> list[Image.Image]:
        """Frames between two images (PIL) at side ``size``; see :func:`unclip.manipulate.interpolate`.

        The upsamplers use one noise for every frame, so frames differ only where the decoder's do."""
        from .manipulate import interpolate

        x = interpolate(self, a, b, frames=frames, **kwargs)
        return tensor_to_pil(self.upsample_to(x, size, seed=kwargs.get("seed", 0), shared_noise=True))

    def text_diff(self, image, from_text: str, to_text: str, *, size: int | None = None, **kwargs) -> list[Image.Image]:
        """Frames of a text-diff edit (PIL) at side ``size``; see :func:`unclip.manipulate.text_diff`."""
        from .manipulate import text_diff

        x = text_diff(self, image, from_text, to_text, **kwargs)
        return tensor_to_pil(self.upsample_to(x, size, shared_noise=True))
