"""Geometry of CLIP latents for the manipulations (unCLIP section 3): slerp, text diffs, theta schedules.

Pure tensor maths on vectors; no network. Interpolations travel along great circles of
the embedding sphere (section 3.2) and text diffs along the normalised difference of two
text embeddings (section 3.3).
"""

from __future__ import annotations

import math

import torch

from ..errors import InputError

__all__ = ["slerp", "text_diff_direction", "theta_schedule"]


def _unit(x: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    return x / x.norm(dim=-1, keepdim=True).clamp_min(eps)


def _orthogonal_to(u: torch.Tensor) -> torch.Tensor:
    """A deterministic unit vector orthogonal to each unit vector in ``u`` (..., D), D >= 2.

    Gram-Schmidt of the standard basis vector along which ``u`` is smallest in absolute
    value (the first such axis on ties), so the result depends on ``u`` alone.
    """
    axis = u.abs().argmin(dim=-1, keepdim=True)
    e = torch.zeros_like(u).scatter_(-1, axis, 1.0)
    return _unit(e - (e * u).sum(-1, keepdim=True) * u)


def slerp(a: torch.Tensor, b: torch.Tensor, theta: float | torch.Tensor, *, parallel_eps: float = 1e-4) -> torch.Tensor:
    """Spherical interpolation from ``a`` (theta 0) to ``b`` (theta 1), norms interpolated linearly.

    Args:
        a, b: (..., D) vectors, broadcastable against each other.
        theta: a number, or a tensor broadcast against the leading dimensions: shape (B,)
            with a, b of shape (B, D) gives one theta per row; shape (F,) with a, b of shape
            (D,) gives F frames (F, D). Values outside [0, 1] extrapolate along the arc.
        parallel_eps: below this sine of the angle the vectors count as parallel or opposite.
    Returns:
        (..., D): direction sin((1-theta) w) u_a + sin(theta w) u_b over sin w, where u are the
        unit vectors and w = arccos(u_a . u_b) is the angle between them, times the norm
        (1 - theta)|a| + theta|b|.

    Degenerate cases, all deterministic:

    * nearly parallel (w ~ 0): the arc is a line; the direction is the normalised lerp of
      the unit vectors (equal to slerp to second order in w);
    * opposite (w ~ pi): every great circle through u_a reaches -u_a, so one is chosen: the
      one through :func:`_orthogonal_to` (u_a), i.e. the direction cos(pi theta) u_a +
      sin(pi theta) v with v the basis vector least aligned with u_a, made orthogonal to it;
    * a zero vector: no direction exists; plain lerp (1 - theta) a + theta b.
    """
    a, b = torch.broadcast_tensors(torch.as_tensor(a), torch.as_tensor(b))
    if a.dim() == 0 or a.shape[-1] < 2:
        raise InputError(f"slerp needs vectors of dimension >= 2 along the last axis, got shape {tuple(a.shape)}")
    if not a.is_floating_point():
        a, b = a.float(), b.float()
    t = torch.as_tensor(theta, dtype=a.dtype, device=a.device)
    if t.dim() > 0:
        t = t.unsqueeze(-1)  # theta (..., ) -> (..., 1), broadcast over the vector axis
    na, nb = a.norm(dim=-1, keepdim=True), b.norm(dim=-1, keepdim=True)
    ua, ub = _unit(a), _unit(b)
    cos = (ua * ub).sum(-1, keepdim=True).clamp(-1.0, 1.0)
    omega = torch.arccos(cos)
    sin = torch.sin(omega)
    general = (torch.sin((1 - t) * omega) * ua + torch.sin(t * omega) * ub) / sin.clamp_min(parallel_eps)
    parallel = _unit((1 - t) * ua + t * ub)
    opposite = torch.cos(math.pi * t) * ua + torch.sin(math.pi * t) * _orthogonal_to(ua)
    degenerate = sin < parallel_eps
    direction = torch.where(degenerate & (cos > 0), parallel, torch.where(degenerate, opposite, general))
    out = direction * ((1 - t) * na + t * nb)
    zero = (na == 0) | (nb == 0)
    return torch.where(zero, (1 - t) * a + t * b, out)


def text_diff_direction(z_t: torch.Tensor, z_t0: torch.Tensor) -> torch.Tensor:
    """The text diff z_d = norm(z_t - z_t0) (section 3.3): (..., E) unit vectors.

    ``z_t`` embeds the target caption, ``z_t0`` a caption of the current image (or a
    neutral one). Identical embeddings have no difference to follow: an InputError.
    """
    diff = z_t - z_t0
    norm = diff.norm(dim=-1, keepdim=True)
    if bool((norm < 1e-8).any()):
        raise InputError(
            "the two captions have the same CLIP text embedding, so there is no text diff; choose a --to caption "
            "that differs from --from"
        )
    return diff / norm


def theta_schedule(frames: int, max_theta: float = 1.0) -> torch.Tensor:
    """``frames`` evenly spaced values from 0 to ``max_theta`` (both included), float64."""
    if int(frames) < 2:
        raise InputError(f"frames must be >= 2 (the two ends), got {frames}")
    return torch.linspace(0.0, float(max_theta), int(frames), dtype=torch.float64)
