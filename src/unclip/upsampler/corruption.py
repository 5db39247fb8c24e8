"""The training corruption of an upsampler stage, by name: ``none``, ``blur`` (first stage),
``bsr`` or ``bsr-light`` (second stage). unCLIP (section 2.1) corrupts the first upsampler's
inputs with Gaussian blur and the second's with BSR degradations; ``bsr`` is BSRGAN's full
model, ``bsr-light`` latent diffusion's light variant of it (:data:`.bsr.BSR_LIGHT`).
:func:`degrade` picks one.
"""

from __future__ import annotations

import torch

from ..errors import InputError
from .bsr import BSR_LIGHT, BSRConfig, bsr_degradation
from .degradations import DEGRADATIONS, blur_degradation, resize

#: The BSR kinds by name, with their probabilities and ranges (BSR stages degrade crops).
BSR_KINDS = {"bsr": BSRConfig(), "bsr-light": BSR_LIGHT}


def degrade(
    images: torch.Tensor, low_res: int | tuple[int, int], kind: str, generator: torch.Generator
) -> torch.Tensor:
    """Dispatch: ``"none"`` (clean antialiased bicubic downsampling), ``"blur"``, ``"bsr"`` or ``"bsr-light"``."""
    if kind == "none":
        return resize(images, low_res, "bicubic").clamp(-1, 1)
    if kind == "blur":
        return blur_degradation(images, low_res, generator)
    if kind in BSR_KINDS:
        return bsr_degradation(images, low_res, generator, BSR_KINDS[kind])
    raise InputError(f"unknown degradation {kind!r}; choose one of {DEGRADATIONS}")
