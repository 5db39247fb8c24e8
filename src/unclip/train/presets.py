"""Every training preset, by component: ``get_preset(component, name)``.

A preset holds what training one component needs: the network's config fields
(``model``), the loop's :class:`~unclip.train.config.TrainConfig` fields (``train``, plus an
optional wall-clock budget ``time_limit_s``), the batch size and, where the stage prepares
its own data, how much. ``tiny`` is for tests (seconds); ``small`` trains on 2 CPU cores;
``gpu`` is the size the shipped model was trained at on one GPU; ``cpu`` (AR prior and
upsampler) is the shipped CPU-trained size. The CLIP, prior and decoder presets of one
name belong together (CLIP's width feeds the prior and the decoder), so ``train all`` takes
them as a set with the rendered training data (``RUN_PRESETS``).
"""

from __future__ import annotations

import copy
from typing import Any

from ..errors import ConfigError

# Each preset: the training data, then per stage the model sizes, the loop settings and
# the batch size. "tiny" is for tests (seconds); "small" trains on 2 CPU cores; "gpu"
# is the size the shipped model was trained at on one GPU. Every decoder learns its variance
# (iDDPM hybrid loss, as the paper's decoder does); `--no-learned-variance` turns it off.
RUN_PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {
        "data": {"num_images": 256, "image_size": 16},
        "clip": {
            "model": dict(
                image_size=16,
                patch_size=4,
                vision_width=32,
                vision_depth=1,
                vision_heads=2,
                text_width=32,
                text_depth=1,
                text_heads=2,
                embed_dim=32,
                context_length=20,
            ),
            "train": dict(steps=20, lr=1e-3, warmup_steps=2, checkpoint_every=10, ema_decay=0.0),
            "batch_size": 32,
        },
        "prior": {
            "model": dict(width=32, depth=1, heads=2, num_timesteps=100),
            "train": dict(steps=20, lr=1e-3, warmup_steps=2, checkpoint_every=10, ema_decay=0.9),
            "batch_size": 32,
        },
        "decoder": {
            "model": dict(
                image_size=16,
                base_channels=16,
                channel_mults=(1, 2),
                num_res_blocks=1,
                attention_resolutions=(8,),
                head_channels=16,
                text_width=32,
                text_depth=1,
                text_heads=2,
            ),
            "diffusion": dict(num_timesteps=100, learned_variance=True),
            "train": dict(steps=20, lr=1e-3, warmup_steps=2, checkpoint_every=10, ema_decay=0.9),
            "batch_size": 8,
        },
    },
    "small": {
        "data": {"num_images": 20000, "image_size": 32},
        "clip": {
            "model": dict(
                image_size=32,
                patch_size=4,
                vision_width=128,
                vision_depth=4,
                vision_heads=4,
                text_width=128,
                text_depth=3,
                text_heads=4,
                embed_dim=128,
                context_length=20,
            ),
            "train": dict(
                steps=3000,
                lr=5e-4,
                weight_decay=0.1,
                warmup_steps=200,
                lr_decay="cosine",
                checkpoint_every=500,
                ema_decay=0.0,
            ),
            "batch_size": 128,
        },
        "prior": {
            "model": dict(width=256, depth=4, heads=8),
            "train": dict(
                steps=6000, lr=3e-4, weight_decay=0.01, warmup_steps=200, checkpoint_every=1000, ema_decay=0.999
            ),
            "batch_size": 128,
        },
        "decoder": {
            "model": dict(
                image_size=32,
                base_channels=64,
                channel_mults=(1, 2, 2),
                num_res_blocks=2,
                attention_resolutions=(16, 8),
                head_channels=32,
                text_width=128,
                text_depth=2,
                text_heads=4,
            ),
            "diffusion": dict(learned_variance=True),
            "train": dict(
                steps=8000, lr=3e-4, warmup_steps=200, checkpoint_every=500, ema_decay=0.9995, precision="auto"
            ),
            "batch_size": 32,
        },
    },
}
# "gpu": the shipped model's recipe, run on one GPU with a wall-clock budget per stage:
# the same 32 px sizes as "small" (so the CPU demo stays fast), more data, larger batches.
RUN_PRESETS["gpu"] = copy.deepcopy(RUN_PRESETS["small"])
RUN_PRESETS["gpu"]["data"]["num_images"] = 100000
RUN_PRESETS["gpu"]["clip"]["batch_size"] = 512
RUN_PRESETS["gpu"]["clip"]["train"].update(
    steps=6000, lr=1e-3, warmup_steps=300, lr_decay="constant", ema_decay=0.999, time_limit_s=150
)
RUN_PRESETS["gpu"]["prior"]["batch_size"] = 512
RUN_PRESETS["gpu"]["prior"]["train"].update(steps=30000, lr=3e-4, time_limit_s=180, precision="auto")
RUN_PRESETS["gpu"]["decoder"]["batch_size"] = 128
RUN_PRESETS["gpu"]["decoder"]["train"].update(
    steps=60000, lr=2e-4, ema_decay=0.9995, time_limit_s=480, precision="auto", checkpoint_every=2000
)


# Per preset: the number of training images, the model sizes, the loop settings (fields of
# TrainConfig, plus ``time_limit_s``) and the batch size. "tiny" is for tests; "small" is
# the shipped size (~3M parameters; meant for a GPU or a long CPU run); "cpu" is a ~0.9M
# parameter model that learns something useful in a quarter of an hour on 2 CPU cores.
AR_PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {
        "num_images": 256,
        "rel_error": 0.01,
        "max_components": 16,
        "model": dict(width=32, depth=1, heads=2, num_buckets=64, num_dot_buckets=16),
        "train": dict(steps=20, lr=1e-3, warmup_steps=2, checkpoint_every=10, ema_decay=0.9),
        "batch_size": 32,
    },
    "small": {
        "num_images": 20000,
        "rel_error": 0.01,
        "max_components": None,
        "model": dict(width=256, depth=3, heads=8, num_buckets=1024, num_dot_buckets=64),
        "train": dict(
            steps=6000,
            lr=5e-4,
            weight_decay=0.01,
            warmup_steps=100,
            lr_decay="constant",
            checkpoint_every=250,
            ema_decay=0.999,
        ),
        "batch_size": 64,
    },
}
AR_PRESETS["cpu"] = copy.deepcopy(AR_PRESETS["small"])
AR_PRESETS["cpu"]["model"].update(width=128, depth=3, heads=4)
AR_PRESETS["cpu"]["train"].update(lr=1e-3, warmup_steps=50, ema_decay=0.995)
# "gpu": the "small" network on one GPU with a wall-clock budget (as the other stages' "gpu").
AR_PRESETS["gpu"] = copy.deepcopy(AR_PRESETS["small"])
AR_PRESETS["gpu"]["num_images"] = 100000
AR_PRESETS["gpu"]["batch_size"] = 256
AR_PRESETS["gpu"]["train"].update(steps=30000, time_limit_s=240, precision="auto", checkpoint_every=2000)


# Per preset: rendered images, network (low_res/high_res are set by the call), diffusion,
# loop settings, batch size. "tiny" is for tests (seconds); "small" a larger network for a
# long CPU run; "cpu" the shipped stage; "gpu" the "small" network with more data and larger batches.
UPSAMPLER_PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {
        "num_images": 32,
        "model": dict(base_channels=16, channel_mults=(1, 2), num_res_blocks=1, residual=True),
        "diffusion": dict(num_timesteps=100, prediction="x0"),
        "train": dict(steps=20, lr=1e-3, warmup_steps=2, checkpoint_every=10, ema_decay=0.9, log_every=5),
        "batch_size": 4,
    },
    "small": {
        "num_images": 4000,
        "model": dict(base_channels=32, channel_mults=(1, 2, 2), num_res_blocks=2, residual=True),
        "diffusion": dict(prediction="x0"),
        "train": dict(steps=20000, lr=3e-4, warmup_steps=200, checkpoint_every=500, ema_decay=0.999, log_every=50),
        "batch_size": 32,
    },
}
# "cpu": the shipped stage, sized to train in under an hour on 2 CPU cores and to sample a
# 128 px image at about 0.1 s per DDIM step: flat-shaded shapes need little capacity to
# sharpen edges. Meant to run with a wall-clock budget (``--time-limit``).
UPSAMPLER_PRESETS["cpu"] = {
    "num_images": 4000,
    "model": dict(base_channels=16, channel_mults=(1, 2, 4), num_res_blocks=1, residual=True),
    "diffusion": dict(prediction="x0"),
    "train": dict(
        steps=20000, lr=5e-4, warmup_steps=100, lr_decay="constant", checkpoint_every=250, ema_decay=0.999, log_every=50
    ),
    "batch_size": 32,
}
UPSAMPLER_PRESETS["gpu"] = copy.deepcopy(UPSAMPLER_PRESETS["small"])
UPSAMPLER_PRESETS["gpu"].update(num_images=20000, batch_size=128)
UPSAMPLER_PRESETS["gpu"]["train"].update(
    steps=60000, lr=2e-4, ema_decay=0.9995, checkpoint_every=2000, precision="auto"
)


COMPONENT_PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "clip": {name: p["clip"] for name, p in RUN_PRESETS.items()},
    "prior_diffusion": {name: p["prior"] for name, p in RUN_PRESETS.items()},
    "decoder": {name: p["decoder"] for name, p in RUN_PRESETS.items()},
    "prior_ar": AR_PRESETS,
    "upsampler": UPSAMPLER_PRESETS,
}


def get_run_preset(name: str) -> dict[str, Any]:
    """A deep copy of the whole-run preset ``name`` (data, clip, prior, decoder); ConfigError lists the choices."""
    if name not in RUN_PRESETS:
        raise ConfigError(f"unknown preset '{name}'; choose one of {', '.join(RUN_PRESETS)}")
    return copy.deepcopy(RUN_PRESETS[name])


def get_preset(component: str, name: str) -> dict[str, Any]:
    """A deep copy of preset ``name`` of ``component`` (clip, prior_diffusion, decoder, prior_ar, upsampler)."""
    if component not in COMPONENT_PRESETS:
        raise ConfigError(f"no presets for '{component}'; components with presets: {', '.join(COMPONENT_PRESETS)}")
    presets = COMPONENT_PRESETS[component]
    if name not in presets:
        raise ConfigError(f"unknown {component} preset '{name}'; choose one of {', '.join(presets)}")
    return copy.deepcopy(presets[name])


def list_presets() -> dict[str, list[str]]:
    """Preset names per component."""
    return {c: list(p) for c, p in COMPONENT_PRESETS.items()}
