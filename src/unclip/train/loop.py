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

Several processes (``torchrun``; see ``distributed.py``): ``get_batch`` returns the global
batch and the stage's ``loss`` keeps this rank's rows, so the random streams are the same
for any number of ranks; gradients are averaged by DDP (or FSDP) before clipping, every
rank applies the same update (so the weights and the EMA stay identical), the loss log is
averaged over ranks, and rank 0 alone writes checkpoints, logs and the exported component
while the others wait at a barrier. Only dropout masks (the global RNG) are drawn per rank
(stream ``1 + rank``): a run with dropout > 0 matches a 1-rank run in distribution only.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import time
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from ..errors import CheckpointError, ConfigError, UnclipError
from ..storage.checkpoint import load_state_into
from . import distributed
from .config import (
    RESUME_MUST_MATCH,
    Stage,
    TrainConfig,
    TrainResult,
    lr_at,
    resolve_device,
    resolve_precision,
    step_generator,
    step_seed,
)
from .ema import EMA
from .logs import last_logged_loss, mean_or_none, truncate_jsonl
from .state import (
    STATE_DIR,
    STATE_FILE,
    capture_rng,
    find_train_state,
    load_train_state,
    remove_train_state,
    restore_rng,
    save_train_state,
)
from .stop_signals import StopSignals

logger = logging.getLogger(__name__)

LOSS_LOG = "loss_log.jsonl"
EVAL_LOG = "eval_log.jsonl"
# metric names a stage may not use (the log's own fields)
_RESERVED = ("step", "loss", "lr", "grad_norm", "steps_per_s")


def _build_optimizer(model: nn.Module, config: TrainConfig, device: torch.device) -> torch.optim.AdamW:
    """AdamW with weight decay on >= 2-d parameters only (biases and norm gains are not decayed)."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    if not trainable:
        raise ConfigError(
            "the stage's model has no trainable parameters (all have requires_grad=False); nothing to train"
        )
    decay = [p for p in trainable if p.ndim >= 2]
    no_decay = [p for p in trainable if p.ndim < 2]
    groups = [{"params": ps, "weight_decay": wd} for ps, wd in ((decay, config.weight_decay), (no_decay, 0.0)) if ps]
    fused = True if device.type == "cuda" else None
    return torch.optim.AdamW(
        groups, lr=config.lr, betas=tuple(config.betas), weight_decay=config.weight_decay, fused=fused
    )


def _config_json(config: TrainConfig) -> dict[str, Any]:
    return json.loads(json.dumps(dataclasses.asdict(config)))


def _check_resume(
    saved_step: int, saved_stage: str, saved: dict[str, Any], stage_name: str, config: TrainConfig, where: Path
) -> None:
    """Refuse to resume a different run; the message lists what differs and how to fix it."""
    if saved_stage != stage_name:
        raise CheckpointError(
            f"{where} was written by stage '{saved_stage}', not '{stage_name}'; point out_dir at this stage's own "
            "folder"
        )
    now = _config_json(config)
    diffs = [f"{k}: checkpoint {saved.get(k)!r}, now {now[k]!r}" for k in RESUME_MUST_MATCH if saved.get(k) != now[k]]
    if diffs:
        raise CheckpointError(
            f"cannot resume from {where}: the config differs from the checkpoint's in {'; '.join(diffs)}. "
            f"Resume with the checkpoint's values (see {where / STATE_FILE}), or train into a new out_dir"
        )
    if saved_step > config.steps:
        raise CheckpointError(
            f"{where} is at step {saved_step}, beyond TrainConfig.steps={config.steps}; pass steps >= {saved_step} "
            "to resume"
        )
    if saved.get("steps") != config.steps and config.lr_decay == "cosine":
        logger.warning(
            "steps changed from %s to %d with cosine decay: the LR curve of the remaining steps changes",
            saved.get("steps"),
            config.steps,
        )
    if saved.get("precision") != config.precision:
        logger.warning(
            "precision changed from %s to %s: the resumed run will not match an uninterrupted one bit for bit",
            saved.get("precision"),
            config.precision,
        )


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


def _average_over_ranks(pending: list[tuple[int, Tensor, Tensor, dict]]) -> None:
    """Replace each pending step's loss and metrics by their mean over ranks (one all-reduce)."""
    if not distributed.context().enabled or not pending:
        return
    keys = [list(p[3]) for p in pending]
    device = pending[0][1].device

    def row(p: tuple[int, Tensor, Tensor, dict], ks: list[str]) -> Tensor:
        metrics = [torch.as_tensor(p[3][k], dtype=torch.float32, device=device).reshape(()) for k in ks]
        return torch.stack([p[1].detach().float().reshape(()).to(device), *metrics])

    rows = [row(p, ks) for p, ks in zip(pending, keys)]
    flat = distributed.all_reduce_mean(torch.cat(rows))
    at = 0
    for i, (p, ks) in enumerate(zip(pending, keys)):
        values = flat[at : at + 1 + len(ks)]
        at += 1 + len(ks)
        pending[i] = (p[0], values[0], p[2], {k: values[1 + j] for j, k in enumerate(ks)})


def _sync_every_step(device: torch.device) -> bool:
    """Check each step's loss at once on CPU (free); on accelerators only at log/checkpoint steps,
    to keep the queue full."""
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
            SIGTERM, SIGUSR1 or a first Ctrl-C stop the same way after the current step
            (``TrainResult.interrupted`` names the signal; see ``stop_signals.py``).

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
    ctx = distributed.init_from_env(config.device)
    main = ctx.is_main
    distributed.check_global_batch(getattr(stage, "batch_size", None))
    device = resolve_device(distributed.local_device(config.device))
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
    if config.grad_checkpointing:
        distributed.enable_grad_checkpointing(model)
    scaler = torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 and device.type == "cuda" else None
    log_path, eval_path = out_dir / LOSS_LOG, out_dir / EVAL_LOG

    start, window, records = 0, [], 0
    state = None
    if resume:
        # Every rank reads the (unsharded) checkpoint: it fits any number of ranks.
        state = load_train_state(out_dir)
        _check_resume(state.step, state.stage, state.config, stage.name, config, state.directory or out_dir / STATE_DIR)
        load_state_into(model, state.model, stage.name)
    distributed.broadcast_module(model)  # every rank starts from rank 0's weights
    ema = EMA(model, config.ema_decay, config.ema_warmup) if config.ema_decay > 0 else None
    if state is not None and ema is not None:
        load_state_into(ema.model, state.ema or {}, f"{stage.name} (EMA)")
    replicas = distributed.Replicas(stage, ema.model if ema is not None else None, fsdp=config.fsdp)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = _build_optimizer(model, config, device)
    if state is not None:
        try:
            replicas.load_optimizer_state(optimizer, state.optimizer)
        except (ValueError, KeyError) as exc:
            raise CheckpointError(
                f"optimizer state in {state.directory} does not fit the model's parameters ({exc})"
            ) from exc
        if scaler is not None and state.scaler:
            scaler.load_state_dict(state.scaler)
        restore_rng(state.rng)
        start, window = state.step, list(state.log.get("window", []))
        if main:
            records = truncate_jsonl(log_path, start)
            truncate_jsonl(eval_path, start)
        logger.info("resuming %s from step %d of %d", stage.name, start, config.steps)
    elif main:
        # A fresh run starts over: drop an older run's state now, so that a crash before
        # this run's first checkpoint cannot later be "resumed" from the other run.
        if find_train_state(out_dir) is not None:
            logger.warning(
                "%s holds a training state from an earlier run; starting over (pass resume=True to continue it "
                "instead)",
                out_dir,
            )
        remove_train_state(out_dir)
        log_path.unlink(missing_ok=True)
        eval_path.unlink(missing_ok=True)
    distributed.barrier()

    n_params = sum(p.numel() for p in params)
    logger.info(
        "training %s: %d parameters, steps %d -> %d on %s (%s), rank %d of %d",
        stage.name, n_params, start, config.steps, device, config.precision, ctx.rank, ctx.world_size,
    )  # fmt: skip
    end = config.steps if stop_after is None else min(config.steps, max(stop_after, start))
    evaluate = getattr(stage, "evaluate", None)
    export_model = ema.model if ema is not None else model
    max_norm = config.grad_clip if config.grad_clip > 0 else math.inf
    sync_each = _sync_every_step(device)
    pending: list[tuple[int, Tensor, Tensor, dict]] = []
    last_ckpt, last_loss, last_eval, done = start, math.nan, {}, start
    t_start = t_window = time.perf_counter()
    timed = 0

    def flush() -> None:
        """Move pending per-step values to the window as floats; stop on a non-finite one."""
        if not pending:
            return
        _average_over_ranks(pending)
        losses = torch.stack([p[1].detach().float().reshape(()) for p in pending]).tolist()
        norms = torch.stack([p[2].detach().float().reshape(()) for p in pending]).tolist()
        for (step, _, _, metrics), loss_value, norm in zip(pending, losses, norms):
            bad = (
                "loss"
                if not math.isfinite(loss_value)
                else ("gradient norm" if scaler is None and not math.isfinite(norm) else None)
            )
            if bad:
                value = loss_value if bad == "loss" else norm
                raise UnclipError(
                    f"stage '{stage.name}': the {bad} is {value} at step {step} (0-based; update {step + 1} of "
                    f"{config.steps}). "
                    f"Training stopped; the last checkpoint ({out_dir / STATE_DIR}) is at step {last_ckpt}. "
                    f"Lower the learning rate (lr={config.lr}), keep grad_clip > 0, check the data for NaN/inf, "
                    f"or use precision 'fp32' or 'bf16' instead of 'fp16'"
                )
            entry = {"loss": loss_value, "grad_norm": norm if math.isfinite(norm) else None}
            entry["metrics"] = {k: float(v) for k, v in metrics.items()}
            window.append(entry)
        pending.clear()

    show = progress and main
    bar = tqdm(
        total=config.steps, initial=start, disable=not show, desc=f"train {stage.name}", unit="step", dynamic_ncols=True
    )
    interrupted = None
    try:
        with open(log_path, "a") if main else contextlib.nullcontext() as log_file, StopSignals() as signals:
            for step in range(start, end):
                lr = lr_at(step, config)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                generator = step_generator(config.seed, step)
                _seed_global_rng(step_seed(config.seed, step, 1 + ctx.rank), device)

                batch = stage.get_batch(step, generator)
                with (
                    torch.autocast(device.type, dtype=amp_dtype) if amp_dtype is not None else contextlib.nullcontext()
                ):
                    out = replicas.loss(batch, generator)
                loss, metrics = out if isinstance(out, tuple) else (out, {})
                if not isinstance(loss, Tensor) or loss.numel() != 1:
                    raise UnclipError(
                        f"stage '{stage.name}'.loss must return (scalar tensor, metrics), got {type(loss).__name__} "
                        f"{getattr(loss, 'shape', '')}"
                    )
                if not loss.requires_grad:
                    raise UnclipError(
                        f"stage '{stage.name}'.loss returned a loss that does not depend on any trainable parameter "
                        "of stage.model"
                    )

                optimizer.zero_grad(set_to_none=True)
                if scaler is not None:
                    scaler.scale(loss).backward()
                    scaler.unscale_(optimizer)
                else:
                    loss.backward()
                grad_norm = replicas.clip_grad_norm(params, max_norm)  # of the gradients averaged over ranks
                if scaler is not None:
                    scaler.step(optimizer)
                    scaler.update()
                else:
                    optimizer.step()
                if ema is not None:
                    ema.update(model, step)
                pending.append(
                    (
                        step,
                        loss.detach(),
                        grad_norm.detach(),
                        {k: (v.detach() if isinstance(v, Tensor) else v) for k, v in (metrics or {}).items()},
                    )
                )
                done, timed = step + 1, timed + 1
                bar.update(1)

                is_log = done % config.log_every == 0 or done == config.steps
                is_ckpt = done % config.checkpoint_every == 0 or done == end
                is_eval = callable(evaluate) and (
                    (config.eval_every and done % config.eval_every == 0) or done == config.steps
                )
                # ranks agree on a stop where they synchronise anyway (every step on CPU)
                if not ctx.enabled or sync_each or is_log or is_ckpt:
                    interrupted = signals.requested(device)
                    is_ckpt = is_ckpt or interrupted is not None
                if sync_each or is_log or is_ckpt or is_eval:
                    flush()
                if is_log:
                    now = time.perf_counter()
                    record: dict[str, Any] = {
                        "step": done,
                        "loss": mean_or_none([w["loss"] for w in window]),
                        "lr": lr,
                        "grad_norm": mean_or_none([w["grad_norm"] for w in window if w["grad_norm"] is not None]),
                        "steps_per_s": timed / max(now - t_window, 1e-9),
                    }
                    for key in dict.fromkeys(k for w in window for k in w["metrics"]):
                        name = key if key not in _RESERVED else f"metric/{key}"
                        record[name] = mean_or_none([w["metrics"][key] for w in window if key in w["metrics"]])
                    if main:
                        log_file.write(json.dumps(record) + "\n")
                        log_file.flush()
                    records += 1
                    window, t_window, timed = [], now, 0
                    last_loss = record["loss"]
                    bar.set_postfix(loss=f"{last_loss:.4g}", lr=f"{lr:.2e}", refresh=False)
                    logger.info(
                        "%s step %d/%d loss %.5g lr %.3g grad_norm %.4g",
                        stage.name,
                        done,
                        config.steps,
                        last_loss,
                        lr,
                        record["grad_norm"] if record["grad_norm"] is not None else math.nan,
                    )
                    if on_log is not None:
                        on_log(dict(record))
                if is_eval:
                    last_eval = _run_eval(evaluate, export_model, done, eval_path if main else None, stage.name)
                    if on_log is not None:
                        on_log({"step": done, "eval": dict(last_eval)})
                if is_ckpt:
                    # Full state gathered on every rank (a collective under FSDP), written by rank 0.
                    model_state, ema_state = replicas.model_state(), replicas.ema_state()
                    optimizer_state = replicas.optimizer_state(optimizer)
                    if main:
                        save_train_state(
                            out_dir,
                            stage=stage.name,
                            step=done,
                            config=_config_json(config),
                            model_state=model_state,
                            optimizer_state=optimizer_state,
                            ema_state=ema_state,
                            scaler_state=scaler.state_dict() if scaler is not None else None,
                            rng=capture_rng(),
                            log={"records": records, "window": window},
                        )
                    distributed.barrier()  # nobody goes on while the checkpoint is half-written
                    last_ckpt = done
                if interrupted is not None:
                    logger.warning("%s: stopped by %s after step %d; resume to continue", stage.name, interrupted, done)
                    break
    except Exception as exc:
        if distributed.is_collective_failure(exc):
            hint = f"The last complete checkpoint ({out_dir / STATE_DIR}) is at step {last_ckpt}; "
            hint += "rerun the same command with --resume. "
            raise distributed.rank_failure(exc, f"training {stage.name} after step {done}", hint) from exc
        raise
    finally:
        bar.close()

    finished = done == config.steps
    if finished:
        export_model = replicas.export_module(export_model)  # gathered under FSDP (every rank)
        export_model.eval()
        if main:
            stage.export(export_model, out_dir)
            kind = "EMA" if ema is not None else "trained"
            logger.info("%s: exported the %s weights to %s", stage.name, kind, out_dir / stage.name)
        distributed.barrier()
    # Rank 0's timings on every rank: callers that size a run from them (a time budget) agree.
    wall = distributed.broadcast_floats([time.perf_counter() - t_start], device)[0]
    return TrainResult(
        steps=done,
        final_loss=last_loss if math.isfinite(last_loss) else last_logged_loss(log_path),
        wall_time_s=wall,
        steps_per_s=(done - start) / wall if wall > 0 else 0.0,
        out_dir=out_dir,
        start_step=start,
        stopped_early=not finished,
        interrupted=interrupted,
        eval=last_eval,
        model=export_model,
    )


def _run_eval(evaluate: Callable, model: nn.Module, step: int, path: Path | None, name: str) -> dict[str, float]:
    """Call ``stage.evaluate`` in eval mode without gradients; append the result to ``eval_log.jsonl``."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            result = evaluate(model, step) or {}
    finally:
        model.train(was_training)
    result = {k: float(v) for k, v in result.items()}
    if path is not None:  # rank 0 only
        with open(path, "a") as f:
            f.write(json.dumps({"step": step, **result}) + "\n")
    logger.info("%s step %d eval %s", name, step, result)
    return result
