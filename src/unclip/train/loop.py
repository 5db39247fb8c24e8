"""The training loop: one thin loop that knows no stage (DESIGN.md 3.7).

As in minGPT's trainer, the loop has nothing to do with any particular network. A *stage*
(CLIP, prior, decoder, upsampler; see ``train/stages.py``) supplies a model, a way to draw
batch ``step`` and a batch-to-loss function; the loop owns everything else: AdamW with
warm-up (and optional cosine decay), gradient clipping, EMA, mixed precision, checkpoints
that resume bit-exactly, the loss log and the progress bar.

Determinism: step ``s`` draws all its randomness from a ``torch.Generator`` seeded with
``step_seed(config.seed, s)`` (passed to ``get_batch`` and ``loss``), and torch's global
RNG (used by dropout) is re-seeded from ``step_seed(config.seed, s, stream=1)`` before the
step. A run stopped after step k and resumed therefore replays exactly the batches, noise
and dropout masks of an uninterrupted run, and ends with bit-identical weights (on CPU, or
on CUDA with deterministic kernels).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from ..checkpoint import atomic_write_bytes, load_state_into
from ..errors import CheckpointError, ConfigError, UnclipError
from ..nn.precision import default_precision
from ..nn.precision import resolve_precision as resolve_bf16_or_fp32
from .ema import EMA
from .state import STATE_DIR, STATE_FILE, capture_rng, find_train_state, load_train_state, remove_train_state, restore_rng, save_train_state

logger = logging.getLogger(__name__)

LOSS_LOG = "loss_log.jsonl"
EVAL_LOG = "eval_log.jsonl"
PRECISIONS = ("fp32", "bf16", "fp16", "auto")
LR_DECAYS = ("constant", "cosine")
# Config fields that must equal the checkpoint's for a resumed run to be the same run.
RESUME_MUST_MATCH = ("lr", "weight_decay", "betas", "warmup_steps", "lr_decay", "grad_clip", "ema_decay", "ema_warmup", "seed")
_RESERVED = ("step", "loss", "lr", "grad_norm", "steps_per_s")


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
        device: where the model is trained ("cpu", "cuda", "cuda:1", ...).
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

    def validate(self) -> None:
        """Raise ConfigError naming the first impossible value."""
        checks = [
            ("steps", self.steps >= 0, "a count of steps >= 0"),
            ("lr", self.lr > 0 and math.isfinite(self.lr), "a positive learning rate such as 3e-4"),
            ("weight_decay", self.weight_decay >= 0, "a value >= 0"),
            ("betas", len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas), "two values in [0, 1), e.g. (0.9, 0.999)"),
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
        stopped_early: True when ``stop_after`` ended the call before ``config.steps``.
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
        raise ConfigError(f"TrainConfig.device={name!r} is not a device torch knows ({exc}); use 'cpu' or 'cuda'") from exc
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


def _build_optimizer(model: nn.Module, config: TrainConfig, device: torch.device) -> torch.optim.AdamW:
    """AdamW with weight decay on >= 2-d parameters only (biases and norm gains are not decayed)."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    if not trainable:
        raise ConfigError("the stage's model has no trainable parameters (all have requires_grad=False); nothing to train")
    decay = [p for p in trainable if p.ndim >= 2]
    no_decay = [p for p in trainable if p.ndim < 2]
    groups = [{"params": ps, "weight_decay": wd} for ps, wd in ((decay, config.weight_decay), (no_decay, 0.0)) if ps]
    fused = True if device.type == "cuda" else None
    return torch.optim.AdamW(groups, lr=config.lr, betas=tuple(config.betas), weight_decay=config.weight_decay, fused=fused)


def _config_json(config: TrainConfig) -> dict[str, Any]:
    return json.loads(json.dumps(dataclasses.asdict(config)))


def _check_resume(saved_step: int, saved_stage: str, saved: dict[str, Any], stage_name: str, config: TrainConfig, where: Path) -> None:
    """Refuse to resume a different run; the message lists what differs and how to fix it."""
    if saved_stage != stage_name:
        raise CheckpointError(f"{where} was written by stage '{saved_stage}', not '{stage_name}'; point out_dir at this stage's own folder")
    now = _config_json(config)
    diffs = [f"{k}: checkpoint {saved.get(k)!r}, now {now[k]!r}" for k in RESUME_MUST_MATCH if saved.get(k) != now[k]]
    if diffs:
        raise CheckpointError(
            f"cannot resume from {where}: the config differs from the checkpoint's in {'; '.join(diffs)}. "
            f"Resume with the checkpoint's values (see {where / STATE_FILE}), or train into a new out_dir"
        )
    if saved_step > config.steps:
        raise CheckpointError(f"{where} is at step {saved_step}, beyond TrainConfig.steps={config.steps}; pass steps >= {saved_step} to resume")
    if saved.get("steps") != config.steps and config.lr_decay == "cosine":
        logger.warning("steps changed from %s to %d with cosine decay: the LR curve of the remaining steps changes", saved.get("steps"), config.steps)
    if saved.get("precision") != config.precision:
        logger.warning("precision changed from %s to %s: the resumed run will not match an uninterrupted one bit for bit", saved.get("precision"), config.precision)


def _truncate_jsonl(path: Path, step: int) -> int:
    """Drop records after ``step`` (and a torn last line) from a JSON-lines log; returns lines kept."""
    if not path.exists():
        return 0
    kept = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if record.get("step", 0) <= step:
            kept.append(line)
    atomic_write_bytes(path, "".join(line + "\n" for line in kept).encode())
    return len(kept)


def _last_logged_loss(path: Path) -> float:
    if not path.exists():
        return math.nan
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    return float(json.loads(lines[-1]).get("loss", math.nan)) if lines else math.nan


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _seed_global_rng(seed: int, device: torch.device) -> None:
    """Seed the global RNGs that dropout and friends draw from: the CPU one and the training device's.

    Not ``torch.manual_seed``: where CUDA is not initialised it records a stack trace on
    every call (milliseconds each), which would cost more than a small model's step.
    """
    torch.default_generator.manual_seed(seed)
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        torch.cuda.default_generators[index].manual_seed(seed)
    elif device.type != "cpu":
        torch.manual_seed(seed)


def _sync_every_step(device: torch.device) -> bool:
    """Check each step's loss at once on CPU (free); on accelerators only at log/checkpoint steps, to keep the queue full."""
    return device.type == "cpu"


# --------------------------------------------------------------------------- the loop


def train(
    stage: Stage,
    config: TrainConfig,
    out_dir: str | Path,
    *,
    resume: bool = False,
    progress: bool = True,
    on_log: Callable[[dict], None] | None = None,
    stop_after: int | None = None,
) -> TrainResult:
    """Train ``stage.model`` for ``config.steps`` steps, checkpointing into ``out_dir``.

    Args:
        stage: supplies the model, batches, the loss and the export (see :class:`Stage`).
        config: optimisation settings.
        out_dir: the run's folder: ``train_state/``, ``loss_log.jsonl``, ``eval_log.jsonl``
            and, after the last step, the component written by ``stage.export``.
        resume: continue from ``out_dir/train_state`` (CheckpointError if absent or
            written with a different config; :func:`has_train_state` tells beforehand).
            Without it the run starts from step 0, removing any earlier training state
            and loss log in ``out_dir``.
        progress: show a tqdm bar (loss and LR in its postfix).
        on_log: called with each record written to ``loss_log.jsonl`` and with
            ``{"step": s, "eval": {...}}`` after each evaluation.
        stop_after: stop, with a checkpoint and without export, once this many steps are
            done (for preemptible jobs and tests; resume later with ``resume=True``).

    Returns:
        A :class:`TrainResult`.

    Raises:
        UnclipError: the loss (or, without loss scaling, the gradient norm) is not finite;
            the message names the step. The last checkpoint is kept.
    """
    config.validate()
    if stop_after is not None and stop_after < 1:
        raise ConfigError(f"stop_after={stop_after} is invalid; pass a step count >= 1 or None")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    device = resolve_device(config.device)
    amp_dtype = resolve_precision(config.precision, device)
    if device.type == "cuda":
        torch.set_float32_matmul_precision("high")  # TF32 matmuls
        torch.backends.cudnn.allow_tf32 = True
    elif amp_dtype == torch.float16:
        logger.warning("fp16 on %s runs without loss scaling; bf16 is the safer choice off CUDA", device)

    to = getattr(stage, "to", None)
    to(device) if callable(to) else stage.model.to(device)
    model = stage.model
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = _build_optimizer(model, config, device)
    ema = EMA(model, config.ema_decay, config.ema_warmup) if config.ema_decay > 0 else None
    scaler = torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 and device.type == "cuda" else None
    log_path, eval_path = out_dir / LOSS_LOG, out_dir / EVAL_LOG

    start, window, records = 0, [], 0
    if resume:
        state = load_train_state(out_dir)
        _check_resume(state.step, state.stage, state.config, stage.name, config, state.directory or out_dir / STATE_DIR)
        load_state_into(model, state.model, stage.name)
        if ema is not None:
            load_state_into(ema.model, state.ema or {}, f"{stage.name} (EMA)")
        try:
            optimizer.load_state_dict(state.optimizer)
        except (ValueError, KeyError) as exc:
            raise CheckpointError(f"optimizer state in {state.directory} does not fit the model's parameters ({exc})") from exc
        if scaler is not None and state.scaler:
            scaler.load_state_dict(state.scaler)
        restore_rng(state.rng)
        start, window = state.step, list(state.log.get("window", []))
        records = _truncate_jsonl(log_path, start)
        _truncate_jsonl(eval_path, start)
        logger.info("resuming %s from step %d of %d", stage.name, start, config.steps)
    else:
        # A fresh run starts over: drop an older run's state now, so that a crash before
        # this run's first checkpoint cannot later be "resumed" from the other run.
        if find_train_state(out_dir) is not None:
            logger.warning("%s holds a training state from an earlier run; starting over (pass resume=True to continue it instead)", out_dir)
        remove_train_state(out_dir)
        log_path.unlink(missing_ok=True)
        eval_path.unlink(missing_ok=True)

    n_params = sum(p.numel() for p in params)
    logger.info("training %s: %d parameters, steps %d -> %d on %s (%s)", stage.name, n_params, start, config.steps, device, config.precision)
    end = config.steps if stop_after is None else min(config.steps, max(stop_after, start))
    evaluate = getattr(stage, "evaluate", None)
    export_model = ema.model if ema is not None else model
    max_norm = config.grad_clip if config.grad_clip > 0 else math.inf
    sync_each = _sync_every_step(device)
    pending: list[tuple[int, Tensor, Tensor, dict]] = []
    last_ckpt, last_loss, last_eval = start, math.nan, {}
    t_start = t_window = time.perf_counter()
    timed = 0

    def flush() -> None:
        """Move pending per-step values to the window as floats; stop on a non-finite one."""
        if not pending:
            return
        losses = torch.stack([p[1].detach().float().reshape(()) for p in pending]).tolist()
        norms = torch.stack([p[2].detach().float().reshape(()) for p in pending]).tolist()
        for (step, _, _, metrics), loss_value, norm in zip(pending, losses, norms):
            bad = "loss" if not math.isfinite(loss_value) else ("gradient norm" if scaler is None and not math.isfinite(norm) else None)
            if bad:
                value = loss_value if bad == "loss" else norm
                raise UnclipError(
                    f"stage '{stage.name}': the {bad} is {value} at step {step} (0-based; update {step + 1} of {config.steps}). "
                    f"Training stopped; the last checkpoint ({out_dir / STATE_DIR}) is at step {last_ckpt}. "
                    f"Lower the learning rate (lr={config.lr}), keep grad_clip > 0, check the data for NaN/inf, "
                    f"or use precision 'fp32' or 'bf16' instead of 'fp16'"
                )
            entry = {"loss": loss_value, "grad_norm": norm if math.isfinite(norm) else None}
            entry["metrics"] = {k: float(v) for k, v in metrics.items()}
            window.append(entry)
        pending.clear()

    bar = tqdm(total=config.steps, initial=start, disable=not progress, desc=f"train {stage.name}", unit="step", dynamic_ncols=True)
    try:
        with open(log_path, "a") as log_file:
            for step in range(start, end):
                lr = lr_at(step, config)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                generator = step_generator(config.seed, step)
                _seed_global_rng(step_seed(config.seed, step, 1), device)

                batch = stage.get_batch(step, generator)
                with torch.autocast(device.type, dtype=amp_dtype) if amp_dtype is not None else contextlib.nullcontext():
                    out = stage.loss(batch, generator)
                loss, metrics = out if isinstance(out, tuple) else (out, {})
                if not isinstance(loss, Tensor) or loss.numel() != 1:
                    raise UnclipError(f"stage '{stage.name}'.loss must return (scalar tensor, metrics), got {type(loss).__name__} {getattr(loss, 'shape', '')}")
                if not loss.requires_grad:
                    raise UnclipError(f"stage '{stage.name}'.loss returned a loss that does not depend on any trainable parameter of stage.model")

                optimizer.zero_grad(set_to_none=True)
                if scaler is not None:
                    scaler.scale(loss).backward()
                    scaler.unscale_(optimizer)
                else:
                    loss.backward()
                grad_norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
                if scaler is not None:
                    scaler.step(optimizer)
                    scaler.update()
                else:
                    optimizer.step()
                if ema is not None:
                    ema.update(model, step)
                pending.append((step, loss.detach(), grad_norm.detach(), {k: (v.detach() if isinstance(v, Tensor) else v) for k, v in (metrics or {}).items()}))
                done, timed = step + 1, timed + 1
                bar.update(1)

                is_log = done % config.log_every == 0 or done == config.steps
                is_ckpt = done % config.checkpoint_every == 0 or done == end
                is_eval = callable(evaluate) and ((config.eval_every and done % config.eval_every == 0) or done == config.steps)
                if sync_each or is_log or is_ckpt or is_eval:
                    flush()
                if is_log:
                    now = time.perf_counter()
                    record: dict[str, Any] = {
                        "step": done,
                        "loss": _mean([w["loss"] for w in window]),
                        "lr": lr,
                        "grad_norm": _mean([w["grad_norm"] for w in window if w["grad_norm"] is not None]),
                        "steps_per_s": timed / max(now - t_window, 1e-9),
                    }
                    for key in dict.fromkeys(k for w in window for k in w["metrics"]):
                        name = key if key not in _RESERVED else f"metric/{key}"
                        record[name] = _mean([w["metrics"][key] for w in window if key in w["metrics"]])
                    log_file.write(json.dumps(record) + "\n")
                    log_file.flush()
                    records += 1
                    window, t_window, timed = [], now, 0
                    last_loss = record["loss"]
                    bar.set_postfix(loss=f"{last_loss:.4g}", lr=f"{lr:.2e}", refresh=False)
                    logger.info("%s step %d/%d loss %.5g lr %.3g grad_norm %.4g", stage.name, done, config.steps, last_loss, lr, record["grad_norm"] if record["grad_norm"] is not None else math.nan)
                    if on_log is not None:
                        on_log(dict(record))
                if is_eval:
                    last_eval = _run_eval(evaluate, export_model, done, eval_path, stage.name)
                    if on_log is not None:
                        on_log({"step": done, "eval": dict(last_eval)})
                if is_ckpt:
                    save_train_state(
                        out_dir,
                        stage=stage.name,
                        step=done,
                        config=_config_json(config),
                        model_state=model.state_dict(),
                        optimizer_state=optimizer.state_dict(),
                        ema_state=ema.state_dict() if ema is not None else None,
                        scaler_state=scaler.state_dict() if scaler is not None else None,
                        rng=capture_rng(),
                        log={"records": records, "window": window},
                    )
                    last_ckpt = done
    finally:
        bar.close()

    finished = end == config.steps
    if finished:
        export_model.eval()
        stage.export(export_model, out_dir)
        logger.info("%s: exported the %s weights to %s", stage.name, "EMA" if ema is not None else "trained", out_dir / stage.name)
    wall = time.perf_counter() - t_start
    return TrainResult(
        steps=end,
        final_loss=last_loss if math.isfinite(last_loss) else _last_logged_loss(log_path),
        wall_time_s=wall,
        steps_per_s=(end - start) / wall if wall > 0 else 0.0,
        out_dir=out_dir,
        start_step=start,
        stopped_early=not finished,
        eval=last_eval,
        model=export_model,
    )


def _run_eval(evaluate: Callable, model: nn.Module, step: int, path: Path, name: str) -> dict[str, float]:
    """Call ``stage.evaluate`` in eval mode without gradients; append the result to ``eval_log.jsonl``."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            result = evaluate(model, step) or {}
    finally:
        model.train(was_training)
    result = {k: float(v) for k, v in result.items()}
    with open(path, "a") as f:
        f.write(json.dumps({"step": step, **result}) + "\n")
    logger.info("%s step %d eval %s", name, step, result)
    return result
