"""One entry for training every component: ``train_component(name, data, preset, out, ...)``.

Each component has a set-up function that prepares its data and network and returns a
:class:`Plan` (the stage, its loop settings, what to record); :func:`train_component` runs
every plan the same way over the one loop (``loop.py``), with a wall-clock budget when the
preset or the caller sets one, writes the run's summary and registers the component in the
model directory. :func:`train_all` trains CLIP, then the prior and the decoder on cached
CLIP embeddings, and writes a complete model directory (DESIGN.md section 4).

Components (CLI names): ``clip``, ``prior`` (diffusion prior), ``decoder`` (``text_only``:
the GLIDE-style baseline), ``ar-prior``, ``upsampler``. Each keeps resumable state in
``runs/<component>/``.

Real data (issue 12, ``real_data.py``): ``clip`` picks a frozen CLIP (ours, OpenCLIP or
transformers; ``clip_choice.py``) recorded in ``model.json``; ``embeddings`` trains the
priors on an embedding folder and gives the decoder z_i by key; shards (or ``stream``)
stream the decoder's images. The run summary then holds the sources' skip counts.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import torch

from ..clip.frozen import FrozenCLIP
from ..clip.model import CLIP, CLIPConfig
from ..clip.tokenizer import Tokenizer
from ..data import get_dataset
from ..data.embeddings import (
    TrainingSet,
    encode_training_set,
    load_training_set,
    render_training_set,
    save_training_set,
)
from ..data.sources import is_shard_spec
from ..decoder.model import Decoder, DecoderConfig
from ..diffusion import DiffusionSettings
from ..errors import ConfigError, TrainingInterrupted
from ..model_dir import component_done, register_component
from ..prior.ar_prior import COMPONENT as AR_COMPONENT
from ..prior.diffusion_prior import DiffusionPrior, DiffusionPriorConfig
from ..storage.checkpoint import atomic_write_json, load_component
from ..upsampler.model import Upsampler, UpsamplerConfig
from . import distributed
from .all_summary import finish_all
from .ar_stage import ARPriorStage, build_ar_prior
from .budget import run_stage, train_config
from .clip_choice import text_dims, training_clip
from .config import TrainConfig
from .fingerprint import cache_fingerprint, check_cache, check_fingerprint, record_cache, stage_fingerprint
from .guard import component_of
from .presets import get_preset, get_run_preset
from .real_data import (
    ar_prior_from_embeddings,
    prior_from_embeddings,
    stream_decoder_stage,
    train_all_streamed,
    uses_stream,
)
from .stages import CLIPStage, DecoderStage, PriorStage
from .upsampler_stage import UpsamplerStage, component_name, render_training_images, warm_start_upsampler

log = logging.getLogger(__name__)

COMPONENTS = ("clip", "prior", "decoder", "ar-prior", "upsampler")
# Caption drop rate of the text-only baseline: GLIDE drops the caption 20% of the time for
# classifier-free guidance (Nichol et al. 2022, section 3.2); the unCLIP decoder drops it
# 50% (unCLIP section 2.1), since z_i carries most of the conditioning there.
TEXT_ONLY_CAPTION_DROP = 0.2
# A warm start trains far fewer steps than the preset's from-scratch run: a lower learning
# rate keeps what the source decoder learned, and a shorter EMA horizon (~200 steps) keeps
# the exported EMA weights from being mostly the starting weights.
WARM_START_LR = 1e-4
WARM_START_EMA_DECAY = 0.995


@dataclass
class Options:
    """What the caller of ``unclip train`` may set beside the preset."""

    seed: int = 0
    device: str = "cpu"
    steps: int | None = None
    resume: bool = False
    progress: bool = True
    time_limit_s: float | None = None
    checkpoint_every: int | None = None  # None: the preset's
    batch_size: int | None = None
    text_only: bool = False
    init_from: str | Path | None = None
    low_res: int = 32
    high_res: int = 128
    degradation: str = "blur"
    num_images: int | None = None
    clip: str | None = None  # a --clip spec (clip/spec.py); None: the model directory's own CLIP
    embeddings: str | None = None  # an embedding folder (clip-retrieval layout) for the priors and z_i lookups
    stream: bool = False  # stream the decoder's data even when it is a built-in set or a folder
    num_workers: int = 0  # DataLoader workers of a streamed decoder run; an upsampler's batch workers
    # decoder: learn the variance (None: the preset's choice; ignored with init_from)
    learned_variance: bool | None = None
    fsdp: bool = False
    grad_checkpointing: bool = False
    dist_backend: str | None = None
    dist_timeout_s: float = distributed.DEFAULT_TIMEOUT_S


@dataclass
class Plan:
    """A prepared training run: the stage, its loop settings and budget, and what to record."""

    stage: Any
    config: TrainConfig
    budget: float | None
    component: str
    info: dict[str, Any] = field(default_factory=dict)
    register: bool = False
    # the part of the summary recorded in model.json's info (None: the whole summary)
    register_keys: tuple[str, ...] | None = None
    # called after training: more of the summary (a stream's skip counts, z_i lookups)
    after: Callable[[], dict[str, Any]] | None = None


# ----------------------------------------------------------------------------- shared pieces


def prepare_training_set(data: str, spec: dict[str, Any], out: Path, *, seed: int, progress: bool) -> TrainingSet:
    """Render (or reload from ``out/cache``) a run preset's training images (rank 0 renders)."""
    cache = out / "cache"
    fingerprint = cache_fingerprint(data, seed, spec)
    with distributed.main_first():
        if (cache / "training_set.safetensors").is_file():
            check_cache(cache, fingerprint)
            log.info("reusing the rendered training set in %s", cache)
            return load_training_set(cache)
        dataset = get_dataset(data, split="train", size=spec["image_size"], seed=seed, length=spec["num_images"])
        training_set = render_training_set(dataset, spec["num_images"], progress=progress)
        save_training_set(training_set, cache)
        record_cache(cache, fingerprint)
        return training_set


def _encoded_training_set(data: str, preset: str, out: Path, clip: Any, opts: Options) -> TrainingSet:
    """The run's training set with its CLIP embeddings (encoded once by rank 0, cached in ``out/cache``)."""
    with distributed.main_first():
        spec = get_run_preset(preset)["data"]
        training_set = prepare_training_set(data, spec, out, seed=opts.seed, progress=opts.progress)
        if training_set.image_embeds is None:
            encode_training_set(training_set, clip, progress=opts.progress)
            save_training_set(training_set, out / "cache")
        return training_set


# ----------------------------------------------------------------------------- set-up per component


def setup_clip(data: str, preset: str, out: Path, opts: Options) -> Plan:
    """Our own CLIP: the tokenizer is trained on the run's captions, then contrastive training."""
    section = get_preset("clip", preset)
    training_set = prepare_training_set(
        data, get_run_preset(preset)["data"], out, seed=opts.seed, progress=opts.progress
    )
    tokenizer = Tokenizer.train(training_set.captions)
    config = CLIPConfig(**{**section["model"], "vocab_size": tokenizer.vocab_size})
    torch.manual_seed(opts.seed)
    stage = CLIPStage(CLIP(config), tokenizer, training_set, section["batch_size"], export_root=out)
    keys = ("steps", "wall_time_s", "final_loss")  # registered, so that `--clip DIR` and the later stages find it
    return Plan(stage, *train_config(section, opts), "clip", register=True, register_keys=keys)


REGISTER_KEYS = ("steps", "wall_time_s", "final_loss", "preset", "data", "embeddings", "clip", "source")


def setup_prior(data: str, preset: str, out: Path, opts: Options) -> Plan:
    """The diffusion prior, on the cached CLIP embeddings of the run's training set or on ``opts.embeddings``."""
    section = get_preset("prior_diffusion", preset)
    clip, record = training_clip(out, opts.clip, opts.device, component="prior")
    batch = opts.batch_size or section["batch_size"]
    info = {"preset": preset, "clip": record}
    if opts.embeddings is not None:
        stage, more = prior_from_embeddings(section, out, opts, clip, record, batch)
        info.update(more)
    else:
        training_set = _encoded_training_set(data, preset, out, clip, opts)
        dims = {"embed_dim": clip.embed_dim, "text_width": clip.text_width, "context_length": clip.context_length}
        torch.manual_seed(opts.seed)
        model = DiffusionPrior(DiffusionPriorConfig(**{**section["model"], **dims}))
        stage = PriorStage(model, training_set, batch, export_root=out)
        info["data"] = data
    config, budget = train_config(section, opts)
    return Plan(stage, config, budget, "prior_diffusion", info, register=True, register_keys=REGISTER_KEYS)


def warm_start_decoder(init_dir: str | Path, *, text_only: bool) -> tuple[Decoder, DiffusionSettings]:
    """A decoder with the network of the decoder in ``init_dir``, initialised from its weights.

    With ``text_only`` the z_i pathway (null embedding, projections into the time embedding
    and context tokens) is left out; every other weight is copied. This is how the shipped
    GLIDE-style baseline was trained on CPU: the same network, fine-tuned on captions alone.
    """
    config, state, extra = load_component(init_dir, "decoder", DecoderConfig)
    if text_only:
        config = replace(config, use_image_embed=False)
    model = Decoder(config)
    own = model.state_dict()
    kept = {k: v.float() if v.is_floating_point() else v for k, v in state.items() if k in own}
    missing = sorted(set(own) - set(kept))
    if missing:
        raise ConfigError(
            f"cannot warm-start from {init_dir}: its weights lack {missing[:5]}; pass the directory of a decoder "
            "component"
        )
    model.load_state_dict(kept, strict=True)
    return model, DiffusionSettings(**extra.get("diffusion", {}))


def setup_decoder(data: str, preset: str, out: Path, opts: Options) -> Plan:
    """The decoder (or, ``text_only``, the GLIDE-style baseline) on the cached embeddings.

    ``init_from``: a decoder component directory to start from (its network replaces the
    preset's), trained with the warm-start learning rate and EMA.
    """
    section = get_preset("decoder", preset)
    clip, record = training_clip(out, opts.clip, opts.device, component="decoder")
    stream = uses_stream(data, opts)
    training_set = None if stream else _encoded_training_set(data, preset, out, clip, opts)
    torch.manual_seed(opts.seed)
    if opts.init_from is not None:
        model, settings = warm_start_decoder(opts.init_from, text_only=opts.text_only)
    else:
        model_kwargs = {**section["model"], **text_dims(clip)}
        if opts.text_only:
            model_kwargs["use_image_embed"] = False
        diffusion = dict(section.get("diffusion", {}))
        if opts.learned_variance is not None:
            diffusion["learned_variance"] = opts.learned_variance
        settings = DiffusionSettings(**diffusion)
        model_kwargs["learned_variance"] = settings.learned_variance
        model = Decoder(DecoderConfig(**model_kwargs))
    name = "decoder_text_only" if opts.text_only else "decoder"
    drops = {"text_drop_prob": TEXT_ONLY_CAPTION_DROP} if opts.text_only else {}
    batch = opts.batch_size or section["batch_size"]
    if stream:
        stage = stream_decoder_stage(data, preset, out, opts, model, settings, clip, record, batch, name=name, **drops)
    else:
        stage = DecoderStage(model, training_set, batch, settings, export_root=out, name=name, **drops)
    config, budget = train_config(section, opts)
    if opts.init_from is not None:
        config = replace(config, lr=WARM_START_LR, ema_decay=WARM_START_EMA_DECAY)
    info = {
        "batch_size": batch,
        "init_from": str(opts.init_from) if opts.init_from else None,
        "caption_drop": stage.text_drop_prob,
    }
    folder = getattr(stage, "folder", None)
    embeddings = folder.describe() if folder else None
    info.update(preset=preset, clip=record, data=str(data), embeddings=embeddings, streamed=stream)
    after = (lambda: {"source": stage.describe()}) if stream else None
    budget_keys = ("batch_size", "init_from")  # `unclip report` compares the two decoders' budgets
    keys = None if opts.text_only else REGISTER_KEYS + ("streamed", *budget_keys)
    return Plan(stage, config, budget, name, info, register=True, register_keys=keys, after=after)


def _ar_training_set(
    out: Path, data: str, clip: FrozenCLIP, n: int, *, seed: int, progress: bool, use_model_cache: bool
) -> TrainingSet:
    """The AR prior's training set: the model dir's ``cache`` (written by ``train all``; only
    when ``use_model_cache``), else this stage's own cache of ``n`` images, else a fresh
    render of ``n`` images at the CLIP's image size, encoded by ``clip`` and cached."""
    own = out / "runs" / AR_COMPONENT / "cache"
    candidates = ([(out / "cache", None)] if use_model_cache else []) + [(own, n)]
    for cache, wanted in candidates:
        if (cache / "training_set.safetensors").is_file():
            ts = load_training_set(cache)
            if ts.image_embeds is not None and ts.text is not None and (wanted is None or len(ts) == wanted):
                log.info("reusing the encoded training set in %s", cache)
                return ts
    dataset = get_dataset(data, split="train", size=clip.image_size, seed=seed, length=n)
    ts = render_training_set(dataset, n, progress=progress)
    encode_training_set(ts, clip, progress=progress)
    save_training_set(ts, own)
    return ts


def setup_ar_prior(data: str, preset: str, out: Path, opts: Options) -> Plan:
    """The AR prior: encode the training set with the model's CLIP, fit the PCA and code book."""
    spec = get_preset("prior_ar", preset)
    clip, record = training_clip(out, opts.clip, opts.device, component="AR prior")
    n = opts.num_images or spec["num_images"]
    if opts.embeddings is not None:
        stage, info = ar_prior_from_embeddings(spec, out, opts, clip, record, n)
        params = sum(p.numel() for p in stage.model.parameters())
        info.update(preset=preset, params=params, clip=record)
        return Plan(stage, *train_config(spec, opts), AR_COMPONENT, info, register=True)
    with distributed.main_first():
        own_cache = opts.num_images is None
        ts = _ar_training_set(out, data, clip, n, seed=opts.seed, progress=opts.progress, use_model_cache=own_cache)
    torch.manual_seed(opts.seed)
    model, _, pca_info = build_ar_prior(
        ts, embed_dim=clip.embed_dim, text_width=clip.text_width, context_length=clip.context_length,
        model_kwargs=spec["model"], rel_error=spec["rel_error"], max_components=spec["max_components"],
    )  # fmt: skip
    log.info(
        "AR prior: keeping %d PCA components (relative MSE %.4f)", pca_info["num_components"], pca_info["relative_mse"]
    )
    stage = ARPriorStage(model.to(opts.device), ts, spec["batch_size"], export_root=out, extra={"pca": pca_info})
    params = sum(p.numel() for p in model.parameters())
    info = {
        "pca": pca_info,
        "num_images": len(ts),
        "preset": preset,
        "batch_size": spec["batch_size"],
        "params": params,
    }
    return Plan(stage, *train_config(spec, opts), AR_COMPONENT, info, register=True)


def setup_upsampler(data: str, preset: str, out: Path, opts: Options) -> Plan:
    """A ``low_res -> high_res`` upsampler on shapes images rendered at ``high_res`` (kept as uint8)."""
    if data != "shapes":
        raise ConfigError("`unclip train upsampler` trains on the built-in shapes data only (--data shapes)")
    spec = get_preset("upsampler", preset)
    t0 = time.perf_counter()
    images = render_training_images(opts.num_images or spec["num_images"], opts.high_res, seed=opts.seed)
    render_s = time.perf_counter() - t0
    torch.manual_seed(opts.seed)
    if opts.init_from is not None:  # the preset's schedule, from the given stage's network and weights
        model, settings = warm_start_upsampler(opts.init_from, opts.low_res, opts.high_res)
    else:
        model = Upsampler(UpsamplerConfig(low_res=opts.low_res, high_res=opts.high_res, **spec["model"]))
        settings = DiffusionSettings(**spec["diffusion"])
    stage = UpsamplerStage(
        model, images, opts.batch_size or spec["batch_size"], settings, opts.degradation, export_root=out,
        workers=opts.num_workers, seed=opts.seed,
    )  # fmt: skip
    name = component_name(opts.high_res)
    info = {
        "component": name, "low_res": opts.low_res, "high_res": opts.high_res, "degradation": opts.degradation,
        "preset": preset, "crop": stage.crop, "batch_size": stage.batch_size, "num_images": int(images.shape[0]),
        "params": sum(p.numel() for p in model.parameters()), "render_s": render_s, "device": opts.device,
        "init_from": str(opts.init_from) if opts.init_from else None,
    }  # fmt: skip
    keys = ("steps", "wall_time_s", "low_res", "high_res", "degradation", "preset", "params", "device")
    return Plan(stage, *train_config(spec, opts), name, info, register=True, register_keys=keys)


SETUPS: dict[str, Callable[[str, str, Path, Options], Plan]] = {
    "clip": setup_clip,
    "prior": setup_prior,
    "decoder": setup_decoder,
    "ar-prior": setup_ar_prior,
    "upsampler": setup_upsampler,
}


# ----------------------------------------------------------------------------- entry points


_PRESET_SECTIONS = {
    "clip": "clip", "prior": "prior_diffusion", "decoder": "decoder", "ar-prior": "prior_ar", "upsampler": "upsampler",
}  # fmt: skip


def _check_stage_fingerprint(name: str, data: str, preset: str, out: Path, opts: Options, *, resume: bool) -> None:
    """Compare (on resume) or record the fingerprint of stage ``name`` in ``out/runs/<component>``."""
    component = component_of(name, text_only=opts.text_only, high_res=opts.high_res)
    train_settings = get_preset(_PRESET_SECTIONS[name], preset).get("train", {})
    fingerprint = stage_fingerprint(data, preset, opts, train_settings)
    check_fingerprint(out / "runs" / component, fingerprint, resume=resume, what=f"{component} in {out}")


def train_component(name: str, data: str, preset: str, out: str | Path, **options: Any) -> dict[str, Any]:
    """Train component ``name`` (one of :data:`COMPONENTS`) into model directory ``out``.

    ``options`` are the fields of :class:`Options`. The run's summary (loop figures plus what
    the set-up recorded) is written to ``out/runs/<component>/summary.json`` and returned;
    components added beside a trained model (AR prior, upsampler, text-only decoder) are
    registered in ``out/model.json``.
    """
    if name not in SETUPS:
        raise ConfigError(f"unknown component '{name}'; choose one of {', '.join(COMPONENTS)}")
    opts = _join_process_group(Options(**options))
    if name in ("clip", "upsampler") and (opts.clip or opts.embeddings or opts.stream):
        raise ConfigError(f"`unclip train {name}` takes no --clip, --embeddings or --stream (for the priors, decoder)")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    _check_stage_fingerprint(name, data, preset, out, opts, resume=opts.resume)
    start = time.perf_counter()
    plan = SETUPS[name](data, preset, out, opts)
    run_dir = out / "runs" / plan.component
    stats = run_stage(plan.stage, plan.config, plan.budget, run_dir, resume=opts.resume, progress=opts.progress)
    signal_name = stats.pop("interrupted", None)
    if signal_name is not None:  # a checkpoint, no summary: the stage has not finished
        raise TrainingInterrupted(
            f"{plan.component}: stopped by {signal_name} at step {stats['steps']} of {plan.config.steps}; the "
            f"checkpoint is in {run_dir}. Rerun the same command with --resume to continue",
            signal_name,
        )
    after = plan.after() if plan.after else {}
    summary = {**stats, **plan.info, **after, "total_wall_time_s": time.perf_counter() - start, **_world()}
    if distributed.is_main():
        atomic_write_json(run_dir / "summary.json", summary)
        if plan.register and component_done(out, plan.component):
            keys = plan.register_keys
            info = summary if keys is None else {k: summary[k] for k in keys if k in summary}
            register_component(out, plan.component, info=info)
    distributed.barrier()
    return summary


def _join_process_group(opts: Options) -> Options:
    """Join torchrun's process group (when launched by it) and use this rank's device."""
    distributed.init_from_env(opts.device, opts.dist_backend, opts.dist_timeout_s)
    return replace(opts, device=distributed.local_device(opts.device))


def _world() -> dict[str, int]:
    """The number of processes, for summaries of runs that used more than one."""
    ctx = distributed.context()
    return {"world_size": ctx.world_size} if ctx.enabled else {}


def train_all(data: str, preset: str, out: str | Path, **options: Any) -> dict[str, Any]:
    """Train CLIP, then the prior and the decoder on its embeddings; write a model directory.

    With ``clip`` (a ``--clip`` spec) no CLIP is trained: that frozen CLIP is used (ours is
    copied to ``out/clip``, a pretrained one recorded in ``model.json``). Shards, ``stream``
    or ``embeddings`` take the real-data path (:func:`~unclip.train.real_data.train_all_streamed`).
    With ``resume``, finished components are kept and an interrupted stage continues from
    its last checkpoint. Returns a summary (also written to ``out/train_summary.json``).
    """
    from ..eval.clip_retrieval import clip_retrieval_report

    opts = _join_process_group(Options(**options))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    data_spec = get_run_preset(preset)["data"]  # fails early on an unknown name
    timings: dict[str, float] = {}
    start = time.perf_counter()
    if opts.embeddings is not None or opts.stream or is_shard_spec(data):
        record, extra = train_all_streamed(data, preset, out, opts, options, train_component, timings)
        return finish_all(out, data, preset, opts, timings, start, {}, record, extra, _world())
    training_set = prepare_training_set(data, data_spec, out, seed=opts.seed, progress=opts.progress)
    timings["render_s"] = time.perf_counter() - start
    t0 = time.perf_counter()
    record = None
    if opts.clip is not None:
        clip, record = training_clip(out, opts.clip, opts.device, component="model")
    else:
        if not (opts.resume and component_done(out, "clip")):
            train_component("clip", data, preset, out, **options)
        else:
            _check_stage_fingerprint("clip", data, preset, out, opts, resume=True)
        clip = FrozenCLIP.load(out / "clip", device=opts.device)
    timings["clip_s"] = time.perf_counter() - t0
    retrieval = {}
    if data == "shapes" and record is None and distributed.is_main():  # our own CLIP's figure, when trained here
        retrieval = clip_retrieval_report(clip, data=data, seed=opts.seed)
    if retrieval:
        atomic_write_json(out / "clip_retrieval.json", retrieval)
    t0 = time.perf_counter()
    with distributed.main_first():  # rank 0 encodes; the others read the cache in the stages
        if distributed.is_main() and (training_set.image_embeds is None or not opts.resume):
            encode_training_set(training_set, clip, progress=opts.progress)
            save_training_set(training_set, out / "cache")
    timings["encode_s"] = time.perf_counter() - t0
    for name, component in (("prior", "prior_diffusion"), ("decoder", "decoder")):
        t0 = time.perf_counter()
        if not (opts.resume and component_done(out, component)):
            train_component(name, data, preset, out, **options)
        else:
            _check_stage_fingerprint(name, data, preset, out, opts, resume=True)
        timings[f"{name}_s"] = time.perf_counter() - t0
    skipped = {"data_skipped": training_set.skipped or {"count": 0, "reasons": {}, "examples": []}}
    return finish_all(out, data, preset, opts, timings, start, retrieval, record, skipped, _world())
