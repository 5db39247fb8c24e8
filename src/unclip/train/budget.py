"""A component's loop settings from its preset and the caller's options, and runs fitted to a
wall-clock budget (:func:`run_stage`): a short probe measures the step rate, then the run
resumes exactly up to the steps the budget allows.
"""

from __future__ import annotations

import logging
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .config import TrainConfig
from .loop import train
from .state import has_train_state

log = logging.getLogger(__name__)

PROBE_STEPS = 200


def train_config(section: dict[str, Any], opts: Any) -> tuple[TrainConfig, float | None]:
    """The stage's TrainConfig and its wall-clock budget in seconds (None: no budget).

    ``opts.steps`` overrides the preset's steps (and drops its budget); ``opts.time_limit_s``
    sets a budget, capped by the step count, with the constant LR schedule a budget needs;
    ``opts.checkpoint_every`` (when set) overrides how often the training state is written.
    """
    kwargs = dict(section.get("train", {}))
    budget = kwargs.pop("time_limit_s", None)
    kwargs.update(seed=opts.seed, device=opts.device, fsdp=opts.fsdp, grad_checkpointing=opts.grad_checkpointing)
    if opts.steps is not None:
        kwargs["steps"] = opts.steps
        kwargs["checkpoint_every"] = min(kwargs.get("checkpoint_every", opts.steps), opts.steps)
        kwargs["warmup_steps"] = min(kwargs.get("warmup_steps", 0), max(opts.steps // 10, 1))
        budget = None
    if opts.checkpoint_every is not None:
        kwargs["checkpoint_every"] = opts.checkpoint_every
    names = {f.name for f in fields(TrainConfig)}
    config = TrainConfig(**{k: v for k, v in kwargs.items() if k in names})
    if opts.time_limit_s is not None:
        config, budget = replace(config, lr_decay="constant"), opts.time_limit_s
    return config, budget


def run_stage(
    stage: Any, config: TrainConfig, budget: float | None, run_dir: Path, *, resume: bool, progress: bool
) -> dict[str, Any]:
    """Train a stage; with a wall-clock budget, fit the number of steps to it.

    A budgeted run first trains ``PROBE_STEPS`` steps, measures the step rate, then
    resumes (exactly, from the probe's checkpoint) up to the number of steps the rest of
    the budget allows, capped by ``config.steps``. The LR schedule must then be constant
    after warm-up, since the final step count is not known in advance. On ``resume`` the
    budget is ignored and the run continues to ``config.steps``. The summary's
    ``interrupted`` names the signal that stopped the run (see ``stop_signals.py``), or is None.
    """
    resume = resume and has_train_state(run_dir)
    if budget is None or resume:
        result = train(stage, config, run_dir, resume=resume, progress=progress)
        # A resumed run's wall time covers only the steps it trained: say which.
        return {
            "steps": result.steps, "wall_time_s": result.wall_time_s,
            "wall_time_steps": [result.start_step, result.steps],
            "steps_per_s": result.steps_per_s, "final_loss": result.final_loss, "interrupted": result.interrupted,
        }  # fmt: skip
    if config.lr_decay != "constant":
        raise ConfigError(f"stage {stage.name}: a time budget needs lr_decay='constant' (got {config.lr_decay!r})")
    probe_steps = min(config.steps, PROBE_STEPS)
    probe_config = replace(config, steps=probe_steps, checkpoint_every=min(config.checkpoint_every, probe_steps))
    probe = train(stage, probe_config, run_dir, progress=progress)
    target = min(config.steps, probe_steps + int(probe.steps_per_s * max(budget - probe.wall_time_s, 0.0)))
    target -= target % 10
    wall, result = probe.wall_time_s, probe
    if target > probe_steps and probe.interrupted is None:
        result = train(stage, replace(config, steps=target), run_dir, resume=True, progress=progress)
        wall += result.wall_time_s
    log.info("%s: %d steps in %.0f s (budget %.0f s)", stage.name, result.steps, wall, budget)
    return {
        "steps": result.steps, "wall_time_s": wall, "steps_per_s": result.steps / max(wall, 1e-9),
        "final_loss": result.final_loss, "time_budget_s": budget, "interrupted": result.interrupted,
    }  # fmt: skip
