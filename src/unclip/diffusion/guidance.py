"""Wrappers that turn a conditional network into a ``model_fn(x, t)`` for the samplers.

Classifier-free guidance (Ho & Salimans 2021; GLIDE Sec. 2.3; unCLIP Sec. 2.1): with c and u
the outputs under the condition and under the dropped ("null") condition, the guided output
is u + s (c - u). Both halves come from ONE batched forward pass of size 2B. Only the
prediction channels are guided; learned-variance channels, if any, are taken from the
conditional half, as in GLIDE.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping

import torch

from ..errors import InputError

ModelFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def bind(model_fn: Callable[..., torch.Tensor], **cond: Any) -> ModelFn:
    """``model_fn(x, t, **cond)`` as a two-argument ``fn(x, t)``: the unguided case."""

    def bound(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return model_fn(x, t, **cond)

    return bound


def _pair(name: str, c: Any, u: Any, batch: int) -> Any:
    """cat([c, u]) along the batch, broadcasting a batch-1 unconditional value (a null embedding)."""
    if c is None and u is None:
        return None
    if not isinstance(c, torch.Tensor) or not isinstance(u, torch.Tensor):
        raise InputError(
            f"guidance condition {name!r} must be a tensor in both cond and uncond (or None in both), got "
            f"{type(c).__name__} and {type(u).__name__}"
        )
    if c.shape[0] != batch:
        raise InputError(f"cond[{name!r}] has batch {c.shape[0]} but x has batch {batch}")
    if u.shape[0] == 1 and batch > 1:
        u = u.expand(batch, *u.shape[1:])
    if u.shape != c.shape:
        raise InputError(
            f"uncond[{name!r}] has shape {tuple(u.shape)} but cond[{name!r}] has {tuple(c.shape)}; they must match "
            "(or uncond have batch 1)"
        )
    return torch.cat([c, u], dim=0)


def classifier_free_guidance(
    model_fn: Callable[..., torch.Tensor],
    scale: float,
    cond: Mapping[str, Any],
    uncond: Mapping[str, Any],
    guided_channels: int | None = None,
) -> ModelFn:
    """A ``fn(x, t)`` that returns the classifier-free-guided output of ``model_fn(x, t, **cond)``.

    Args:
        model_fn: the network, called as ``model_fn(x, t, **kwargs)`` -> (B, C_out, ...).
        scale: guidance scale s; 1 is plain conditional sampling and then skips the
            unconditional half (one forward of batch B); otherwise one forward of batch 2B
            on ``cat([x, x])``, ``cat([t, t])`` and each ``cat([cond[k], uncond[k]])``.
        cond, uncond: keyword tensors (B, ...) with the same keys; an uncond tensor of
            batch 1 is broadcast; a key may be None in both.
        guided_channels: how many leading channels (dim 1) of the output are guided. None
            guides all; with a learned variance pass the number of prediction channels
            (``x.shape[1]``) so the variance channels come unguided from the conditional half.
    """
    if not math.isfinite(float(scale)):
        raise InputError(f"guidance scale must be a finite number, got {scale!r}")
    if set(cond) != set(uncond):
        raise InputError(f"cond and uncond must have the same keys, got {sorted(cond)} and {sorted(uncond)}")
    if guided_channels is not None and guided_channels < 1:
        raise InputError(f"guided_channels must be a positive channel count or None (all), got {guided_channels}")
    scale = float(scale)

    if scale == 1.0:
        return bind(model_fn, **cond)

    paired: dict[int, dict[str, Any]] = {}  # batch size -> cat([cond, uncond]), built once, not every step

    def guided(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        batch = x.shape[0]
        if batch not in paired:
            paired[batch] = {k: _pair(k, cond[k], uncond[k], batch) for k in cond}
        kwargs = paired[batch]
        out = model_fn(torch.cat([x, x], dim=0), torch.cat([t, t], dim=0), **kwargs)
        c, u = out[:batch], out[batch:]
        if guided_channels is None:
            return u + scale * (c - u)
        if guided_channels > out.shape[1]:
            raise InputError(f"guided_channels={guided_channels} exceeds the model output's {out.shape[1]} channels")
        g = u[:, :guided_channels] + scale * (c[:, :guided_channels] - u[:, :guided_channels])
        return torch.cat([g, c[:, guided_channels:]], dim=1)

    return guided
