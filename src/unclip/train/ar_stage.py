"""Training the autoregressive prior: its stage (batch -> loss) and its set-up (PCA and code book).

The stage follows the :class:`unclip.train.loop.Stage` protocol. Its targets are fixed
before training: the PCA and the bucket edges are fitted once on the training set's
cached CLIP image embeddings (they are buffers of the model, so they are saved with the
weights and restored on resume), and every training embedding is encoded once into its
dot-product code and its K coefficient codes.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..data.embeddings import TrainingSet
from ..prior.ar_prior import COMPONENT, ARPrior, ARPriorConfig
from ..prior.pca import PCA
from ..storage.checkpoint import save_component
from .distributed import take_rows

log = logging.getLogger(__name__)


class ARPriorStage:
    """Cross-entropy of the AR prior on the codes of cached CLIP image embeddings."""

    name = COMPONENT

    def __init__(
        self,
        model: ARPrior,
        data: TrainingSet,
        batch_size: int,
        export_root: Path | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        if data.image_embeds is None or data.text is None:
            raise ValueError("the AR prior trains on CLIP embeddings: call encode_training_set first")
        self.model, self.data, self.batch_size = model, data, batch_size
        self.export_root, self.extra = export_root, extra
        text_embeds = data.text.text_embeds[data.caption_ids].float()
        self.dot_codes, self.codes = model.encode(
            data.image_embeds.float().to(model.pca_mean.device), text_embeds.to(model.pca_mean.device)
        )
        self.dot_codes, self.codes = self.dot_codes.cpu(), self.codes.cpu()

    def get_batch(self, step: int, generator: torch.Generator) -> torch.Tensor:
        return torch.randint(0, len(self.data), (self.batch_size,), generator=generator)

    def loss(self, index: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, dict[str, Any]]:
        device = self.model.pca_mean.device
        text = self.data.text
        keep = torch.rand(index.shape[0], generator=generator) >= self.model.config.text_drop_prob
        index, keep = take_rows(index, keep)  # the global batch's draws, then this rank's rows
        keep = keep.to(device)
        cid = self.data.caption_ids[index]
        loss, acc = self.model.loss(
            text.text_embeds[cid].float().to(device),
            text.token_encodings[cid].float().to(device),
            text.token_mask[cid].to(device),
            keep,
            self.dot_codes[index].to(device),
            self.codes[index].to(device),
        )
        return loss, {"acc": acc}

    def export(self, model: nn.Module, out_dir: Path) -> None:
        save_component(
            Path(self.export_root or out_dir) / self.name, COMPONENT, model.config, model.state_dict(), extra=self.extra
        )


def build_ar_prior(
    data: TrainingSet,
    *,
    embed_dim: int,
    text_width: int,
    context_length: int,
    model_kwargs: dict[str, Any],
    rel_error: float = 0.01,
    max_components: int | None = None,
) -> tuple[ARPrior, PCA, dict[str, Any]]:
    """Fit the PCA on ``data``'s image embeddings, build the prior and fit its code book.

    Returns the model, the full PCA and a JSON-able summary (components kept, relative error).
    """
    pca = PCA.fit(data.image_embeds.float())
    k_needed = pca.num_components_for(rel_error)
    k = min(k_needed, max_components) if max_components else k_needed
    config = ARPriorConfig(
        **{
            **model_kwargs,
            "embed_dim": embed_dim,
            "text_width": text_width,
            "context_length": context_length,
            "num_components": k,
        }
    )
    model = ARPrior(config)
    text_embeds = data.text.text_embeds[data.caption_ids].float()
    model.fit_codebook(data.image_embeds.float(), text_embeds, pca)
    errs = pca.relative_errors()
    info = {
        "rel_error_target": rel_error,
        "num_components_for_target": k_needed,
        "num_components": k,
        "relative_mse": float(errs[k]),
        "embed_dim": pca.dim,
    }
    return model, pca, info
