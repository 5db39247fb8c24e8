"""Training the autoregressive prior: its stage (batch -> loss) and ``train_ar_prior``.

The stage follows the :class:`unclip.train.loop.Stage` protocol. Its targets are fixed
before training: the PCA and the bucket edges are fitted once on the training set's
cached CLIP image embeddings (they are buffers of the model, so they are saved with the
weights and restored on resume), and every training embedding is encoded once into its
dot-product code and its K coefficient codes.
"""

from __future__ import annotations

import copy
import logging
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..checkpoint import atomic_write_json, save_component
from ..model_dir import register_component
from ..data.embeddings import TrainingSet
from ..errors import CheckpointError, ConfigError
from .ar_prior import COMPONENT, ARPrior, ARPriorConfig
from .pca import PCA

log = logging.getLogger(__name__)

# Per preset: the number of training images, the model sizes, the loop settings (fields of
# TrainConfig, plus ``time_limit_s``) and the batch size. "tiny" is for tests; "small" is
# the shipped size (~3M parameters; meant for a GPU or a long CPU run); "cpu" is a ~0.9M
# parameter model that learns something useful in a quarter of an hour on 2 CPU cores.
AR_PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {
        "num_images": 256,
        "rel_error": 0.01, "max_components": 16,
        "model": dict(width=32, depth=1, heads=2, num_buckets=64, num_dot_buckets=16),
        "train": dict(steps=20, lr=1e-3, warmup_steps=2, checkpoint_every=10, ema_decay=0.9),
        "batch_size": 32,
    },
    "small": {
        "num_images": 20000,
        "rel_error": 0.01, "max_components": None,
        "model": dict(width=256, depth=3, heads=8, num_buckets=1024, num_dot_buckets=64),
        "train": dict(steps=6000, lr=5e-4, weight_decay=0.01, warmup_steps=100, lr_decay="constant", checkpoint_every=250, ema_decay=0.999),
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


def get_ar_preset(name: str) -> dict[str, Any]:
    """A deep copy of AR-prior preset ``name``; ConfigError lists the choices."""
    if name not in AR_PRESETS:
        raise ConfigError(f"unknown AR-prior preset '{name}'; choose one of {', '.join(AR_PRESETS)}")
    return copy.deepcopy(AR_PRESETS[name])


class ARPriorStage:
    """Cross-entropy of the AR prior on the codes of cached CLIP image embeddings."""

    name = COMPONENT

    def __init__(self, model: ARPrior, data: TrainingSet, batch_size: int, export_root: Path | None = None, extra: dict[str, Any] | None = None) -> None:
        if data.image_embeds is None or data.text is None:
            raise ValueError("the AR prior trains on CLIP embeddings: call encode_training_set first")
        self.model, self.data, self.batch_size = model, data, batch_size
        self.export_root, self.extra = export_root, extra
        text_embeds = data.text.text_embeds[data.caption_ids].float()
        self.dot_codes, self.codes = model.encode(data.image_embeds.float().to(model.pca_mean.device), text_embeds.to(model.pca_mean.device))
        self.dot_codes, self.codes = self.dot_codes.cpu(), self.codes.cpu()

    def get_batch(self, step: int, generator: torch.Generator) -> torch.Tensor:
        return torch.randint(0, len(self.data), (self.batch_size,), generator=generator)

    def loss(self, index: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, dict[str, Any]]:
        device = self.model.pca_mean.device
        text = self.data.text
        cid = self.data.caption_ids[index]
        keep = (torch.rand(index.shape[0], generator=generator) >= self.model.config.text_drop_prob).to(device)
        loss, acc = self.model.loss(
            text.text_embeds[cid].float().to(device), text.token_encodings[cid].float().to(device), text.token_mask[cid].to(device),
            keep, self.dot_codes[index].to(device), self.codes[index].to(device),
        )
        return loss, {"acc": acc}

    def export(self, model: nn.Module, out_dir: Path) -> None:
        save_component(Path(self.export_root or out_dir) / self.name, COMPONENT, model.config, model.state_dict(), extra=self.extra)


def build_ar_prior(data: TrainingSet, *, embed_dim: int, text_width: int, context_length: int, model_kwargs: dict[str, Any], rel_error: float = 0.01, max_components: int | None = None) -> tuple[ARPrior, PCA, dict[str, Any]]:
    """Fit the PCA on ``data``'s image embeddings, build the prior and fit its code book.

    Returns the model, the full PCA and a JSON-able summary (components kept, relative error).
    """
    pca = PCA.fit(data.image_embeds.float())
    k_needed = pca.num_components_for(rel_error)
    k = min(k_needed, max_components) if max_components else k_needed
    config = ARPriorConfig(**{**model_kwargs, "embed_dim": embed_dim, "text_width": text_width, "context_length": context_length, "num_components": k})
    model = ARPrior(config)
    text_embeds = data.text.text_embeds[data.caption_ids].float()
    model.fit_codebook(data.image_embeds.float(), text_embeds, pca)
    errs = pca.relative_errors()
    info = {"rel_error_target": rel_error, "num_components_for_target": k_needed, "num_components": k, "relative_mse": float(errs[k]), "embed_dim": pca.dim}
    return model, pca, info


def _training_set(model_dir: Path, data: str, clip, n: int, *, seed: int, progress: bool, use_model_cache: bool) -> TrainingSet:
    """The training set: the model dir's ``cache`` (written by ``train all``; only when
    ``use_model_cache``), else this stage's own cache of ``n`` images, else a fresh render
    of ``n`` images at the CLIP's image size, encoded by ``clip`` and cached."""
    from ..data import get_dataset
    from ..data.embeddings import encode_training_set, load_training_set, render_training_set, save_training_set

    own = model_dir / "runs" / COMPONENT / "cache"
    candidates = ([(model_dir / "cache", None)] if use_model_cache else []) + [(own, n)]
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


def train_ar_prior(model_dir: str | Path, data: str = "shapes", preset: str = "tiny", device: str = "cpu", steps: int | None = None, resume: bool = False, time_limit_s: float | None = None, num_images: int | None = None, *, seed: int = 0, progress: bool = False) -> dict[str, Any]:
    """Train the AR prior for the model in ``model_dir`` and add it as component ``prior_ar``.

    Renders ``num_images`` training images (the preset's number by default) at the CLIP's
    image size, encodes them with ``model_dir/clip``, fits the PCA and code book, trains
    (resumable from ``model_dir/runs/prior_ar``), exports ``model_dir/prior_ar/`` and
    records it in ``model.json``. ``time_limit_s`` fits the number of steps to a wall-clock
    budget (ignored when ``steps`` is given). Returns a summary.
    """
    from ..clip.frozen import FrozenCLIP
    from ..train.recipes import _train_config, run_stage

    model_dir = Path(model_dir)
    if not (model_dir / "clip" / "config.json").is_file():
        raise CheckpointError(f"training the AR prior needs a CLIP in {model_dir / 'clip'}; train one with `unclip train clip --out {model_dir}` first")
    spec = get_ar_preset(preset)
    if time_limit_s is not None:
        spec["train"]["time_limit_s"] = time_limit_s
        spec["train"]["lr_decay"] = "constant"
    start = time.perf_counter()
    clip = FrozenCLIP.load(model_dir / "clip", device=device)
    n = num_images or spec["num_images"]
    ts = _training_set(model_dir, data, clip, n, seed=seed, progress=progress, use_model_cache=num_images is None)
    torch.manual_seed(seed)
    model, pca, pca_info = build_ar_prior(ts, embed_dim=clip.embed_dim, text_width=clip.text_width, context_length=clip.context_length, model_kwargs=spec["model"], rel_error=spec["rel_error"], max_components=spec["max_components"])
    log.info("AR prior: keeping %d PCA components (relative MSE %.4f)", pca_info["num_components"], pca_info["relative_mse"])
    stage = ARPriorStage(model.to(device), ts, spec["batch_size"], export_root=model_dir, extra={"pca": pca_info})
    stats = run_stage(stage, _train_config(spec, seed=seed, device=device, steps=steps), model_dir / "runs" / COMPONENT, resume=resume, progress=progress)
    summary = {**stats, "pca": pca_info, "num_images": len(ts), "preset": preset, "batch_size": spec["batch_size"], "params": sum(p.numel() for p in model.parameters()), "total_wall_time_s": time.perf_counter() - start}
    atomic_write_json(model_dir / "runs" / COMPONENT / "summary.json", summary)
    register_component(model_dir, COMPONENT, info=summary)
    return summary
