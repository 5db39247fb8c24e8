"""Stages that train on data too large for memory: the priors on an embedding folder, the decoder on a stream.

They follow the :class:`~unclip.train.config.Stage` protocol and compute the same losses
as the in-memory stages (``stages.py``, ``ar_stage.py``); only where a batch comes from
differs. ``get_batch`` (run outside autocast) reads batch ``step`` through
:mod:`~unclip.train.step_batches` and does every frozen-CLIP computation the batch needs;
``loss`` draws the step's noise and drop masks from the generator.

Per-token text encodings (what the priors attend to besides z_t) are computed per batch by
the frozen CLIP's text tower from the captions in the metadata, not cached: memory stays
flat whatever the number of rows, at the cost of one text-tower forward per step (small
beside a training step of the prior, and no more than the CLIP's share of a decoder step).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..data.embedding_folder import EmbeddingFolder
from ..diffusion import sample_timesteps, training_loss
from ..errors import ConfigError
from ..prior.ar_prior import COMPONENT as AR_COMPONENT
from ..prior.ar_prior import ARPrior
from ..prior.diffusion_prior import DiffusionPrior
from ..storage.checkpoint import save_component
from . import distributed
from .stages import DecoderStage, PriorStage
from .step_batches import EmbeddingSteps, StreamSteps

log = logging.getLogger(__name__)


def local_batch(batch_size: int) -> int:
    """This rank's share of the global ``batch_size`` (ConfigError when it does not split evenly)."""
    distributed.check_global_batch(batch_size)
    return batch_size // distributed.context().world_size


def _global_rows(b: int) -> int:
    """Rows of the global batch of which this rank holds ``b`` (under torchrun each rank reads its own part)."""
    return b * distributed.context().world_size


def prior_loss(
    model: DiffusionPrior,
    diffusion: Any,
    z_i: torch.Tensor,
    z_t: torch.Tensor,
    tokens: torch.Tensor,
    mask: torch.Tensor,
    generator: torch.Generator,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """``PriorStage``'s loss on rows given (this rank's): MSE between the predicted and the true
    clean ``sqrt(E) * z_i`` (unCLIP section 2.2 predicts z_i itself), caption dropped with
    ``text_drop_prob``. Draws t, the noise and the drop mask of the global batch from
    ``generator``, in that order, and keeps this rank's rows, as the in-memory stages do."""
    device = next(model.parameters()).device
    b = _global_rows(z_i.shape[0])
    t = sample_timesteps(b, diffusion.num_timesteps, generator=generator)
    noise = torch.randn((b, z_i.shape[1]), generator=generator)
    keep = torch.rand(b, generator=generator) >= model.config.text_drop_prob
    t, noise, keep = (x.to(device) for x in distributed.take_rows(t, noise, keep))
    z0 = (z_i.float() * model.scale).to(device)
    x_t = diffusion.q_sample(z0, t, noise)
    pred = model(x_t, t, z_t.float().to(device), tokens.float().to(device), mask.to(device), keep)
    loss = F.mse_loss(pred.float(), z0)
    cos = F.cosine_similarity(pred.detach().float(), z0, dim=-1).mean()
    return loss, {"cos": cos}  # 0-d tensors: the loop syncs them only at log steps


def decoder_loss(
    stage: Any, x0: torch.Tensor, z_i: torch.Tensor, tokens: torch.Tensor, generator: torch.Generator
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """``DecoderStage``'s loss on rows given (this rank's; ``stage``: its ``model``, ``diffusion``
    and drop rates): z_i dropped with ``image_drop_prob``, the caption with ``text_drop_prob``
    (unCLIP section 2.1). Draws the two drop masks, t and the noise of the global batch, in
    that order, and keeps this rank's rows."""
    model = stage.model
    device = next(model.parameters()).device
    b = _global_rows(x0.shape[0])
    image_keep = torch.rand(b, generator=generator) >= stage.image_drop_prob
    text_keep = torch.rand(b, generator=generator) >= stage.text_drop_prob
    t = sample_timesteps(b, stage.diffusion.num_timesteps, generator=generator)
    noise = torch.randn((b, *x0.shape[1:]), generator=generator)
    drawn = distributed.take_rows(image_keep, text_keep, t, noise)
    image_keep, text_keep, t, noise = (x.to(device) for x in drawn)
    x0, z_i, tokens = x0.to(device), z_i.float().to(device), tokens.to(device)
    x_t = stage.diffusion.q_sample(x0, t, noise)
    out = model(x_t, t, z_i, tokens, image_keep, text_keep)
    terms = training_loss(stage.diffusion, out.float(), x0, x_t, t, noise)
    metrics = {"mse": terms["mse"].mean().detach()}
    if "vb" in terms:
        metrics["vb"] = terms["vb"].mean().detach()
    return terms["loss"].mean(), metrics


# The stored z_t and the CLIP's own encoding of the stored caption agree to float16
# rounding (cosine ~0.9999) when the folder was made by this CLIP; another CLIP gives
# unrelated vectors. Checked on the first batch, since a released folder may carry no record.
MIN_TEXT_AGREEMENT = 0.98


class _FrozenClipUser:
    """Moves the frozen CLIP with the model and checks the folder's z_t against it once."""

    model: nn.Module
    clip: Any
    _checked = False

    def to(self, device: torch.device | str) -> None:
        self.model.to(device)
        self.clip.to(device)

    def _text(self, captions: list[str], stored_z_t: torch.Tensor) -> Any:
        with torch.no_grad():
            text = self.clip.encode_text_full(self.clip.tokenize(captions))
        if not self._checked and len(stored_z_t):
            agreement = float(F.cosine_similarity(text.embed.float().cpu(), stored_z_t.float(), dim=-1).mean())
            if agreement < MIN_TEXT_AGREEMENT:
                raise ConfigError(
                    f"the embedding folder's text embeddings do not match this CLIP's encoding of their captions "
                    f"(mean cosine {agreement:.3f}); the folder was made with another CLIP: pass that CLIP with "
                    "--clip, or re-embed with `unclip embed SRC --clip CLIP --out DIR`"
                )
            self._checked = True
        return text


class EmbeddingPriorStage(_FrozenClipUser):
    """The diffusion prior on (caption, z_t, z_i) rows of an embedding folder (``PriorStage``'s loss)."""

    name = "prior_diffusion"

    def __init__(
        self,
        model: DiffusionPrior,
        folder: EmbeddingFolder,
        clip: Any,
        batch_size: int,
        *,
        seed: int = 0,
        export_root: Path | None = None,
    ) -> None:
        self.model, self.clip, self.folder, self.batch_size = model, clip, folder, batch_size
        self.steps = EmbeddingSteps(folder, local_batch(batch_size), seed)
        self.diffusion = model.make_diffusion()
        self.export_root = export_root

    def get_batch(self, step: int, generator: torch.Generator) -> tuple[torch.Tensor, ...]:
        rows = self.steps(step)
        text = self._text(rows.captions, rows.text_embeds)
        return rows.image_embeds, rows.text_embeds, text.tokens.float(), text.mask

    def loss(self, batch: tuple[torch.Tensor, ...], generator: torch.Generator) -> tuple[torch.Tensor, dict[str, Any]]:
        return prior_loss(self.model, self.diffusion, *batch, generator)

    export = PriorStage.export


class EmbeddingARPriorStage(_FrozenClipUser):
    """The autoregressive prior on rows of an embedding folder (``ARPriorStage``'s loss); codes per batch."""

    name = AR_COMPONENT

    def __init__(
        self,
        model: ARPrior,
        folder: EmbeddingFolder,
        clip: Any,
        batch_size: int,
        *,
        seed: int = 0,
        export_root: Path | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        self.model, self.clip, self.folder, self.batch_size = model, clip, folder, batch_size
        self.steps = EmbeddingSteps(folder, local_batch(batch_size), seed)
        self.export_root, self.extra = export_root, extra

    def get_batch(self, step: int, generator: torch.Generator) -> tuple[torch.Tensor, ...]:
        rows = self.steps(step)
        text = self._text(rows.captions, rows.text_embeds)
        device = self.model.pca_mean.device
        z_t = rows.text_embeds.float().to(device)
        with torch.no_grad():  # the PCA and bucket edges are fixed buffers: the codes are data
            dot_codes, codes = self.model.encode(rows.image_embeds.float().to(device), z_t)
        return z_t, text.tokens.float(), text.mask, dot_codes, codes

    def loss(self, batch: tuple[torch.Tensor, ...], generator: torch.Generator) -> tuple[torch.Tensor, dict[str, Any]]:
        device = self.model.pca_mean.device
        z_t, tokens, mask, dot_codes, codes = batch
        keep = (torch.rand(z_t.shape[0], generator=generator) >= self.model.config.text_drop_prob).to(device)
        loss, acc = self.model.loss(z_t, tokens.to(device), mask.to(device), keep, dot_codes, codes)
        return loss, {"acc": acc}

    def export(self, model: nn.Module, out_dir: Path) -> None:
        save_component(
            Path(self.export_root or out_dir) / self.name,
            AR_COMPONENT,
            model.config,
            model.state_dict(),
            extra=self.extra,
        )


class StreamDecoderStage(_FrozenClipUser):
    """The decoder on batches streamed from any ``--data`` source (``DecoderStage``'s loss).

    z_i is looked up by key in ``folder`` when one is given (a key it lacks is encoded by the
    frozen CLIP and counted), else encoded by the frozen CLIP from the batch's images, read
    at ``clip_size`` when that is larger than the decoder's side. Captions are tokenized
    with the CLIP's tokenizer (the decoder's own text encoder reads the ids).
    """

    def __init__(
        self,
        model: nn.Module,
        steps: StreamSteps,
        clip: Any,
        settings: Any,
        *,
        folder: EmbeddingFolder | None = None,
        image_drop_prob: float = 0.1,
        text_drop_prob: float = 0.5,
        export_root: Path | None = None,
        name: str = "decoder",
    ) -> None:
        self.model, self.steps, self.clip, self.folder = model, steps, clip, folder
        self.settings, self.diffusion = settings, settings.make()
        self.image_drop_prob, self.text_drop_prob = image_drop_prob, text_drop_prob
        self.export_root, self.name = export_root, name
        self.batch_size = _global_rows(steps.batch_size)  # the loop checks the global batch
        self.lookups = {"found": 0, "encoded": 0}

    def _image_embeds(self, images: torch.Tensor, keys: list[str]) -> torch.Tensor:
        if not getattr(self.model.config, "use_image_embed", True):  # the text-only baseline ignores z_i
            return torch.zeros(len(keys), self.clip.embed_dim)
        if self.folder is None:
            self.lookups["encoded"] += len(keys)
            return self.clip.encode_image(images).float().cpu()
        z_i, found = self.folder.lookup_image_embeds(keys)
        if not bool(found.any()) and self.lookups["found"] == 0:
            raise ConfigError(
                f"none of the keys of a batch ({keys[0]!r}, ...) is in the embedding folder {self.folder.root}; "
                "was it made from this --data (`unclip embed DATA --out DIR`)?"
            )
        missing = ~found
        if bool(missing.any()):
            if self.lookups["encoded"] == 0:
                log.warning(
                    "%d key(s) of a batch are not in %s; encoding their images with the frozen CLIP",
                    int(missing.sum()),
                    self.folder.root,
                )
            z_i[missing] = self.clip.encode_image(images[missing]).float().cpu()
        self.lookups["found"] += int(found.sum())
        self.lookups["encoded"] += int(missing.sum())
        return z_i

    def get_batch(self, step: int, generator: torch.Generator) -> tuple[torch.Tensor, ...]:
        batch = self.steps(step)
        z_i = self._image_embeds(batch.images, batch.keys)
        size = self.model.config.image_size
        x0 = batch.images
        if x0.shape[-1] != size:
            x0 = F.interpolate(x0, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        return x0, z_i, self.clip.tokenize(batch.captions)

    def loss(self, batch: tuple[torch.Tensor, ...], generator: torch.Generator) -> tuple[torch.Tensor, dict[str, Any]]:
        return decoder_loss(self, *batch, generator)

    export = DecoderStage.export

    def describe(self) -> dict[str, Any]:
        """For the run summary: the source's facts and skip counts, and where z_i came from."""
        return {**self.steps.describe(), "image_embeds": dict(self.lookups)}
