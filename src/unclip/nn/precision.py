"""Numerical precision of network calls: fp32, or bf16 autocast where it is safe and fast.

``precision`` is one of :data:`PRECISIONS`:

* ``"fp32"``: plain float32 everywhere.
* ``"bf16"``: ``torch.autocast(device, bfloat16)`` around network forwards (and the
  training loss). Weights, gradients, optimizer state and the EMA stay float32 (autocast
  casts copies of the weights per op; the master weights are never converted), and so do
  the ops that need the range or the mantissa: matmuls and convolutions run in bf16 with
  fp32 accumulation; the timestep sinusoids are computed in fp32 (``nn.layers``);
  GroupNorm runs in fp32 through :class:`FP32GroupNorm`; the transformers' residual
  streams and LayerNorms stay fp32 because autocast leaves additions and ``layer_norm``
  alone on CPU and lists ``layer_norm`` and ``softmax`` as fp32 ops on CUDA; SDPA
  accumulates its softmax in fp32 on both. Samplers and losses see the network's output
  cast back to fp32 (:func:`autocast_fn`), so the diffusion maths is fp32.
* ``"auto"``: bf16 where the hardware runs it natively -- a CUDA GPU with bf16 support,
  or a CPU with AVX512-BF16 or AMX (oneDNN's bf16 kernels) -- else fp32.

A pure ``model.to(torch.bfloat16)`` is NOT offered: it gave NaN on the bench decoder.

The command line sets a process-wide default (``--precision``) with
:func:`set_default_precision`; a pipeline and the training loop read it with
:func:`default_precision` unless told otherwise.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError

PRECISIONS = ("fp32", "bf16", "auto")

_default: str | None = None


def set_default_precision(precision: str | None) -> None:
    """Set (or with None clear) the process-wide default precision used by :func:`default_precision`."""
    global _default
    if precision is not None:
        check_precision(precision)
    _default = precision


def default_precision(fallback: str = "fp32") -> str:
    """The precision set by :func:`set_default_precision`, else ``fallback``."""
    return _default or fallback


def check_precision(precision: str) -> str:
    """``precision`` itself when valid; ConfigError naming the choices otherwise."""
    if precision not in PRECISIONS:
        raise ConfigError(
            f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)} "
            "(auto: bf16 where the hardware has it)"
        )
    return precision


def bf16_native(device: str | torch.device = "cpu") -> bool:
    """Whether ``device`` runs bf16 matmuls natively (CUDA bf16, or a CPU with AVX512-BF16 / AMX)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
        return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in probes)
    return False


def resolve_precision(precision: str, device: str | torch.device = "cpu") -> str:
    """``"fp32"`` or ``"bf16"``: what ``precision`` (``"auto"`` included) means on ``device``."""
    check_precision(precision)
    if precision == "auto":
        return "bf16" if bf16_native(device) else "fp32"
    return precision


@contextlib.contextmanager
def autocast(precision: str, device: str | torch.device = "cpu") -> Iterator[str]:
    """Run the block under bf16 autocast when ``precision`` resolves to bf16; yields the resolved precision.

    Use around network forwards (and a training loss), not around optimizer steps.
    """
    device = torch.device(device)
    resolved = resolve_precision(precision, device)
    if resolved == "fp32":
        yield resolved
        return
    with torch.autocast(device.type, dtype=torch.bfloat16):
        yield resolved


def autocast_fn(
    fn: Callable[..., torch.Tensor], precision: str, device: str | torch.device = "cpu"
) -> Callable[..., torch.Tensor]:
    """``fn`` (e.g. a sampler's ``model_fn(x, t)``) run under :func:`autocast`, its output cast to fp32.

    Returns ``fn`` itself when the precision resolves to fp32, so the fp32 path is unchanged.
    """
    if resolve_precision(precision, device) == "fp32":
        return fn

    def wrapped(*args, **kwargs) -> torch.Tensor:
        with autocast(precision, device):
            out = fn(*args, **kwargs)
        return out.float()

    return wrapped


class FP32GroupNorm(nn.GroupNorm):
    """GroupNorm computed in float32 whatever the input dtype (statistics, normalisation and
    affine), returned in the input's dtype: under bf16 autocast the UNet's activations are
    bf16, and a bf16 mean/variance over a whole group loses the small deviations that
    carry the signal. Same parameters and state-dict keys as ``nn.GroupNorm``.

    On CPU the native kernel already does this for a bf16 input with fp32 weights (it
    accumulates and normalises in fp32 and rounds once at the end; tested equal to the
    upcast path to one bf16 ulp), without materialising an fp32 copy of the activation:
    9x faster and half the saved memory, so it is called directly there. Elsewhere the
    input is upcast explicitly."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.float32:
            return super().forward(x)
        if x.device.type == "cpu" and x.dtype == torch.bfloat16:
            return F.group_norm(x, self.num_groups, self.weight, self.bias, self.eps)
        return F.group_norm(x.float(), self.num_groups, self.weight, self.bias, self.eps).to(x.dtype)
