"""Model directories: the one module that knows their layout (DESIGN.md section 4).

A model directory holds one sub-directory per component (``clip``, ``prior_diffusion``,
``prior_ar``, ``decoder``, ``decoder_text_only``, ``upsampler_<side>``) and a
``model.json`` that names them, with the sampling defaults and training information.
A model trained on a pretrained CLIP (``--clip open_clip:...`` or ``hf:...``) has no ``clip``
component; ``model.json``'s ``clip_record`` (kind, name, spec, file, SHA-256; see
:func:`unclip.clip.spec.clip_record`) says which CLIP it was trained with, and loading finds
that CLIP again or says what is missing or changed.
This module resolves a shipped name or a path to a directory, reads and writes
``model.json``, registers components that training adds to an existing directory, and
loads every component kind; :meth:`unclip.pipeline.UnCLIP.load` composes what it loads.
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from .clip.frozen import FrozenCLIP
from .clip.spec import check_clip_record, load_recorded_clip
from .decoder.model import Decoder, DecoderConfig
from .diffusion import UPSAMPLER_DEFAULT_STEPS, DiffusionSettings
from .errors import CheckpointError, InputError
from .prior.ar_prior import COMPONENT as AR_COMPONENT
from .prior.ar_prior import ARPrior, ARPriorConfig
from .prior.diffusion_prior import DiffusionPrior, DiffusionPriorConfig
from .storage.checkpoint import atomic_write_json, config_from_dict, load_component, load_state_into, read_json
from .storage.integrity import json_type_error
from .storage.model_meta import check_model_meta, loading
from .upsampler.cascade import CascadeStage
from .upsampler.model import Upsampler, UpsamplerConfig, check_prediction

log = logging.getLogger(__name__)

MODEL_FORMAT = "unclip-model"
MODEL_VERSION = 1
SHIPPED_MODELS = ("shapes",)
DECODERS = ("decoder", "decoder_text_only")
UPSAMPLER_PREFIX = "upsampler_"
KNOWN_COMPONENTS = ("clip", "prior_diffusion", AR_COMPONENT, *DECODERS)
CLIP_RECORD = "clip_record"


@dataclass
class SamplingDefaults:
    """Sampling settings a model directory recommends (stored in model.json)."""

    prior_steps: int = 64
    prior_guidance: float = 1.0
    best_of: int = 2
    decoder_steps: int = 50
    decoder_guidance: float = 3.0
    # Stochastic DDIM (eta 1) by default: with the cosine schedule the deterministic path
    # (eta 0) left visible residual noise in some samples of the shipped model, while
    # eta 1 gave clean images at 25 steps. Manipulations use eta 0 where they must retrace
    # an inversion.
    eta: float = 1.0
    # Output side of generate/vary/interpolate/text_diff: None is the decoder's own side;
    # a larger side runs the model's upsamplers after the decoder.
    size: int | None = None
    # Largest slerp weight of a text diff when none is given; calibrated per model by
    # benchmarks/textdiff_calibration.py (the smallest theta at which edits reach their target).
    text_diff_max_theta: float = 0.5
    # Sampler of the prior, decoder and upsamplers: "ddim" (eta above for the decoder) or
    # "dpmpp2m" (DPM-Solver++(2M), second order: fewer steps; eta > 0 is its SDE variant).
    sampler: str = "ddim"
    # Arithmetic of every network call while sampling: "fp32", "bf16" (autocast) or "auto"
    # (bf16 where the hardware runs it natively); ``--precision`` overrides it.
    precision: str = "fp32"


# ----------------------------------------------------------------------------- the index


def resolve_model_path(name_or_path: str | os.PathLike) -> Path:
    """A shipped model name (``"shapes"``) or a model directory -> its path."""
    path = Path(name_or_path)
    if path.is_dir():
        return path
    if str(name_or_path) in SHIPPED_MODELS:
        shipped = Path(str(resources.files("unclip") / "models" / str(name_or_path)))
        if (shipped / "model.json").is_file():
            return shipped
        raise CheckpointError(
            f"the shipped model '{name_or_path}' is not installed at {shipped}; "
            "reinstall unclip or train one with `unclip train all --data shapes --out DIR`"
        )
    raise CheckpointError(
        f"model '{name_or_path}' is neither a shipped model ({', '.join(SHIPPED_MODELS)}) nor a directory"
    )


def read_model_json(root: str | os.PathLike) -> dict[str, Any]:
    """Read and validate ``root/model.json``."""
    path = Path(root) / "model.json"
    if not path.is_file():
        raise CheckpointError(f"{Path(root)} has no model.json; is it a model directory written by `unclip train all`?")
    meta = read_json(path)
    if not isinstance(meta, dict):
        raise json_type_error(meta, "a JSON object", str(path), "Restore model.json or re-export the model")
    if meta.get("format") != MODEL_FORMAT or meta.get("version") != MODEL_VERSION:
        raise CheckpointError(
            f"{path}: expected format '{MODEL_FORMAT}' version {MODEL_VERSION}, "
            f"found {meta.get('format')!r} version {meta.get('version')!r}"
        )
    check_model_meta(meta, path)
    return meta


def write_model_json(
    root: str | os.PathLike,
    components: dict[str, str],
    defaults: SamplingDefaults | None = None,
    info: dict | None = None,
) -> None:
    """Write ``model.json`` for a model directory whose components are already saved."""
    payload = {
        "format": MODEL_FORMAT,
        "version": MODEL_VERSION,
        "components": components,
        "defaults": asdict(defaults or SamplingDefaults()),
    }
    if info:
        payload["info"] = info
    atomic_write_json(Path(root) / "model.json", payload)


def register_component(
    root: str | os.PathLike, name: str, path: str | None = None, info: dict[str, Any] | None = None
) -> None:
    """Record ``components[name] = path`` (default ``name``) and ``info[name]`` in ``root/model.json``.

    Training commands that add one component to an existing directory (``unclip train
    ar-prior``, ``upsampler``, ``decoder --text-only``) call this so that the pipeline finds
    it. Written atomically; a directory without ``model.json`` gets a minimal one.
    """
    meta_path = Path(root) / "model.json"
    if meta_path.is_file():
        meta = read_model_json(root)
    else:
        meta = {"format": MODEL_FORMAT, "version": MODEL_VERSION, "components": {}}
    meta.setdefault("components", {})[name] = path or name
    if info is not None:
        meta.setdefault("info", {})[name] = info
    atomic_write_json(meta_path, meta)


def read_clip_record(root: str | os.PathLike) -> dict[str, Any] | None:
    """The ``clip_record`` of ``root/model.json`` (None when there is no model.json or no record)."""
    if not (Path(root) / "model.json").is_file():
        return None
    return read_model_json(root).get(CLIP_RECORD)


def record_clip(root: str | os.PathLike, record: dict[str, Any]) -> None:
    """Store which CLIP the model is trained with (:func:`unclip.clip.spec.clip_record`) in ``root/model.json``.

    Written atomically; a directory without ``model.json`` gets a minimal one.
    """
    meta_path = Path(root) / "model.json"
    meta = {"format": MODEL_FORMAT, "version": MODEL_VERSION, "components": {}}
    if meta_path.is_file():
        meta = read_model_json(root)
    meta[CLIP_RECORD] = record
    atomic_write_json(meta_path, meta)


def component_done(root: str | os.PathLike, component: str) -> bool:
    """Whether ``root/component`` holds an exported component (config and weights)."""
    d = Path(root) / component
    return (d / "weights.safetensors").is_file() and (d / "config.json").is_file()


# ----------------------------------------------------------------------------- components


def load_clip(directory: str | os.PathLike, device: str | torch.device = "cpu") -> FrozenCLIP:
    """Load a CLIP component (frozen, with its tokenizer)."""
    return FrozenCLIP.load(directory).to(device)


def load_decoder(directory: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[Decoder, DiffusionSettings]:
    """Load a decoder component and the diffusion settings it was trained with."""
    config, state, extra = load_component(directory, "decoder", DecoderConfig)
    model = Decoder(config)
    load_state_into(model, state, "decoder")
    settings = DiffusionSettings(**extra.get("diffusion", {}))
    return model.to(device).eval().requires_grad_(False), settings


def load_diffusion_prior(directory: str | os.PathLike, device: str | torch.device = "cpu") -> DiffusionPrior:
    """Load a diffusion-prior component."""
    config, state, _ = load_component(directory, "prior_diffusion", DiffusionPriorConfig)
    model = DiffusionPrior(config)
    load_state_into(model, state, "prior_diffusion")
    return model.to(device).eval().requires_grad_(False)


def _as_float(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: (v.float() if v.is_floating_point() else v) for k, v in state.items()}


def load_ar_prior(directory: str | os.PathLike, device: str | torch.device = "cpu") -> ARPrior:
    """Load a ``prior_ar`` component directory (eval mode, frozen)."""
    config, state, _ = load_component(directory, AR_COMPONENT, ARPriorConfig)
    model = ARPrior(config)
    load_state_into(model, _as_float(state), AR_COMPONENT)
    return model.to(device).eval().requires_grad_(False)


def load_upsampler(directory: str | os.PathLike, device: str | torch.device = "cpu") -> CascadeStage:
    """Load an ``upsampler_<side>`` component directory (weights stored in fp16 or fp32) as float32."""
    config, state, extra = load_component(Path(directory), "upsampler", UpsamplerConfig)
    model = Upsampler(config)
    load_state_into(model, _as_float(state), "upsampler")
    settings = DiffusionSettings(**extra.get("diffusion", {}))
    check_prediction(config, settings.prediction)
    degradation = extra.get("degradation", "blur")
    steps = int(extra.get("default_steps", UPSAMPLER_DEFAULT_STEPS.get(degradation, 27)))
    start = extra.get("default_start")  # absent: the stage samples from pure noise
    return CascadeStage(
        model.to(device).eval().requires_grad_(False),
        settings,
        steps,
        degradation,
        None if start is None else int(start),
        int(extra.get("default_back_projection", 0)),
    )


def load_model_clip(root: Path, meta: dict[str, Any], device: str | torch.device = "cpu") -> Any:
    """The model's frozen CLIP: its ``clip`` component, else the pretrained CLIP its ``clip_record`` names.

    A pretrained CLIP comes back as an adapter with FrozenCLIP's interface (``tokenize``,
    ``encode_text_full``, ``encode_image``, ``embed_dim``, ``image_size`` ...). Raises
    CheckpointError saying what is missing or changed when the recorded CLIP cannot be used.
    """
    comps = meta.get("components", {})
    if "clip" in comps:
        return load_clip(root / comps["clip"], device)
    record = meta.get(CLIP_RECORD)
    if record is None:
        raise CheckpointError(
            f"{root / 'model.json'}: the model has no 'clip' component and no '{CLIP_RECORD}' naming the pretrained "
            "CLIP it was trained with; train it with `unclip train ... --clip CLIP`"
        )
    problems = check_clip_record(record)
    if problems:
        where = f"{root}: cannot load the CLIP this model was trained with ({record.get('spec')}): "
        raise CheckpointError(where + "; ".join(problems))
    return load_recorded_clip(record, device=device)


@dataclass
class LoadedModel:
    """Every component of a model directory, loaded (what :class:`~unclip.pipeline.UnCLIP` composes)."""

    root: Path
    clip: Any  # FrozenCLIP, or a pretrained CLIP's adapter with the same interface
    decoder: Decoder
    decoder_settings: DiffusionSettings
    prior: DiffusionPrior | None
    ar_prior: ARPrior | None
    upsamplers: list[CascadeStage]
    defaults: SamplingDefaults


def load_model(
    name_or_path: str | os.PathLike, device: str | torch.device = "cpu", *, decoder: str = "decoder"
) -> LoadedModel:
    """Load a model directory's components; ``decoder`` picks the decoder component."""
    root = resolve_model_path(name_or_path)
    meta = read_model_json(root)
    comps = meta.get("components", {})
    if decoder not in DECODERS:
        raise InputError(f"unknown decoder '{decoder}'; choose one of {', '.join(DECODERS)}")
    for needed in ("clip", decoder):
        if needed not in comps and not (needed == "clip" and CLIP_RECORD in meta):
            hint = (
                " (train it with `unclip train decoder --text-only --out DIR`)" if needed == "decoder_text_only" else ""
            )
            raise CheckpointError(f"{root / 'model.json'}: the model has no '{needed}' component{hint}")
    unknown = [c for c in comps if c not in KNOWN_COMPONENTS and not c.startswith(UPSAMPLER_PREFIX)]
    if unknown:
        log.warning("%s: ignoring unknown components %s", root, unknown)
    defaults = config_from_dict(SamplingDefaults, meta.get("defaults", {}), component=f"{root / 'model.json'} defaults")
    with loading(root, decoder):
        dec, settings = load_decoder(root / comps[decoder], device)
    with loading(root, "clip"):
        clip = load_model_clip(root, meta, device)
    with loading(root, "prior_diffusion"):
        prior = load_diffusion_prior(root / comps["prior_diffusion"], device) if "prior_diffusion" in comps else None
    with loading(root, AR_COMPONENT):
        ar_prior = load_ar_prior(root / comps[AR_COMPONENT], device) if AR_COMPONENT in comps else None
    upsamplers = []
    for n, p in comps.items():
        if n.startswith(UPSAMPLER_PREFIX):
            with loading(root, n):
                upsamplers.append(load_upsampler(root / p, device))
    return LoadedModel(root, clip, dec, settings, prior, ar_prior, upsamplers, defaults)
