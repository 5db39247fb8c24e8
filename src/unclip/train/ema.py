"""Exponential moving average (EMA) of a model's weights.

Diffusion models sample noticeably better from an EMA of their weights than from the raw
weights (DDPM, Ho et al. 2020, Appendix B; the unCLIP decoder and prior follow it), so
the training loop keeps one and exports it as the inference component.

After optimiser step ``step`` (0-based), every floating-point parameter is updated as

    ema <- decay * ema + (1 - decay) * param,

with ``decay = min(ema_decay, (1 + step) / (10 + step))`` when warm-up is on. The warm-up
lets the average forget the random initialisation quickly in the first few hundred steps
instead of dragging it along for ~1 / (1 - ema_decay) steps. Buffers (e.g. normalisation
statistics) and non-float parameters are copied, not averaged.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from .distributed import local_tensors


class EMA:
    """An averaged copy of ``model``.

    Args:
        model: the module being trained; a deep copy is taken now, in eval mode and with
            gradients off, and lives in :attr:`model` (same device and dtype).
        decay: the target decay in [0, 1); 0.999 averages over roughly the last 1000 steps.
        warmup: use ``min(decay, (1 + step) / (10 + step))`` as the per-step decay.
    """

    def __init__(self, model: nn.Module, decay: float = 0.999, warmup: bool = True) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        self.decay = float(decay)
        self.warmup = bool(warmup)
        self.model: nn.Module = copy.deepcopy(model).eval().requires_grad_(False)
        for p in self.model.parameters():
            p.grad = None

    def decay_at(self, step: int) -> float:
        """The decay used for the update after optimiser step ``step`` (0-based)."""
        if self.warmup:
            return min(self.decay, (1.0 + step) / (10.0 + step))
        return self.decay

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        """Fold the current weights of ``model`` into the average (call after ``optimizer.step()``).

        ``model`` must have the same structure as the module the EMA was built from.
        """
        weight = 1.0 - self.decay_at(step)
        ema_params = list(self.model.parameters())
        params = list(model.parameters())
        if len(ema_params) != len(params):
            raise ValueError(f"EMA.update: model has {len(params)} parameters, the EMA copy has {len(ema_params)}")
        avg_e, avg_p = [], []
        for e, p in zip(ema_params, params):
            if e.is_floating_point():
                avg_e.append(e)
                avg_p.append(p.detach())
            else:
                e.copy_(p)
        if avg_e:
            # One fused kernel per dtype/device group instead of one per parameter; on the local
            # shards when FSDP shards both copies alike (the update is element-wise).
            torch._foreach_lerp_(local_tensors(avg_e), local_tensors(avg_p), weight)
        for e, b in zip(self.model.buffers(), model.buffers()):
            e.copy_(b)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The averaged weights, keyed like ``model.state_dict()``."""
        return self.model.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore averaged weights saved by :meth:`state_dict` (strict)."""
        self.model.load_state_dict(state, strict=True)
