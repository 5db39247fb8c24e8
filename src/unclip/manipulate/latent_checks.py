"""Validation of a bipartite latent read from a file: metadata types, tensor dtypes, shapes, values.

A ``.safetensors`` latent may come from anywhere. Before it is decoded, every metadata
field must have its type (``steps`` an int, not ``"50"``; ``captions`` a list of strings),
and every tensor must be a non-empty floating tensor of the right rank and finite: a NaN
embedding or an integer or boolean tensor is an error naming the field, never quietly
converted. :func:`check_latent_fits` then checks a latent against the model decoding it.
"""

from __future__ import annotations

import math
import os
from typing import Any

import torch

from ..diffusion.edict import DEFAULT_MIX
from ..errors import CheckpointError, InputError

_FIX = "write the latent again with `unclip invert`"
MAX_STEPS = 10_000


def _fail(path: str | os.PathLike, what: str) -> CheckpointError:
    return CheckpointError(f"{path}: {what}; {_FIX}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def check_latent_file(path: str | os.PathLike, meta: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
    """Raise CheckpointError naming the first field of a latent file that is of the wrong type or value."""
    if not _is_int(meta.get("steps")) or not 1 <= meta["steps"] <= MAX_STEPS:
        raise _fail(path, f"metadata 'steps' is {meta.get('steps')!r}; expected a whole number from 1 to {MAX_STEPS}")
    if not _is_number(meta.get("guidance")):
        raise _fail(path, f"metadata 'guidance' is {meta.get('guidance')!r}; expected a finite number")
    if "min_alpha_bar" in meta and (not _is_number(meta["min_alpha_bar"]) or not 0 < meta["min_alpha_bar"] < 1):
        raise _fail(path, f"metadata 'min_alpha_bar' is {meta['min_alpha_bar']!r}; expected a number in (0, 1)")
    caps = meta.get("captions")
    if caps is not None and (not isinstance(caps, list) or not all(isinstance(c, str) for c in caps)):
        raise _fail(path, "metadata 'captions' must be null or a list of strings")
    if not isinstance(meta.get("model", ""), str):
        raise _fail(path, "metadata 'model' must be a string")
    if not isinstance(meta.get("extra") or {}, dict):
        raise _fail(path, "metadata 'extra' must be an object")
    cascade = meta.get("cascade")
    if cascade is not None:
        if not isinstance(cascade, dict):
            raise _fail(path, "metadata 'cascade' must be an object")
        for key in ("steps", "low_res"):
            values = cascade.get(key, [])
            if not isinstance(values, list) or not all(_is_int(v) and 1 <= v <= MAX_STEPS for v in values):
                raise _fail(path, f"metadata cascade '{key}' must be a list of whole numbers from 1 to {MAX_STEPS}")
        inversion = cascade.get("inversion", "ddim")
        if inversion not in ("ddim", "edict"):
            raise _fail(path, f"metadata cascade 'inversion' is {inversion!r}; expected 'ddim' or 'edict'")
        mix = cascade.get("mix", DEFAULT_MIX)
        if not _is_number(mix) or not 0.5 < mix <= 1.0:
            raise _fail(path, f"metadata cascade 'mix' is {mix!r}; expected a number in (0.5, 1]")
    for name, tensor in tensors.items():
        if not tensor.is_floating_point():
            raise _fail(path, f"tensor '{name}' has dtype {tensor.dtype}; a latent holds floating-point tensors")
        if tensor.numel() == 0:
            raise _fail(path, f"tensor '{name}' is empty (shape {tuple(tensor.shape)})")
        if not bool(torch.isfinite(tensor).all()):
            raise _fail(path, f"tensor '{name}' holds NaN or infinite values")
    z, x = tensors.get("image_embed"), tensors.get("noise")
    if z is not None and z.dim() != 2:
        raise _fail(path, f"'image_embed' has shape {tuple(z.shape)}; expected (B, E)")
    if x is not None and (x.dim() != 4 or x.shape[1] != 3 or x.shape[2] != x.shape[3]):
        raise _fail(path, f"'noise' has shape {tuple(x.shape)}; expected (B, 3, S, S)")
    if z is not None and float(z.float().norm(dim=-1).min()) < 1e-6:
        raise _fail(path, "'image_embed' holds a zero vector; a CLIP image embedding has unit norm")


def check_latent_fits(lat: Any, embed_dim: int, decoder_side: int, source: str) -> None:
    """InputError unless latent ``lat`` fits the model: z_i of ``embed_dim`` dimensions, x_T of ``decoder_side`` px."""
    if lat.image_embed.shape[-1] != embed_dim:
        raise InputError(
            f"{source}: its z_i has {lat.image_embed.shape[-1]} dimensions but this model's CLIP has {embed_dim}; "
            "use the model the latent was inverted with"
        )
    if lat.noise.shape[-1] != decoder_side:
        raise InputError(
            f"{source}: its noise is {lat.noise.shape[-1]} px but this model's decoder makes {decoder_side} px images; "
            "use the model the latent was inverted with"
        )
