"""unclip: unCLIP (Ramesh et al. 2022, "DALL-E 2") with CLIP latents, tested and small.

The public API is re-exported here; heavy submodules load lazily so that ``import unclip``
stays fast.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "UnCLIP": ("unclip.pipeline", "UnCLIP"),
    "FrozenCLIP": ("unclip.clip.frozen", "FrozenCLIP"),
    "GaussianDiffusion": ("unclip.diffusion", "GaussianDiffusion"),
    "ShapesDataset": ("unclip.data.shapes", "ShapesDataset"),
    "get_dataset": ("unclip.data", "get_dataset"),
    "DiffusionPrior": ("unclip.prior.diffusion_prior", "DiffusionPrior"),
    "Decoder": ("unclip.decoder.model", "Decoder"),
    "UnclipError": ("unclip.errors", "UnclipError"),
}

__all__ = sorted(_LAZY) + ["__version__"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'unclip' has no attribute {name!r}")
