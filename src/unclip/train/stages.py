"""Batch-to-loss functions for each stage of unCLIP (the loop in ``loop.py`` knows none).

Each stage holds its trainable ``model``, draws a batch from a :class:`TrainingSet` with the
step's generator (so a resumed run replays the same batches), computes its loss, and
exports its inference component (EMA weights) into ``out_dir/<name>/``.

``batch_size`` is the global batch. ``get_batch`` draws all of it, and ``loss`` draws the
randomness of all of it (timesteps, noise, dropped conditions) before keeping this rank's
rows with :func:`~unclip.train.distributed.take_rows`, so any number of ranks trains on
the same samples with the same noise (see ``distributed.py``).
"""

from __future__ import annotations

import copy
from dataclasses import asdict
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..clip.frozen import FrozenCLIP
from ..clip.loss import contrastive_loss
from ..clip.model import CLIP
from ..clip.tokenizer import Tokenizer
from ..data.embeddings import TrainingSet
from ..decoder.model import Decoder
from ..diffusion import DiffusionSettings, sample_timesteps, training_loss
from ..prior.diffusion_prior import DiffusionPrior
from ..storage.checkpoint import save_component
from .distributed import gather_rows, take_rows


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def _random_index(n: int, batch: int, generator: torch.Generator) -> torch.Tensor:
    return torch.randint(0, n, (batch,), generator=generator)


class CLIPStage:
    """Contrastive training of our own CLIP on the images and captions of a training set."""

    name = "clip"

    def __init__(
        self, model: CLIP, tokenizer: Tokenizer, data: TrainingSet, batch_size: int, export_root: Path | None = None
    ) -> None:
        self.export_root = export_root
        self.model, self.tokenizer, self.data, self.batch_size = model, tokenizer, data, batch_size
        self.caption_tokens = tokenizer.encode(data.captions, model.config.context_length)

    def get_batch(self, step: int, generator: torch.Generator) -> torch.Tensor:
        return _random_index(len(self.data), self.batch_size, generator)

    def loss(self, index: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, dict[str, float]]:
        device = _device(self.model)
        caption_ids = self.data.caption_ids[index]
        local = take_rows(index)
        images = self.data.images_float(local, self.model.config.image_size).to(device)
        tokens = self.caption_tokens[self.data.caption_ids[local]].to(device)
        image_embed, text_embed, logit_scale = self.model(images, tokens)
        # Negatives are the whole global batch: gather every rank's embeddings (with gradients).
        image_embed, text_embed = gather_rows(image_embed), gather_rows(text_embed)
        loss = contrastive_loss(image_embed, text_embed, logit_scale, caption_ids=caption_ids.to(device))
        return loss, {"logit_scale": float(logit_scale.detach())}

    def export(self, model: nn.Module, out_dir: Path) -> None:
        FrozenCLIP.from_model(copy.deepcopy(model), self.tokenizer).save(Path(self.export_root or out_dir) / self.name)


class PriorStage:
    """Diffusion prior: MSE between the predicted and the true clean image embedding."""

    name = "prior_diffusion"

    def __init__(
        self, model: DiffusionPrior, data: TrainingSet, batch_size: int, export_root: Path | None = None
    ) -> None:
        self.export_root = export_root
        if data.image_embeds is None or data.text is None:
            raise ValueError("the prior trains on CLIP embeddings: call encode_training_set first")
        self.model, self.data, self.batch_size = model, data, batch_size
        self.diffusion = model.make_diffusion()

    def get_batch(self, step: int, generator: torch.Generator) -> torch.Tensor:
        return _random_index(len(self.data), self.batch_size, generator)

    def loss(self, index: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, dict[str, float]]:
        device = _device(self.model)
        text = self.data.text
        b = index.shape[0]
        t = sample_timesteps(b, self.diffusion.num_timesteps, generator=generator)
        noise = torch.randn((b, self.data.image_embeds.shape[1]), generator=generator)
        keep = torch.rand(b, generator=generator) >= self.model.config.text_drop_prob
        index, t, noise, keep = take_rows(index, t, noise, keep)
        t, noise, keep = t.to(device), noise.to(device), keep.to(device)
        cid = self.data.caption_ids[index]
        z0 = (self.data.image_embeds[index].float() * self.model.scale).to(device)
        x_t = self.diffusion.q_sample(z0, t, noise)
        pred = self.model(
            x_t,
            t,
            text.text_embeds[cid].float().to(device),
            text.token_encodings[cid].float().to(device),
            text.token_mask[cid].to(device),
            keep,
        )
        loss = F.mse_loss(pred.float(), z0)
        cos = F.cosine_similarity(pred.detach().float(), z0, dim=-1).mean()
        return loss, {"cos": cos}  # 0-d tensors: the loop syncs them only at log steps

    def export(self, model: nn.Module, out_dir: Path) -> None:
        save_component(Path(self.export_root or out_dir) / self.name, self.name, model.config, model.state_dict())


class DecoderStage:
    """GLIDE-style decoder conditioned on z_i (dropped 10%) and the caption (dropped 50%)."""

    name = "decoder"

    def __init__(
        self,
        model: Decoder,
        data: TrainingSet,
        batch_size: int,
        diffusion: DiffusionSettings,
        image_drop_prob: float = 0.1,
        text_drop_prob: float = 0.5,
        export_root: Path | None = None,
        name: str = "decoder",
    ) -> None:
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
        device = _device(self.model)
        b, size = index.shape[0], self.model.config.image_size
        image_keep = torch.rand(b, generator=generator) >= self.image_drop_prob
        text_keep = torch.rand(b, generator=generator) >= self.text_drop_prob
        t = sample_timesteps(b, self.diffusion.num_timesteps, generator=generator)
        noise = torch.randn((b, 3, size, size), generator=generator)
        index, image_keep, text_keep, t, noise = take_rows(index, image_keep, text_keep, t, noise)
        image_keep, text_keep, t, noise = image_keep.to(device), text_keep.to(device), t.to(device), noise.to(device)
        x0 = self.data.images_float(index, size).to(device)
        z_i = self.data.image_embeds[index].float().to(device)
        tokens = self.data.text.token_ids[self.data.caption_ids[index]].to(device)
        x_t = self.diffusion.q_sample(x0, t, noise)
        out = self.model(x_t, t, z_i, tokens, image_keep, text_keep)
        terms = training_loss(self.diffusion, out.float(), x0, x_t, t, noise)
        metrics = {"mse": terms["mse"].mean().detach()}
        if "vb" in terms:
            metrics["vb"] = terms["vb"].mean().detach()
        return terms["loss"].mean(), metrics

    def export(self, model: nn.Module, out_dir: Path) -> None:
        save_component(
            Path(self.export_root or out_dir) / self.name,
            "decoder",
            model.config,
            model.state_dict(),
            extra={"diffusion": asdict(self.settings)},
        )
