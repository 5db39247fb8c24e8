"""Training: one stage-agnostic loop (``loop.py``), EMA, resumable state on disk, presets.

``components.py`` is the one entry that trains any component (``train_component``,
``train_all``); ``presets.py`` holds every preset. A stage (``stages.py``) supplies ``name``,
``model``, ``get_batch(step, generator)``, ``loss(batch, generator)`` and
``export(model, out_dir)``; :func:`train` does the rest.
"""

from .config import Stage, TrainConfig, TrainResult, lr_at, lr_factor, step_generator, step_seed
from .ema import EMA
from .loop import EVAL_LOG, LOSS_LOG, train
from .presets import get_preset, get_run_preset, list_presets
from .state import STATE_DIR, TrainState, has_train_state, load_train_state, save_train_state

__all__ = [
    "EMA",
    "EVAL_LOG",
    "LOSS_LOG",
    "STATE_DIR",
    "Stage",
    "TrainConfig",
    "TrainResult",
    "TrainState",
    "get_preset",
    "get_run_preset",
    "has_train_state",
    "list_presets",
    "load_train_state",
    "lr_at",
    "lr_factor",
    "save_train_state",
    "step_generator",
    "step_seed",
    "train",
]
