"""Load a diffusers-layout unCLIP directory (Kakao Brain's Karlo) into our adapters, from local files only.

A directory written by diffusers' ``UnCLIPPipeline.save_pretrained`` (``kakaobrain/karlo-v1-alpha``)
or ``UnCLIPImageVariationPipeline`` (``kakaobrain/karlo-v1-alpha-image-variations``) holds a
``model_index.json`` naming each component and one folder per component. This module
reads the index, checks every component's class against the one Karlo uses, builds each
with its library's *model* class (``from_pretrained(local_files_only=True,
use_safetensors=True)``; never the deprecated pipeline classes, never pickled weights) and
maps the three scheduler configs onto our diffusion settings
(:mod:`unclip.adapters.schedules`). The samplers, guidance and inversion are ours.

The text-to-image directory has no CLIP image encoder, which every manipulation needs;
``image_encoder_from`` takes it (and the feature extractor's statistics) from the
image-variations directory, which uses the same CLIP ViT-L/14.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..clip.pretrained import CLIP_MEAN, CLIP_STD, _offline
from ..diffusion import DiffusionSettings
from ..errors import CheckpointError, UnclipError
from ..upsampler.cascade import CascadeStage
from .clip import KarloCLIP
from .decoder import KarloDecoder
from .prior import KarloPrior
from .schedules import StageSchedule, stage_schedule
from .upsampler import KarloUpsampler

log = logging.getLogger(__name__)

INDEX = "model_index.json"
PIPELINES = ("UnCLIPPipeline", "UnCLIPImageVariationPipeline")
# component -> (library, class) as model_index.json names them for Karlo
EXPECTED = {
    "prior": ("diffusers", "PriorTransformer"),
    "decoder": ("diffusers", "UNet2DConditionModel"),
    "text_proj": ("unclip", "UnCLIPTextProjModel"),
    "super_res_first": ("diffusers", "UNet2DModel"),
    "super_res_last": ("diffusers", "UNet2DModel"),
    "text_encoder": ("transformers", "CLIPTextModelWithProjection"),
    "tokenizer": ("transformers", "CLIPTokenizer"),
    "image_encoder": ("transformers", "CLIPVisionModelWithProjection"),
    "feature_extractor": ("transformers", "CLIPImageProcessor"),
}
REQUIRED = ("decoder", "text_proj", "text_encoder", "tokenizer", "decoder_scheduler")
# Karlo's sampling settings (diffusers' UnCLIPPipeline defaults); upsampler steps: 7.
KARLO_DEFAULTS = {
    "prior_steps": 25,
    "prior_guidance": 4.0,
    "best_of": 1,
    "decoder_steps": 25,
    "decoder_guidance": 8.0,
    "eta": 1.0,
}
SUPER_RES_STEPS = 7


@dataclass
class KarloComponents:
    """What :class:`unclip.pipeline.UnCLIP` needs, built from a diffusers unCLIP directory.

    ``defaults`` are keyword arguments of ``SamplingDefaults``; ``schedules`` maps "prior",
    "decoder" and "super_res" to each stage's :class:`StageSchedule`.
    """

    clip: KarloCLIP
    decoder: KarloDecoder
    decoder_settings: DiffusionSettings
    prior: KarloPrior | None
    upsamplers: list[CascadeStage]
    defaults: dict[str, Any]
    schedules: dict[str, StageSchedule]
    pipeline_class: str
    path: Path
    image_encoder_path: Path | None = None
    info: dict[str, Any] = field(default_factory=dict)


def is_diffusers_unclip(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a directory with a ``model_index.json`` (a diffusers pipeline directory)."""
    return (Path(path) / INDEX).is_file()


def read_index(path: str | os.PathLike) -> dict[str, Any]:
    """``model_index.json`` of a diffusers unCLIP directory, checked to name an unCLIP pipeline."""
    file = Path(path) / INDEX
    if not file.is_file():
        raise CheckpointError(
            f"{path} has no {INDEX}; expected a diffusers unCLIP directory such as a download of "
            "kakaobrain/karlo-v1-alpha"
        )
    try:
        index = json.loads(file.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"could not read {file} as JSON ({exc})") from exc
    name = index.get("_class_name")
    if name not in PIPELINES:
        raise CheckpointError(
            f"{file} describes a {name!r}, not one of {', '.join(PIPELINES)}; only diffusers unCLIP (Karlo) "
            "directories are supported"
        )
    return index


def _check_entry(root: Path, index: dict[str, Any], name: str) -> Path:
    entry = index.get(name)
    folder = root / name
    if not isinstance(entry, list) or len(entry) != 2 or entry[1] is None:
        raise CheckpointError(f"{root / INDEX} has no component '{name}'")
    lib, cls = EXPECTED[name]
    if entry[1] != cls and not (name == "tokenizer" and entry[1] == "CLIPTokenizerFast"):
        raise CheckpointError(
            f"{root / INDEX}: component '{name}' is a {entry[0]}.{entry[1]}, but Karlo's is a {lib}.{cls}"
        )
    if not folder.is_dir():
        raise CheckpointError(f"{folder} is missing; download the whole directory (see docs/karlo.md)")
    return folder


def _weights(folder: Path, cls: Any, dtype: torch.dtype | None, **kwargs: Any) -> torch.nn.Module:
    """``cls.from_pretrained(folder)`` from local safetensors only; errors name the folder and the fix."""
    if not any(folder.glob("*.safetensors")) and not any(folder.glob("*.safetensors.index.json")):
        raise CheckpointError(
            f"{folder} has no .safetensors weights; only safetensors are read (never pickled .bin files): download "
            "them with `--include '*.safetensors'` (see docs/karlo.md)"
        )
    try:
        model = cls.from_pretrained(str(folder), local_files_only=True, use_safetensors=True, **kwargs)
    except Exception as exc:  # the libraries raise many types (OSError, ValueError, EnvironmentError)
        raise CheckpointError(f"could not load {cls.__name__} from {folder} ({exc})") from exc
    if dtype is not None:  # cast after loading: the libraries' dtype keywords differ between versions
        model = model.to(dtype)
    return model.eval().requires_grad_(False)


def _json(file: Path) -> dict[str, Any]:
    try:
        return json.loads(file.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(
            f"could not read {file} ({exc}); download the whole directory (see docs/karlo.md)"
        ) from exc


def _side(value: Any, default: int) -> int:
    """A crop/size entry of a preprocessor config (an int, or a dict with height or shortest_edge)."""
    if isinstance(value, dict):
        value = value.get("height", value.get("shortest_edge", default))
    return int(value) if value is not None else default


def _imports() -> dict[str, Any]:
    try:
        from diffusers import PriorTransformer, UNet2DConditionModel, UNet2DModel
        from transformers import (
            CLIPTextModelWithProjection,
            CLIPTokenizer,
            CLIPVisionModelWithProjection,
        )
    except ImportError as exc:
        raise UnclipError(
            "diffusers unCLIP (Karlo) directories need the optional libraries: pip install 'unclip[diffusers]' "
            "(diffusers, transformers)"
        ) from exc
    try:  # the text projection is a model class that lives beside the deprecated pipeline
        from diffusers.pipelines.deprecated.unclip.text_proj import UnCLIPTextProjModel
    except ImportError:  # diffusers before the deprecation
        from diffusers.pipelines.unclip.text_proj import UnCLIPTextProjModel
    return {
        "PriorTransformer": PriorTransformer,
        "UNet2DConditionModel": UNet2DConditionModel,
        "UNet2DModel": UNet2DModel,
        "UnCLIPTextProjModel": UnCLIPTextProjModel,
        "CLIPTextModelWithProjection": CLIPTextModelWithProjection,
        "CLIPTokenizer": CLIPTokenizer,
        "CLIPVisionModelWithProjection": CLIPVisionModelWithProjection,
    }


def _image_encoder(
    source: Path, classes: dict[str, Any], dtype: torch.dtype | None
) -> tuple[torch.nn.Module, dict[str, Any], Path]:
    """The CLIP image encoder and its preprocessing from a diffusers unCLIP directory or an encoder folder."""
    if is_diffusers_unclip(source):
        index = read_index(source)
        folder = _check_entry(source, index, "image_encoder")
        proc_file = source / "feature_extractor" / "preprocessor_config.json"
    elif (source / "config.json").is_file():
        folder, proc_file = source, source / "preprocessor_config.json"
    else:
        raise CheckpointError(
            f"--image-encoder-from {source}: expected a diffusers unCLIP image-variations directory "
            "(kakaobrain/karlo-v1-alpha-image-variations) or a CLIPVisionModelWithProjection folder"
        )
    proc = _json(proc_file) if proc_file.is_file() else {}
    return _weights(folder, classes["CLIPVisionModelWithProjection"], dtype), proc, folder


def load_diffusers_unclip(
    path: str | os.PathLike,
    image_encoder_from: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
) -> KarloComponents:
    """Build our adapters from a diffusers unCLIP directory (local files only).

    Args:
        path: an ``UnCLIPPipeline`` or ``UnCLIPImageVariationPipeline`` directory.
        image_encoder_from: where to take the CLIP image encoder from when ``path`` has none
            (the image-variations directory, or an encoder folder); overrides ``path``'s own.
        device: where the networks go.
        dtype: the networks' dtype (None: as stored, float32 for Karlo); inputs are cast to
            it and outputs returned as float32.
    Returns:
        :class:`KarloComponents` (clip, decoder and its settings, prior or None, upsampler
        stages, sampling defaults, per-stage schedules).
    """
    root = Path(path)
    index = read_index(root)
    missing = [c for c in REQUIRED if c not in index]
    if missing:
        raise CheckpointError(f"{root / INDEX} lacks {', '.join(missing)}; it is not a complete Karlo directory")
    _offline()
    classes = _imports()
    schedules = {}
    for stage in ("prior", "decoder", "super_res"):
        if f"{stage}_scheduler" in index:
            file = root / f"{stage}_scheduler" / "scheduler_config.json"
            schedules[stage] = stage_schedule(_json(file), str(file))
    tok_folder = _check_entry(root, index, "tokenizer")
    try:
        tokenizer = classes["CLIPTokenizer"].from_pretrained(str(tok_folder), local_files_only=True)
    except Exception as exc:
        raise CheckpointError(
            f"could not load the CLIP tokenizer from {tok_folder} ({exc}); it needs vocab.json and merges.txt"
        ) from exc
    text_model = _weights(_check_entry(root, index, "text_encoder"), classes["CLIPTextModelWithProjection"], dtype)
    vision, proc, enc_path = None, {}, None
    if image_encoder_from is not None:
        vision, proc, enc_path = _image_encoder(Path(image_encoder_from), classes, dtype)
    elif "image_encoder" in index and index["image_encoder"][1] is not None:
        vision, proc, enc_path = _image_encoder(root, classes, dtype)
    size = _side(proc.get("crop_size"), int(vision.config.image_size) if vision is not None else 224)
    clip = KarloCLIP(
        tokenizer,
        text_model,
        vision,
        mean=proc.get("image_mean", CLIP_MEAN),
        std=proc.get("image_std", CLIP_STD),
        image_size=size,
    ).to(device)
    unet = _weights(_check_entry(root, index, "decoder"), classes["UNet2DConditionModel"], dtype)
    text_proj = _weights(_check_entry(root, index, "text_proj"), classes["UnCLIPTextProjModel"], dtype)
    decoder = KarloDecoder(unet, text_proj, clip).to(device)
    if not schedules["decoder"].settings.learned_variance:
        raise CheckpointError(
            f"{root}: Karlo's decoder scheduler must use variance_type 'learned_range' (its UNet outputs 6 channels)"
        )
    prior = None
    if "prior" in index and index["prior"][1] is not None:
        if "prior" not in schedules:
            raise CheckpointError(f"{root / INDEX} has a prior but no prior_scheduler")
        net = _weights(_check_entry(root, index, "prior"), classes["PriorTransformer"], dtype).to(device)
        prior = KarloPrior(net, clip.encode_text_full([""])).to(device)
    upsamplers = []
    if "super_res_first" in index and "super_res_last" in index:
        first = _weights(_check_entry(root, index, "super_res_first"), classes["UNet2DModel"], dtype)
        last = _weights(_check_entry(root, index, "super_res_last"), classes["UNet2DModel"], dtype)
        sr = schedules.get("super_res")
        if sr is None or sr.settings.learned_variance:
            raise CheckpointError(
                f"{root}: the super-resolution stage needs a super_res_scheduler with variance_type 'fixed_small_log'"
            )
        upsamplers.append(
            CascadeStage(
                KarloUpsampler(first, last, decoder.config.image_size).to(device), sr.settings, SUPER_RES_STEPS, "karlo"
            )
        )
    defaults = {**KARLO_DEFAULTS, "size": upsamplers[-1].high_res if upsamplers else None}
    info = {
        "pipeline": index["_class_name"],
        "diffusers_version": index.get("_diffusers_version"),
        "image_encoder": str(enc_path) if enc_path else None,
    }
    log.info("loaded diffusers unCLIP %s from %s (%s)", index["_class_name"], root, info)
    return KarloComponents(
        clip,
        decoder,
        schedules["decoder"].settings,
        prior,
        upsamplers,
        defaults,
        schedules,
        index["_class_name"],
        root,
        enc_path,
        info,
    )
