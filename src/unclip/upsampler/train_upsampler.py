"""``unclip train upsampler``: train one super-resolution stage into a model directory.

The upsamplers need no CLIP, captions or embeddings: only high-resolution images. For the
``shapes`` data they are rendered once at ``high_res`` and kept in memory as uint8; each
step corrupts a batch (see :mod:`.degradations`), crops a quarter of the side (see
:mod:`.stage`) and takes one optimiser step in the shared loop. The result is written as
the component ``upsampler_<high_res>/`` of the model directory and registered in its
``model.json``, so that :class:`~unclip.pipeline.UnCLIP` can run it after the decoder.
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import fields
from pathlib import Path
from typing import Any

import torch

from ..checkpoint import atomic_write_json
from ..model_dir import register_component
from ..data.shapes import render_batch
from ..errors import ConfigError
from ..train.loop import TrainConfig
from ..train.recipes import run_stage
from ..train.stages import DiffusionSettings
from .model import Upsampler, UpsamplerConfig
from .stage import UpsamplerStage, component_name

log = logging.getLogger(__name__)

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
    "train": dict(steps=20000, lr=5e-4, warmup_steps=100, lr_decay="constant", checkpoint_every=250, ema_decay=0.999, log_every=50),
    "batch_size": 32,
}
UPSAMPLER_PRESETS["gpu"] = copy.deepcopy(UPSAMPLER_PRESETS["small"])
UPSAMPLER_PRESETS["gpu"].update(num_images=20000, batch_size=128)
UPSAMPLER_PRESETS["gpu"]["train"].update(steps=60000, lr=2e-4, ema_decay=0.9995, checkpoint_every=2000, precision="auto")


def render_training_images(num_images: int, size: int, *, seed: int = 0, chunk: int = 500) -> torch.Tensor:
    """``num_images`` shapes training images at ``size``: (N, 3, size, size) uint8 (compact in memory)."""
    parts = []
    for start in range(0, num_images, chunk):
        images, _, _ = render_batch("train", start, min(chunk, num_images - start), size, seed)
        parts.append(((images + 1) * 127.5).round().clamp(0, 255).to(torch.uint8))
    return torch.cat(parts)


def train_upsampler(
    out_model_dir: str | Path,
    low_res: int = 32,
    high_res: int = 128,
    preset: str = "small",
    degradation: str = "blur",
    device: str = "cpu",
    steps: int | None = None,
    resume: bool = False,
    time_limit_s: float | None = None,
    *,
    seed: int = 0,
    num_images: int | None = None,
    batch_size: int | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Train a ``low_res -> high_res`` upsampler on shapes images; export it into the model directory.

    Args:
        out_model_dir: model directory; receives ``upsampler_<high_res>/`` (fp16 EMA
            weights, config, diffusion settings), ``runs/upsampler_<high_res>/`` (resumable
            state, loss log, summary) and the component's entry in ``model.json``.
        low_res, high_res: sides of the stage (the paper uses a 4x ratio per stage).
        preset: ``"tiny"`` (tests), ``"small"`` (CPU) or ``"gpu"``.
        degradation: ``"blur"`` (first stage), ``"bsr"`` (second stage) or ``"none"``.
        steps: override the preset's step count.
        resume: continue an interrupted run from its checkpoint.
        time_limit_s: wall-clock budget: after a short probe, the step count is fitted to
            it (capped by ``steps`` or the preset's).
    Returns:
        A summary dict (also written to ``runs/upsampler_<high_res>/summary.json``).
    """
    if preset not in UPSAMPLER_PRESETS:
        raise ConfigError(f"unknown upsampler preset '{preset}'; choose one of {', '.join(UPSAMPLER_PRESETS)}")
    spec = copy.deepcopy(UPSAMPLER_PRESETS[preset])
    out = Path(out_model_dir)
    out.mkdir(parents=True, exist_ok=True)
    name = component_name(high_res)
    t0 = time.perf_counter()
    images = render_training_images(num_images or spec["num_images"], high_res, seed=seed)
    render_s = time.perf_counter() - t0

    torch.manual_seed(seed)
    model = Upsampler(UpsamplerConfig(low_res=low_res, high_res=high_res, **spec["model"]))
    settings = DiffusionSettings(**spec["diffusion"])
    stage = UpsamplerStage(model, images, batch_size or spec["batch_size"], settings, degradation, export_root=out)

    train_kwargs = dict(spec["train"], seed=seed, device=device)
    if steps is not None:
        train_kwargs.update(steps=steps, checkpoint_every=min(train_kwargs["checkpoint_every"], steps), warmup_steps=min(train_kwargs["warmup_steps"], max(steps // 10, 1)))
    names = {f.name for f in fields(TrainConfig)}
    config = TrainConfig(**{k: v for k, v in train_kwargs.items() if k in names})
    run_dir = out / "runs" / name
    stats = run_stage(stage, (config, time_limit_s), run_dir, resume=resume, progress=progress)
    params = sum(p.numel() for p in model.parameters())
    weights = out / name / "weights.safetensors"
    summary = {
        **stats,
        "component": name,
        "low_res": low_res,
        "high_res": high_res,
        "degradation": degradation,
        "preset": preset,
        "crop": stage.crop,
        "batch_size": stage.batch_size,
        "num_images": int(images.shape[0]),
        "params": params,
        "weights_bytes": weights.stat().st_size if weights.is_file() else None,
        "render_s": render_s,
        "device": device,
    }
    atomic_write_json(run_dir / "summary.json", summary)
    if weights.is_file():
        register_component(out, name, info={k: summary[k] for k in ("steps", "wall_time_s", "low_res", "high_res", "degradation", "preset", "params", "device") if k in summary})
    return summary
