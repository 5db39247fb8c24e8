"""``UnCLIP``: composes CLIP, a prior and the decoder into text-to-image generation.

The pipeline holds frozen components and calls the shared samplers in
``unclip.diffusion``; it never trains and has no sampling loop of its own
(DESIGN.md principle 6). Conditioning modes follow the paper's Figure 8:

* ``prior="diffusion"``: caption -> z_t -> diffusion prior -> z_i -> decoder (default);
* ``prior="text-embed"``: the text embedding z_t is fed to the decoder as if it were z_i;
* ``prior="none"``: the decoder sees the caption only (z_i replaced by its null embedding).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path

import torch
from PIL import Image

from .checkpoint import atomic_write_json, load_component, load_state_into, save_component
from .clip.frozen import FrozenCLIP
from .decoder.model import Decoder, DecoderConfig
from .diffusion import bind, classifier_free_guidance, randn_like, sample
from .errors import CheckpointError, InputError
from .imageio import tensor_to_pil
from .prior.diffusion_prior import DiffusionPrior, DiffusionPriorConfig, sample_image_embeds
from .train.stages import DiffusionSettings

log = logging.getLogger(__name__)

MODEL_FORMAT = "unclip-model"
MODEL_VERSION = 1
PRIOR_MODES = ("diffusion", "text-embed", "none")
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

    def __init__(self, clip: FrozenCLIP, decoder: Decoder, decoder_diffusion: DiffusionSettings, prior: DiffusionPrior | None = None, defaults: SamplingDefaults | None = None) -> None:
        self.clip = clip
        self.decoder = decoder
        self.decoder_settings = decoder_diffusion
        self.decoder_diffusion = decoder_diffusion.make()
        self.prior = prior
        self.defaults = defaults or SamplingDefaults()

    # ------------------------------------------------------------------ loading
    @classmethod
    def load(cls, name_or_path: str | os.PathLike, device: str | torch.device = "cpu") -> "UnCLIP":
        """Load a shipped model by name (``"shapes"``) or a model directory."""
        root = resolve_model_path(name_or_path)
        meta_path = root / "model.json"
        if not meta_path.is_file():
            raise CheckpointError(f"{root} has no model.json; is it a model directory written by `unclip train all`?")
        meta = json.loads(meta_path.read_text())
        if meta.get("format") != MODEL_FORMAT or meta.get("version") != MODEL_VERSION:
            raise CheckpointError(f"{meta_path}: expected format '{MODEL_FORMAT}' version {MODEL_VERSION}, found {meta.get('format')!r} version {meta.get('version')!r}")
        comps = meta.get("components", {})
        for needed in ("clip", "decoder"):
            if needed not in comps:
                raise CheckpointError(f"{meta_path}: the model has no '{needed}' component")
        clip = FrozenCLIP.load(root / comps["clip"]).to(device)
        decoder, settings = load_decoder(root / comps["decoder"], device)
        prior = load_diffusion_prior(root / comps["prior_diffusion"], device) if "prior_diffusion" in comps else None
        defaults = SamplingDefaults(**meta.get("defaults", {}))
        pipe = cls(clip, decoder, settings, prior, defaults)
        pipe.path = root
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
    def image_embeds_for(self, prompts: list[str], mode: str = "diffusion", *, generator: torch.Generator | None = None, steps: int | None = None, guidance: float | None = None, best_of: int | None = None, progress: bool = False) -> torch.Tensor:
        """z_i for each prompt under a conditioning mode: (B, E) unit vectors."""
        if mode not in PRIOR_MODES:
            raise InputError(f"unknown prior mode '{mode}'; choose one of {', '.join(PRIOR_MODES)}")
        text = self.clip.encode_text_full(self.clip.tokenize(prompts).to(self.device))
        if mode == "text-embed":
            return text.embed.float()
        if mode == "none":
            return torch.zeros_like(text.embed, dtype=torch.float32)
        if self.prior is None:
            raise InputError("this model has no diffusion prior; use --prior text-embed or --prior none")
        d = self.defaults
        return sample_image_embeds(
            self.prior, text.embed.float(), text.tokens.float(), text.mask,
            steps=steps or d.prior_steps, guidance_scale=d.prior_guidance if guidance is None else guidance,
            best_of=best_of or d.best_of, generator=generator, progress=progress,
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
    def decode(self, image_embed: torch.Tensor, prompts: list[str], *, noise: torch.Tensor | None = None, steps: int | None = None, guidance: float | None = None, eta: float | None = None, generator: torch.Generator | None = None, use_image: bool = True, method: str = "ddim", progress: bool = False) -> torch.Tensor:
        """Decode image embeddings (and captions) to images in [-1, 1], (B, 3, S, S)."""
        d = self.defaults
        size = self.decoder.config.image_size
        b = image_embed.shape[0]
        if noise is None:
            noise = randn_like(torch.empty(b, 3, size, size, device=self.device), generator)
        model_fn = self.decoder_model_fn(image_embed, prompts, guidance=d.decoder_guidance if guidance is None else guidance, use_image=use_image)
        kwargs = {"eta": d.eta if eta is None else eta} if method == "ddim" else {}
        return sample(method, model_fn, self.decoder_diffusion, noise.to(self.device), steps=steps or d.decoder_steps, generator=generator, clip_x0=1.0, progress=progress, **kwargs).clamp(-1, 1)

    # ------------------------------------------------------------------ public API
    @torch.no_grad()
    def generate_tensors(self, prompts: list[str] | str, num_images: int = 1, seed: int = 0, *, prior: str = "diffusion", prior_guidance: float | None = None, decoder_guidance: float | None = None, prior_steps: int | None = None, steps: int | None = None, best_of: int | None = None, eta: float | None = None, progress: bool = False) -> tuple[torch.Tensor, list[str]]:
        """Like :meth:`generate` but returns ((B*num_images, 3, S, S) in [-1, 1], prompts per image)."""
        if isinstance(prompts, str):
            prompts = [prompts]
        if not prompts or any(not isinstance(p, str) or not p.strip() for p in prompts):
            raise InputError("prompts must be a non-empty list of non-empty strings")
        if num_images < 1:
            raise InputError(f"num_images must be >= 1, got {num_images}")
        expanded = [p for p in prompts for _ in range(num_images)]
        generator = torch.Generator(device="cpu").manual_seed(seed)
        z_i = self.image_embeds_for(expanded, prior, generator=generator, steps=prior_steps, guidance=prior_guidance, best_of=best_of, progress=progress)
        size = self.decoder.config.image_size
        noise = torch.randn(len(expanded), 3, size, size, generator=generator)
        images = self.decode(z_i, expanded, noise=noise, steps=steps, guidance=decoder_guidance, eta=eta, generator=generator, use_image=prior != "none", progress=progress)
        return images, expanded

    def generate(self, prompts: list[str] | str, num_images: int = 1, seed: int = 0, **kwargs) -> list[Image.Image]:
        """Generate ``num_images`` PIL images per prompt; same seed, same images.

        Keyword arguments: ``prior`` ("diffusion", "text-embed", "none"), ``prior_guidance``,
        ``decoder_guidance``, ``prior_steps``, ``steps`` (decoder DDIM steps), ``best_of``, ``eta``.
        """
        images, _ = self.generate_tensors(prompts, num_images, seed, **kwargs)
        return tensor_to_pil(images)

    # ------------------------------------------------------------------ manipulations (paper section 3)
    def invert(self, images, **kwargs):
        """Bipartite latent (z_i, x_T) of image(s) by DDIM inversion; see :func:`unclip.manipulate.invert`."""
        from .manipulate import invert

        return invert(self, images, **kwargs)

    def vary(self, image, eta: float = 1.0, n: int = 4, **kwargs) -> list[Image.Image]:
        """``n`` variations of an image (PIL); see :func:`unclip.manipulate.vary`."""
        from .manipulate import vary

        return tensor_to_pil(vary(self, image, eta=eta, n=n, **kwargs))

    def interpolate(self, a, b, frames: int = 8, **kwargs) -> list[Image.Image]:
        """Frames between two images (PIL); see :func:`unclip.manipulate.interpolate`."""
        from .manipulate import interpolate

        return tensor_to_pil(interpolate(self, a, b, frames=frames, **kwargs))

    def text_diff(self, image, from_text: str, to_text: str, **kwargs) -> list[Image.Image]:
        """Frames of a text-diff edit (PIL); see :func:`unclip.manipulate.text_diff`."""
        from .manipulate import text_diff

        return tensor_to_pil(text_diff(self, image, from_text, to_text, **kwargs))
