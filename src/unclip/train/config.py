"""What a training run is: its settings (:class:`TrainConfig`), the stage protocol, the result,
the learning-rate schedule and the per-step random streams (used by ``loop.py``).

Determinism: step ``s`` draws all its randomness from a ``torch.Generator`` seeded with
``step_seed(config.seed, s)``; the streams are a pure function of (seed, step), so a resumed
run replays exactly the batches and noise of an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from ..errors import ConfigError
from ..nn.precision import default_precision
from ..nn.precision import resolve_precision as resolve_bf16_or_fp32

PRECISIONS = ("fp32", "bf16", "fp16", "auto")
LR_DECAYS = ("constant", "cosine")
# Config fields that must equal the checkpoint's for a resumed run to be the same run.
RESUME_MUST_MATCH = (
    "lr",
    "weight_decay",
    "betas",
    "warmup_steps",
    "lr_decay",
    "grad_clip",
    "ema_decay",
    "ema_warmup",
    "seed",
)


@dataclass
class TrainConfig:
    """Optimisation settings shared by every stage.

    Attributes:
        steps: total optimiser steps of the run (may be raised when resuming).
        lr: peak learning rate of AdamW.
        weight_decay: AdamW decoupled weight decay, applied to weight matrices and
            kernels (parameters with >= 2 dims) only, not to biases, norms or gains.
        betas: AdamW betas.
        warmup_steps: linear warm-up from lr / warmup_steps to lr over this many steps.
        lr_decay: "constant" after warm-up, or "cosine" down to 0 at ``steps``.
        grad_clip: clip the global gradient norm to this value; 0 disables clipping (the
            norm is still measured and logged).
        ema_decay: EMA decay; 0 disables the EMA (the raw weights are then exported).
        ema_warmup: use ``min(ema_decay, (1 + step) / (10 + step))`` as the EMA decay.
        checkpoint_every: write ``train_state/`` every this many steps (and at the end).
        log_every: append a line to ``loss_log.jsonl`` every this many steps.
        eval_every: call ``stage.evaluate`` every this many steps; 0 means only at the end.
        seed: root of every random draw of the run.
        precision: "fp32", "bf16", "fp16" (loss scaling on CUDA) or "auto" (bf16 on a
            CUDA device or CPU that runs it natively, else fp32). Weights, gradients,
            optimizer state and the EMA stay fp32 in every mode.
        device: where the model is trained ("cpu", "cuda", "cuda:1", ...); under torchrun
            "cuda" means this process's GPU (``LOCAL_RANK``).
        fsdp: with several processes, shard parameters, gradients and optimizer state
            with FSDP2 instead of replicating them (DDP); checkpoints stay unsharded.
        grad_checkpointing: recompute the UNet blocks' activations in backward.
    """

    steps: int = 1000
    lr: float = 3e-4
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_steps: int = 100
    lr_decay: str = "constant"
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    ema_warmup: bool = True
    checkpoint_every: int = 500
    log_every: int = 10
    eval_every: int = 0
    seed: int = 0
    precision: str = "fp32"
    device: str = "cpu"
    fsdp: bool = False
    grad_checkpointing: bool = False

    def validate(self) -> None:
        """Raise ConfigError naming the first impossible value."""
        checks = [
            ("steps", self.steps >= 0, "a count of steps >= 0"),
            ("lr", self.lr > 0 and math.isfinite(self.lr), "a positive learning rate such as 3e-4"),
            ("weight_decay", self.weight_decay >= 0, "a value >= 0"),
            (
                "betas",
                len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas),
                "two values in [0, 1), e.g. (0.9, 0.999)",
            ),
            ("warmup_steps", self.warmup_steps >= 0, "a count >= 0"),
            ("lr_decay", self.lr_decay in LR_DECAYS, f"one of {LR_DECAYS}"),
            ("grad_clip", self.grad_clip >= 0, "a norm > 0, or 0 to disable clipping"),
            ("ema_decay", 0 <= self.ema_decay < 1, "a value in [0, 1), 0 disables the EMA"),
            ("checkpoint_every", self.checkpoint_every >= 1, "a count >= 1"),
            ("log_every", self.log_every >= 1, "a count >= 1"),
            ("eval_every", self.eval_every >= 0, "a count >= 0 (0: evaluate at the end only)"),
            ("precision", self.precision in PRECISIONS, f"one of {PRECISIONS}"),
        ]
        for name, ok, expected in checks:
            if not ok:
                raise ConfigError(f"TrainConfig.{name}={getattr(self, name)!r} is invalid; expected {expected}")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainConfig":
        """Build a config from a dict (e.g. a preset); unknown keys raise ConfigError listing the valid ones."""
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(data) - set(names))
        if unknown:
            raise ConfigError(f"unknown TrainConfig field(s) {unknown}; valid fields: {names}")
        values = dict(data)
        if "betas" in values:
            values["betas"] = tuple(values["betas"])
        return cls(**values)


class Stage(Protocol):
    """What a stage gives the loop. Optional extras, looked up with ``getattr``:

    - ``evaluate(model, step) -> dict[str, float]``: called (in ``torch.no_grad``, with
      the EMA model in eval mode) every ``eval_every`` steps and at the end.
    - ``to(device)``: move the stage's modules (e.g. a frozen CLIP it encodes with) to the
      training device; without it the loop moves ``stage.model`` only.
    """

    name: str
    model: nn.Module

    def get_batch(self, step: int, generator: torch.Generator) -> Any:
        """Batch number ``step`` (0-based); must depend only on ``step`` and ``generator``.

        The loop passes the batch to ``loss`` untouched (no device moves): the stage
        puts tensors where ``self.model`` lives, typically inside ``loss``.
        """
        ...

    def loss(self, batch: Any, generator: torch.Generator) -> tuple[Tensor, dict[str, float]]:
        """Scalar loss of ``self.model`` on ``batch`` and metrics to log (floats or 0-d tensors).

        ``generator`` is the step's CPU generator (the one ``get_batch`` used, continued).
        Runs inside ``torch.autocast`` when mixed precision is on.
        """
        ...

    def export(self, model: nn.Module, out_dir: Path) -> None:
        """Write the inference component for ``model`` (the EMA copy) to ``out_dir/<name>/``."""
        ...


@dataclass
class TrainResult:
    """Summary of a call to :func:`train`.

    Attributes:
        steps: optimiser steps completed in total (including those before a resume).
        final_loss: mean loss of the last log window (NaN when nothing was logged).
        wall_time_s: wall-clock seconds of this call.
        steps_per_s: steps of this call per wall-clock second.
        out_dir: the run's folder.
        start_step: the step this call started from (0, or the resumed checkpoint's).
        stopped_early: True when ``stop_after`` or a stop signal ended the call before ``config.steps``.
        interrupted: the signal that stopped the call (``"SIGTERM"``, ...), else None; the
            run's checkpoint is at ``steps``.
        eval: the last result of ``stage.evaluate`` (empty when none ran).
        model: the exported module (EMA copy, or the raw model when EMA is off).
    """

    steps: int
    final_loss: float
    wall_time_s: float
    steps_per_s: float
    out_dir: Path
    start_step: int = 0
    stopped_early: bool = False
    interrupted: str | None = None
    eval: dict[str, float] = field(default_factory=dict)
    model: nn.Module | None = field(default=None, repr=False, compare=False)


# --------------------------------------------------------------------------- seeds, LR, precision

_MASK64 = (1 << 64) - 1


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def step_seed(seed: int, step: int, stream: int = 0) -> int:
    """A 63-bit seed for ``step`` of a run seeded ``seed`` (splitmix64; no Python ``hash``).

    Distinct (seed, step, stream) triples give unrelated seeds, so neighbouring steps or
    runs never share noise. Stream 0 feeds the stage's generator, stream 1 the global RNG.
    """
    return _splitmix64(_splitmix64(_splitmix64(seed & _MASK64) ^ step) ^ stream) >> 1


def step_generator(seed: int, step: int) -> torch.Generator:
    """The CPU generator the loop hands to ``get_batch`` and ``loss`` at ``step``."""
    return torch.Generator().manual_seed(step_seed(seed, step, 0))


def lr_factor(step: int, config: TrainConfig) -> float:
    """Multiplier of ``config.lr`` at 0-based ``step``.

    Linear warm-up ``(step + 1) / warmup_steps`` (the first step already learns), then 1,
    or with ``lr_decay="cosine"`` ``0.5 * (1 + cos(pi * p))`` with p going 0 -> 1 from the
    end of warm-up to ``config.steps``.
    """
    if step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    if config.lr_decay == "cosine":
        span = max(1, config.steps - config.warmup_steps)
        progress = min(1.0, (step - config.warmup_steps) / span)
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    return 1.0


def lr_at(step: int, config: TrainConfig) -> float:
    """Learning rate used by the optimiser at 0-based ``step``."""
    return config.lr * lr_factor(step, config)


def resolve_device(name: str) -> torch.device:
    """``config.device`` as a torch.device; ConfigError when it does not exist here."""
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError) as exc:
        raise ConfigError(
            f"TrainConfig.device={name!r} is not a device torch knows ({exc}); use 'cpu' or 'cuda'"
        ) from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"TrainConfig.device={name!r} but CUDA is not available on this machine; use device='cpu'")
    return device


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``precision`` on ``device`` (None: plain fp32).

    A ``--precision`` given on the command line (:func:`unclip.nn.precision.default_precision`)
    overrides the preset's; "auto" is bf16 where the hardware runs it natively (a CUDA GPU
    with bf16, or a CPU with AVX512-BF16 / AMX), see :mod:`unclip.nn.precision`.
    """
    precision = default_precision(precision)
    if precision == "fp16":
        return torch.float16
    return torch.bfloat16 if resolve_bf16_or_fp32(precision, device) == "bf16" else None


# --------------------------------------------------------------------------- helpers
