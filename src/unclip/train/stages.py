"""Batch-to-loss functions for each stage of unCLIP (the loop in ``loop.py`` knows none).

Each stage holds its trainable ``model``, draws a batch from a :class:`TrainingSet` with the
step's generator (so a resumed run replays the same batches), computes its loss, and
exports its inference component (EMA weights) into ``out_dir/<name>/``.
"""

from __future__ import annotations

import copy
from dataclasses import asdict
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..storage.checkpoint import save_component
from ..clip.frozen import FrozenCLIP
from ..clip.loss import contrastive_loss
from ..clip.model import CLIP
from ..clip.tokenizer import Tokenizer
from ..data.embeddings import TrainingSet
from ..decoder.model import Decoder
from ..diffusion import DiffusionSettings, sample_timesteps, training_loss
from ..prior.diffusion_prior import DiffusionPrior


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def _random_index(n: int, batch: int, generator: torch.Generator) -> torch.Tensor:
    return torch.randint(0, n, (batch,), generator=generator)


def prior_loss(
    model: DiffusionPrior, diffusion, z_i: torch.Tensor, z_t: torch.Tensor, tokens: torch.Tensor, mask: torch.Tensor,
    generator: torch.Generator,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The diffusion prior's loss on one batch: MSE between the predicted and the true clean
    ``sqrt(E) * z_i`` (unCLIP section 2.2 predicts z_i directly), caption dropped with
    ``text_drop_prob``. Draws t, the noise and the drop mask from ``generator``, in that order."""
    device = _device(model)
    b = z_i.shape[0]
    z0 = (z_i.float() * model.scale).to(device)
    t = sample_timesteps(b, diffusion.num_timesteps, generator=generator).to(device)
    noise = torch.randn(z0.shape, generator=generator).to(device)
    keep = (torch.rand(b, generator=generator) >= model.config.text_drop_prob).to(device)
    x_t = diffusion.q_sample(z0, t, noise)
    pred = model(x_t, t, z_t.float().to(device), tokens.float().to(device), mask.to(device), keep)
    loss = F.mse_loss(pred.float(), z0)
    cos = F.cosine_similarity(pred.detach().float(), z0, dim=-1).mean()
    return loss, {"cos": cos}  # 0-d tensors: the loop syncs them only at log steps


def decoder_loss(
    stage, x0: torch.Tensor, z_i: torch.Tensor, tokens: torch.Tensor, generator: torch.Generator
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The decoder's loss on one batch (``stage``: its ``model``, ``diffusion`` and drop rates):
    z_i dropped with ``image_drop_prob``, the caption with ``text_drop_prob`` (unCLIP section 2.1).
    Draws the two drop masks, t and the noise from ``generator``, in that order."""
    model = stage.model
    device = _device(model)
    b = x0.shape[0]
    x0, z_i, tokens = x0.to(device), z_i.float().to(device), tokens.to(device)
    image_keep = (torch.rand(b, generator=generator) >= stage.image_drop_prob).to(device)
    text_keep = (torch.rand(b, generator=generator) >= stage.text_drop_prob).to(device)
    t = sample_timesteps(b, stage.diffusion.num_timesteps, generator=generator).to(device)
    noise = torch.randn(x0.shape, generator=generator).to(device)
    x_t = stage.diffusion.q_sample(x0, t, noise)
    out = model(x_t, t, z_i, tokens, image_keep, text_keep)
    terms = training_loss(stage.diffusion, out.float(), x0, x_t, t, noise)
    metrics = {"mse": terms["mse"].mean().detach()}
    if "vb" in terms:
        metrics["vb"] = terms["vb"].mean().detach()
    return terms["loss"].mean(), metrics


class CLIPStage:
    """Contrastive training of our own CLIP on the images and captions of a training set."""

    name = "clip"

    def __init__(self, model: CLIP, tokenizer: Tokenizer, data: TrainingSet, batch_size: int, export_root: Path | None = None) -> None:
        self.export_root = export_root
        self.model, self.tokenizer, self.data, self.batch_size = model, tokenizer, data, batch_size
        self.caption_tokens = tokenizer.encode(data.captions, model.config.context_length)

    def get_batch(self, step: int, generator: torch.Generator) -> torch.Tensor:
        return _random_index(len(self.data), self.batch_size, generator)

    def loss(self, index: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, dict[str, float]]:
        device = _device(self.model)
        images = self.data.images_float(index, self.model.config.image_size).to(device)
        caption_ids = self.data.caption_ids[index]
        tokens = self.caption_tokens[caption_ids].to(device)
        image_embed, text_embed, logit_scale = self.model(images, tokens)
        loss = contrastive_loss(image_embed, text_embed, logit_scale, caption_ids=caption_ids.to(device))
        return loss, {"logit_scale": float(logit_scale.detach())}

    def export(self, model: nn.Module, out_dir: Path) -> None:
        FrozenCLIP.from_model(copy.deepcopy(model), self.tokenizer).save(Path(self.export_root or out_dir) / self.name)


class PriorStage:
    """Diffusion prior: MSE between the predicted and the true clean image embedding."""

    name = "prior_diffusion"

    def __init__(self, model: DiffusionPrior, data: TrainingSet, batch_size: int, export_root: Path | None = None) -> None:
        self.export_root = export_root
        if data.image_embeds is None or data.text is None:
            raise ValueError("the prior trains on CLIP embeddings: call encode_training_set first")
        self.model, self.data, self.batch_size = model, data, batch_size
        self.diffusion = model.make_diffusion()

    def get_batch(self, step: int, generator: torch.Generator) -> torch.Tensor:
        return _random_index(len(self.data), self.batch_size, generator)

    def loss(self, index: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, dict[str, float]]:
        text = self.data.text
        cid = self.data.caption_ids[index]
        z_i = self.data.image_embeds[index]
        return prior_loss(self.model, self.diffusion, z_i, text.text_embeds[cid], text.token_encodings[cid], text.token_mask[cid], generator)

    def export(self, model: nn.Module, out_dir: Path) -> None:
        save_component(Path(self.export_root or out_dir) / self.name, self.name, model.config, model.state_dict())


class DecoderStage:
    """GLIDE-style decoder conditioned on z_i (dropped 10%) and the caption (dropped 50%)."""

    name = "decoder"

    def __init__(self, model: Decoder, data: TrainingSet, batch_size: int, diffusion: DiffusionSettings, image_drop_prob: float = 0.1, text_drop_prob: float = 0.5, export_root: Path | None = None, name: str = "decoder") -> None:
        self.export_root, self.name = export_root, name
        if data.image_embeds is None or data.text is None:
            raise ValueError("the decoder trains on CLIP embeddings: call encode_training_set first")
        self.model, self.data, self.batch_size = model, data, batch_size
        self.settings = diffusion
        self.diffusion = diffusion.make()
        self.image_drop_prob, self.text_drop_prob = image_drop_prob, text_drop_prob

    def get_batch(self, step: int, generator: torch.Generator) -> torch.Tensor:
        return _random_index(len(self.data), self.batch_size, generator)

    def loss(self, index: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, dict[str, float]]:
        x0 = self.data.images_float(index, self.model.config.image_size)
        tokens = self.data.text.token_ids[self.data.caption_ids[index]]
        return decoder_loss(self, x0, self.data.image_embeds[index], tokens, generator)

    def export(self, model: nn.Module, out_dir: Path) -> None:
        save_component(Path(self.export_root or out_dir) / self.name, "decoder", model.config, model.state_dict(), extra={"diffusion": asdict(self.settings)})
