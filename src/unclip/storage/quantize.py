"""Compact storage of shipped weights: float16, or int8 with one scale per output channel.

The repository's weight budget (40 MB for the shipped model) holds the unCLIP decoder,
the GLIDE-style baseline decoder, both priors, CLIP and an upsampler only if the two
decoders (most of the bytes) are stored in 8 bits. Symmetric per-output-channel int8
(``w ~= q * scale[c]``, ``q`` in [-127, 127]) keeps each weight within half a step,
``max|w[c]| / 254``, of its value, which changes a 32 px decoder's samples by far less than
its own sampling noise (measured by ``benchmarks/ship_model.py --check``).

Only the storage changes: :func:`dequantize_state` runs when a component is loaded, and
every model computes in float32 as before. A quantised tensor ``name`` is stored as int8
with its scales under ``name + SCALE_SUFFIX``; tensors without scales load unchanged.
"""

from __future__ import annotations

import torch

SCALE_SUFFIX = ".__int8_scale"
MIN_QUANTISED_NUMEL = 1024  # small tensors (biases, norms, null embeddings) stay in float16


def quantize_tensor(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(int8 values, float16 scale per output channel) of a weight whose dim 0 is the output."""
    flat = w.detach().float().reshape(w.shape[0], -1)
    scale = flat.abs().amax(dim=1).clamp_min(1e-12) / 127.0
    scale = scale.half().float()  # the scale is stored in float16: quantise against that value
    q = torch.round(flat / scale[:, None]).clamp(-127, 127).to(torch.int8)
    return q.reshape(w.shape), scale.half()


def quantize_state(state: dict[str, torch.Tensor], *, keep: set[str] = frozenset()) -> dict[str, torch.Tensor]:
    """Weights for storage: matrices and kernels (>= 2 dims, >= MIN_QUANTISED_NUMEL values)
    as int8 + scales, other floating tensors as float16; names in ``keep`` stay as they are."""
    out: dict[str, torch.Tensor] = {}
    for name, w in state.items():
        if name.endswith(SCALE_SUFFIX):
            raise ValueError(f"tensor name {name!r} ends with the reserved suffix {SCALE_SUFFIX!r}")
        if name in keep or not w.is_floating_point():
            out[name] = w
        elif w.ndim >= 2 and w.numel() >= MIN_QUANTISED_NUMEL:
            out[name], out[name + SCALE_SUFFIX] = quantize_tensor(w)
        else:
            out[name] = w.half()
    return out


def dequantize_state(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Undo :func:`quantize_state`: int8 tensors with scales become float32; the rest is unchanged."""
    scales = {k[: -len(SCALE_SUFFIX)]: v for k, v in tensors.items() if k.endswith(SCALE_SUFFIX)}
    if not scales:
        return tensors
    out = {}
    for name, w in tensors.items():
        if name.endswith(SCALE_SUFFIX):
            continue
        if name in scales:
            s = scales[name].float()
            out[name] = w.float() * s.reshape(-1, *([1] * (w.ndim - 1)))
        else:
            out[name] = w
    return out
