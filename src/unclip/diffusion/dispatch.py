"""One entry to every sampler by name: ``sample("ddpm" | "ddim" | "dpmpp2m", model_fn, diffusion, x_T, ...)``.

Above :mod:`.sampling` (DDPM, DDIM) and :mod:`.solvers` (DPM-Solver++), which share helpers,
so that neither imports the other's dispatcher.
"""

from __future__ import annotations

import torch

from ..errors import InputError
from .gaussian import GaussianDiffusion
from .sampling import _METHODS as METHODS
from .sampling import ModelFn
from .solvers import SOLVERS


def sample(method: str, model_fn: ModelFn, diffusion: GaussianDiffusion, x_T: torch.Tensor, **kwargs) -> torch.Tensor:
    """Dispatch to :func:`ddpm_sample` ("ddpm"), :func:`ddim_sample` ("ddim") or a solver of
    :mod:`.solvers` ("dpmpp2m": DPM-Solver++(2M)) with the same keywords.

    ``eta`` may be passed as None with "ddpm" so callers can forward one set of keywords.
    """
    methods = {**METHODS, **SOLVERS}
    if method not in methods:
        raise InputError(f"unknown sampling method {method!r}; choose one of {', '.join(methods)}")
    if method == "ddpm":
        if kwargs.pop("eta", None) is not None:
            raise InputError(
                "eta applies to the 'ddim' and 'dpmpp2m' samplers only; pass eta=None (or none at all) with "
                "method='ddpm'"
            )
    return methods[method](model_fn, diffusion, x_T, **kwargs)
