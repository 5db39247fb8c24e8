"""The text-to-image pipeline: ``UnCLIP.load`` gives a pipeline for any model it recognises.

* an unclip model directory or shipped name: :class:`~unclip.pipeline.base.UnCLIPBase`'s
  generation, conditioning modes and manipulations over our own components;
* a diffusers unCLIP directory (``model_index.json``: Kakao Brain's released Karlo
  weights): :class:`~unclip.pipeline.karlo.KarloUnCLIP`, the same pipeline with Karlo's
  prior, decoder and upsamplers behind adapters (docs/karlo.md).

Both are :class:`UnCLIPBase` objects with one API (``generate``, ``invert``, ``vary``,
``interpolate``, ``text_diff``); ``UnCLIP`` is the class users name.
"""

from __future__ import annotations

import os

import torch

from ..errors import InputError
from ..model_dir import resolve_model_path
from .base import (
    DECODERS,
    PRIOR_MODES,
    SHIPPED_MODELS,
    UPSAMPLER_PREFIX,
    SamplingDefaults,
    UnCLIPBase,
    write_model_json,
)
from .karlo import KarloUnCLIP

__all__ = [
    "DECODERS", "PRIOR_MODES", "SHIPPED_MODELS", "UPSAMPLER_PREFIX", "KarloUnCLIP", "SamplingDefaults", "UnCLIP",
    "UnCLIPBase", "resolve_model_path", "write_model_json",
]  # fmt: skip


class UnCLIP(UnCLIPBase):
    """Text-to-image with CLIP latents over our own components (see :mod:`unclip.pipeline.base`)."""

    @classmethod
    def load(
        cls,
        name_or_path: str | os.PathLike,
        device: str | torch.device = "cpu",
        *,
        decoder: str = "decoder",
        image_encoder_from: str | os.PathLike | None = None,
    ) -> UnCLIPBase:
        """Load a shipped model by name (``"shapes"``), a model directory, or a diffusers unCLIP directory.

        ``decoder`` picks the decoder component of an unclip model: ``"decoder"`` (unCLIP) or
        ``"decoder_text_only"`` (the GLIDE-style baseline, sampled with ``prior="none"``). A
        diffusers unCLIP directory gives a :class:`KarloUnCLIP`; ``image_encoder_from`` then
        names the directory whose CLIP image encoder to use (docs/karlo.md).
        """
        root = resolve_model_path(name_or_path)
        if (root / "model_index.json").is_file():  # diffusers layout: delegate to the adapters
            if decoder != "decoder":
                raise InputError(f"{root} is a diffusers unCLIP directory; it has no '{decoder}' component")
            return KarloUnCLIP.from_diffusers(root, device, image_encoder_from=image_encoder_from)
        if image_encoder_from is not None:
            raise InputError(
                f"image_encoder_from applies to diffusers unCLIP directories only; {root} is an unclip model directory"
            )
        return cls.from_model_dir(root, device, decoder=decoder)
