"""Training recipes: the presets and the orchestration of ``unclip train``.

``train all`` renders a training set once, trains CLIP on it, encodes every image and
distinct caption with the frozen CLIP once (the prior and decoder then never run the
image tower), trains the diffusion prior and the decoder, and writes a complete model
directory (DESIGN.md section 4). Each stage keeps resumable state in ``runs/<stage>/``.
"""

from __future__ import annotations

import copy
import json
import logging
import time
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

import torch

from ..checkpoint import atomic_write_json
from ..clip.frozen import FrozenCLIP
from ..clip.model import CLIP, CLIPConfig
from ..clip.tokenizer import Tokenizer
from ..data import get_dataset
from ..data.embeddings import TrainingSet, encode_training_set, load_training_set, render_training_set, save_training_set
from ..decoder.model import Decoder, DecoderConfig
from ..errors import ConfigError
from ..prior.diffusion_prior import DiffusionPrior, DiffusionPriorConfig
from .loop import TrainConfig, train
from .state import has_train_state
from .stages import CLIPStage, DecoderStage, DiffusionSettings, PriorStage

log = logging.getLogger(__name__)

STAGES = ("clip", "prior", "decoder", "all")
PROBE_STEPS = 200

# Each preset: the training data, then per stage the model sizes, the loop settings and
# the batch size. "tiny" is for tests (seconds); "small" trains on 2 CPU cores; "gpu"
# is the size the shipped model was trained at on one GPU. Every decoder learns its variance
# (iDDPM hybrid loss, as the paper's decoder does); `--no-learned-variance` turns it off.
PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {
        "data": {"num_images": 256, "image_size": 16},
        "clip": {"model": dict(image_size=16, patch_size=4, vision_width=32, vision_depth=1, vision_heads=2, text_width=32, text_depth=1, text_heads=2, embed_dim=32, context_length=20),
                 "train": dict(steps=20, lr=1e-3, warmup_steps=2, checkpoint_every=10, ema_decay=0.0), "batch_size": 32},
        "prior": {"model": dict(width=32, depth=1, heads=2, num_timesteps=100),
                  "train": dict(steps=20, lr=1e-3, warmup_steps=2, checkpoint_every=10, ema_decay=0.9), "batch_size": 32},
        "decoder": {"model": dict(image_size=16, base_channels=16, channel_mults=(1, 2), num_res_blocks=1, attention_resolutions=(8,), head_channels=16, text_width=32, text_depth=1, text_heads=2),
                    "diffusion": dict(num_timesteps=100, learned_variance=True), "train": dict(steps=20, lr=1e-3, warmup_steps=2, checkpoint_every=10, ema_decay=0.9), "batch_size": 8},
    },
    "small": {
        "data": {"num_images": 20000, "image_size": 32},
        "clip": {"model": dict(image_size=32, patch_size=4, vision_width=128, vision_depth=4, vision_heads=4, text_width=128, text_depth=3, text_heads=4, embed_dim=128, context_length=20),
                 "train": dict(steps=3000, lr=5e-4, weight_decay=0.1, warmup_steps=200, lr_decay="cosine", checkpoint_every=500, ema_decay=0.0), "batch_size": 128},
        "prior": {"model": dict(width=256, depth=4, heads=8),
                  "train": dict(steps=6000, lr=3e-4, weight_decay=0.01, warmup_steps=200, checkpoint_every=1000, ema_decay=0.999), "batch_size": 128},
        "decoder": {"model": dict(image_size=32, base_channels=64, channel_mults=(1, 2, 2), num_res_blocks=2, attention_resolutions=(16, 8), head_channels=32, text_width=128, text_depth=2, text_heads=4),
                    "diffusion": dict(learned_variance=True), "train": dict(steps=8000, lr=3e-4, warmup_steps=200, checkpoint_every=500, ema_decay=0.9995, precision="auto"), "batch_size": 32},
    },
}
# "gpu": the shipped model's recipe, run on one GPU with a wall-clock budget per stage:
# the same 32 px sizes as "small" (so the CPU demo stays fast), more data, larger batches.
PRESETS["gpu"] = copy.deepcopy(PRESETS["small"])
PRESETS["gpu"]["data"]["num_images"] = 100000
PRESETS["gpu"]["clip"]["batch_size"] = 512
PRESETS["gpu"]["clip"]["train"].update(steps=6000, lr=1e-3, warmup_steps=300, lr_decay="constant", ema_decay=0.999, time_limit_s=150)
PRESETS["gpu"]["prior"]["batch_size"] = 512
PRESETS["gpu"]["prior"]["train"].update(steps=30000, lr=3e-4, time_limit_s=180, precision="auto")
PRESETS["gpu"]["decoder"]["batch_size"] = 128
PRESETS["gpu"]["decoder"]["train"].update(steps=60000, lr=2e-4, ema_decay=0.9995, time_limit_s=480, precision="auto", checkpoint_every=2000)


def get_preset(name: str) -> dict[str, Any]:
    """A deep copy of preset ``name``; ConfigError lists the choices."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset '{name}'; choose one of {', '.join(PRESETS)}")
    return copy.deepcopy(PRESETS[name])


def _train_config(section: dict[str, Any], *, seed: int, device: str, steps: int | None) -> tuple[TrainConfig, float | None]:
    """The stage's TrainConfig and its wall-clock budget in seconds (None: no budget)."""
    kwargs = dict(section.get("train", {}))
    budget = kwargs.pop("time_limit_s", None)
    kwargs.update(seed=seed, device=device)
    if steps is not None:
        kwargs["steps"] = steps
        kwargs["checkpoint_every"] = min(kwargs.get("checkpoint_every", steps), steps)
        kwargs["warmup_steps"] = min(kwargs.get("warmup_steps", 0), max(steps // 10, 1))
        budget = None
    names = {f.name for f in fields(TrainConfig)}
    return TrainConfig(**{k: v for k, v in kwargs.items() if k in names}), budget


def run_stage(stage: Any, config_and_budget: tuple[TrainConfig, float | None], run_dir: Path, *, resume: bool, progress: bool) -> dict[str, Any]:
    """Train a stage; with a wall-clock budget, fit the number of steps to it.

    A budgeted run first trains ``PROBE_STEPS`` steps, measures the step rate, then
    resumes (exactly, from the probe's checkpoint) up to the number of steps the rest of
    the budget allows, capped by ``config.steps``. The LR schedule must then be constant
    after warm-up, since the final step count is not known in advance. On ``resume`` the
    budget is ignored and the run continues to ``config.steps``.
    """
    config, budget = config_and_budget
    resume = resume and has_train_state(run_dir)
    if budget is None or resume:
        result = train(stage, config, run_dir, resume=resume, progress=progress)
        # A resumed run's wall time covers only the steps it trained: say which.
        return {"steps": result.steps, "wall_time_s": result.wall_time_s, "wall_time_steps": [result.start_step, result.steps], "steps_per_s": result.steps_per_s, "final_loss": result.final_loss}
    if config.lr_decay != "constant":
        raise ConfigError(f"stage {stage.name}: a time budget needs lr_decay='constant' (got {config.lr_decay!r})")
    probe_steps = min(config.steps, PROBE_STEPS)
    probe = train(stage, replace(config, steps=probe_steps, checkpoint_every=probe_steps), run_dir, progress=progress)
    target = min(config.steps, probe_steps + int(probe.steps_per_s * max(budget - probe.wall_time_s, 0.0)))
    target -= target % 10
    wall, result = probe.wall_time_s, probe
    if target > probe_steps:
        result = train(stage, replace(config, steps=target), run_dir, resume=True, progress=progress)
        wall += result.wall_time_s
    log.info("%s: %d steps in %.0f s (budget %.0f s)", stage.name, result.steps, wall, budget)
    return {"steps": result.steps, "wall_time_s": wall, "steps_per_s": result.steps / max(wall, 1e-9), "final_loss": result.final_loss, "time_budget_s": budget}


def prepare_training_set(data: str, preset: dict[str, Any], out: Path, *, seed: int, progress: bool) -> TrainingSet:
    """Render (or reload from ``out/cache``) the preset's training images."""
    cache = out / "cache"
    if (cache / "training_set.safetensors").is_file():
        log.info("reusing the rendered training set in %s", cache)
        return load_training_set(cache)
    spec = preset["data"]
    dataset = get_dataset(data, split="train", size=spec["image_size"], seed=seed, length=spec["num_images"])
    training_set = render_training_set(dataset, spec["num_images"], progress=progress)
    save_training_set(training_set, cache)
    return training_set


def train_clip_stage(training_set: TrainingSet, preset: dict[str, Any], out: Path, *, seed: int = 0, device: str = "cpu", steps: int | None = None, resume: bool = False, progress: bool = True) -> FrozenCLIP:
    """Train the tokenizer and CLIP; writes ``out/clip``."""
    section = preset["clip"]
    tokenizer = Tokenizer.train(training_set.captions)
    config = CLIPConfig(**{**section["model"], "vocab_size": tokenizer.vocab_size})
    torch.manual_seed(seed)
    stage = CLIPStage(CLIP(config), tokenizer, training_set, section["batch_size"], export_root=out)
    stats = run_stage(stage, _train_config(section, seed=seed, device=device, steps=steps), out / "runs" / "clip", resume=resume, progress=progress)
    atomic_write_json(out / "runs" / "clip" / "summary.json", stats)
    return FrozenCLIP.load(out / "clip", device=device)


def train_prior_stage(training_set: TrainingSet, clip: FrozenCLIP, preset: dict[str, Any], out: Path, *, seed: int = 0, device: str = "cpu", steps: int | None = None, resume: bool = False, progress: bool = True) -> None:
    """Train the diffusion prior on cached CLIP embeddings; writes ``out/prior_diffusion``."""
    section = preset["prior"]
    config = DiffusionPriorConfig(**{**section["model"], "embed_dim": clip.embed_dim, "text_width": clip.text_width, "context_length": clip.context_length})
    torch.manual_seed(seed)
    stage = PriorStage(DiffusionPrior(config), training_set, section["batch_size"], export_root=out)
    stats = run_stage(stage, _train_config(section, seed=seed, device=device, steps=steps), out / "runs" / "prior_diffusion", resume=resume, progress=progress)
    atomic_write_json(out / "runs" / "prior_diffusion" / "summary.json", stats)


# Caption drop rate of the text-only baseline: GLIDE drops the caption 20% of the time for
# classifier-free guidance (Nichol et al. 2022, section 3.2); the unCLIP decoder drops it
# 50% (unCLIP section 2.1), since z_i carries most of the conditioning there.
TEXT_ONLY_CAPTION_DROP = 0.2
# A warm start trains far fewer steps than the preset's from-scratch run: a lower learning
# rate keeps what the source decoder learned, and a shorter EMA horizon (~200 steps) keeps
# the exported EMA weights from being mostly the starting weights.
WARM_START_LR = 1e-4
WARM_START_EMA_DECAY = 0.995


def warm_start_decoder(init_dir: str | Path, *, text_only: bool) -> tuple[Decoder, DiffusionSettings]:
    """A decoder with the network of the decoder in ``init_dir``, initialised from its weights.

    With ``text_only`` the z_i pathway (null embedding, projections into the time embedding
    and context tokens) is left out; every other weight is copied. This is how the shipped
    GLIDE-style baseline was trained on CPU: the same network, fine-tuned on captions alone.
    """
    from ..checkpoint import load_component

    config, state, extra = load_component(init_dir, "decoder", DecoderConfig)
    if text_only:
        config = replace(config, use_image_embed=False)
    model = Decoder(config)
    own = model.state_dict()
    kept = {k: v.float() if v.is_floating_point() else v for k, v in state.items() if k in own}
    missing = sorted(set(own) - set(kept))
    if missing:
        raise ConfigError(f"cannot warm-start from {init_dir}: its weights lack {missing[:5]}; pass the directory of a decoder component")
    model.load_state_dict(kept, strict=True)
    return model, DiffusionSettings(**extra.get("diffusion", {}))


def train_decoder_stage(training_set: TrainingSet, clip: FrozenCLIP, preset: dict[str, Any], out: Path, *, seed: int = 0, device: str = "cpu", steps: int | None = None, resume: bool = False, progress: bool = True, text_only: bool = False, init_from: str | Path | None = None, time_limit_s: float | None = None, batch_size: int | None = None, learned_variance: bool | None = None) -> dict[str, Any]:
    """Train the decoder (or, ``text_only``, the GLIDE-style baseline); writes ``out/decoder``
    (``out/decoder_text_only``).

    ``init_from``: a decoder component directory to start from (its network replaces the
    preset's). ``time_limit_s``: a wall-clock budget that fits the step count (capped by
    ``steps`` or the preset's). ``batch_size`` overrides the preset's. ``learned_variance``
    overrides the preset's choice (ignored with ``init_from``, whose network decides). Returns the run's
    summary (also written to ``out/runs/<name>/summary.json``).
    """
    section = preset["decoder"]
    torch.manual_seed(seed)
    if init_from is not None:
        model, settings = warm_start_decoder(init_from, text_only=text_only)
    else:
        model_kwargs = {**section["model"], "clip_embed_dim": clip.embed_dim, "vocab_size": clip.tokenizer.vocab_size, "context_length": clip.context_length}
        if text_only:
            model_kwargs["use_image_embed"] = False
        diffusion = dict(section.get("diffusion", {}))
        if learned_variance is not None:
            diffusion["learned_variance"] = learned_variance
        settings = DiffusionSettings(**diffusion)
        model_kwargs["learned_variance"] = settings.learned_variance
        model = Decoder(DecoderConfig(**model_kwargs))
    name = "decoder_text_only" if text_only else "decoder"
    drops = {"text_drop_prob": TEXT_ONLY_CAPTION_DROP} if text_only else {}
    batch = batch_size or section["batch_size"]
    stage = DecoderStage(model, training_set, batch, settings, export_root=out, name=name, **drops)
    config, budget = _train_config(section, seed=seed, device=device, steps=steps)
    if init_from is not None:
        config = replace(config, lr=WARM_START_LR, ema_decay=WARM_START_EMA_DECAY)
    if time_limit_s is not None:
        config, budget = replace(config, steps=steps or config.steps, lr_decay="constant"), time_limit_s
    stats = run_stage(stage, (config, budget), out / "runs" / name, resume=resume, progress=progress)
    stats.update(batch_size=batch, init_from=str(init_from) if init_from else None, caption_drop=stage.text_drop_prob)
    atomic_write_json(out / "runs" / name / "summary.json", stats)
    return stats


def _stage_done(out: Path, component: str) -> bool:
    return (out / component / "weights.safetensors").is_file() and (out / component / "config.json").is_file()


def train_all(data: str, preset_name: str, out: str | Path, *, seed: int = 0, device: str = "cpu", steps: int | None = None, resume: bool = False, progress: bool = True, learned_variance: bool | None = None) -> dict[str, Any]:
    """Train CLIP, then the prior and the decoder on its embeddings; write a model directory.

    With ``resume``, finished components are kept and an interrupted stage continues
    from its last checkpoint. Returns a summary (also written to ``out/train_summary.json``).
    """
    from ..pipeline import UnCLIP  # local: the pipeline imports the stages module
    from ..eval.clip_retrieval import clip_retrieval_report

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    preset = get_preset(preset_name)
    if learned_variance is not None:  # the decoder's, overriding the preset's
        preset["decoder"].setdefault("diffusion", {})["learned_variance"] = learned_variance
    timings: dict[str, float] = {}
    start = time.perf_counter()
    training_set = prepare_training_set(data, preset, out, seed=seed, progress=progress)
    timings["render_s"] = time.perf_counter() - start

    t0 = time.perf_counter()
    if resume and _stage_done(out, "clip"):
        clip = FrozenCLIP.load(out / "clip", device=device)
    else:
        clip = train_clip_stage(training_set, preset, out, seed=seed, device=device, steps=steps, resume=resume, progress=progress)
    timings["clip_s"] = time.perf_counter() - t0
    retrieval = clip_retrieval_report(clip, data=data, seed=seed) if data == "shapes" else {}
    if retrieval:
        atomic_write_json(out / "clip_retrieval.json", retrieval)

    t0 = time.perf_counter()
    if training_set.image_embeds is None or not resume:
        encode_training_set(training_set, clip, progress=progress)
        save_training_set(training_set, out / "cache")
    timings["encode_s"] = time.perf_counter() - t0

    for name, fn, component in (("prior", train_prior_stage, "prior_diffusion"), ("decoder", train_decoder_stage, "decoder")):
        t0 = time.perf_counter()
        if not (resume and _stage_done(out, component)):
            fn(training_set, clip, preset, out, seed=seed, device=device, steps=steps, resume=resume, progress=progress)
        timings[f"{name}_s"] = time.perf_counter() - t0

    stage_stats = {}
    for component in ("clip", "prior_diffusion", "decoder"):
        path = out / "runs" / component / "summary.json"
        if path.is_file():
            stage_stats[component] = json.loads(path.read_text())
    summary = {"stages": stage_stats, "data": data, "preset": preset_name, "seed": seed, "device": device, "steps_override": steps, "timings_s": timings, "wall_time_s": time.perf_counter() - start, "clip_retrieval": retrieval}
    UnCLIP.write_model_json(out, {"clip": "clip", "prior_diffusion": "prior_diffusion", "decoder": "decoder"}, info=summary)
    atomic_write_json(out / "train_summary.json", summary)
    return summary


def train_single(stage: str, data: str, preset_name: str, out: str | Path, *, seed: int = 0, device: str = "cpu", steps: int | None = None, resume: bool = False, progress: bool = True, text_only: bool = False, init_from: str | Path | None = None, time_limit_s: float | None = None, batch_size: int | None = None, learned_variance: bool | None = None) -> dict[str, Any]:
    """Train one stage into model directory ``out``.

    ``clip`` needs nothing; ``prior`` and ``decoder`` need ``out/clip`` (a trained CLIP),
    whose embeddings of the training set they cache in ``out/cache``.
    """
    from ..errors import CheckpointError

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    preset = get_preset(preset_name)
    training_set = prepare_training_set(data, preset, out, seed=seed, progress=progress)
    start = time.perf_counter()
    if stage == "clip":
        train_clip_stage(training_set, preset, out, seed=seed, device=device, steps=steps, resume=resume, progress=progress)
        return {"stage": stage, "out": str(out), "wall_time_s": time.perf_counter() - start}
    if not _stage_done(out, "clip"):
        raise CheckpointError(f"training the {stage} needs a CLIP in {out / 'clip'}; run `unclip train clip --out {out}` first (or `unclip train all`)")
    clip = FrozenCLIP.load(out / "clip", device=device)
    if training_set.image_embeds is None:
        encode_training_set(training_set, clip, progress=progress)
        save_training_set(training_set, out / "cache")
    if stage == "prior":
        train_prior_stage(training_set, clip, preset, out, seed=seed, device=device, steps=steps, resume=resume, progress=progress)
    elif stage == "decoder":
        stats = train_decoder_stage(training_set, clip, preset, out, seed=seed, device=device, steps=steps, resume=resume, progress=progress, text_only=text_only, init_from=init_from, time_limit_s=time_limit_s, batch_size=batch_size, learned_variance=learned_variance)
        if text_only:  # an extra component beside the unCLIP decoder: make the pipeline see it
            from ..model_dir import register_component

            register_component(out, "decoder_text_only", info=stats)
    else:
        raise ConfigError(f"unknown stage '{stage}'; choose one of {', '.join(STAGES)}")
    return {"stage": stage, "out": str(out), "wall_time_s": time.perf_counter() - start}
