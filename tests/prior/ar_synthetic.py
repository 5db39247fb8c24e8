"""Synthetic CLIP embeddings for the AR prior tests (no CLIP, tiny sizes); imported by the tests."""

import torch
import torch.nn.functional as F

from unclip.data.embeddings import TextTable, TrainingSet
from unclip.prior.ar_prior import ARPrior, ARPriorConfig
from unclip.prior.pca import PCA

E, W, L = 16, 8, 5


def synthetic_training_set(n: int = 512, num_captions: int = 8, seed: int = 0) -> TrainingSet:
    """Captions pick a direction in a 4-d subspace of R^16; images scatter around it."""
    g = torch.Generator().manual_seed(seed)
    basis, _ = torch.linalg.qr(torch.randn(E, 4, generator=g))
    centres = F.normalize(torch.randn(num_captions, 4, generator=g), dim=-1)
    cid = torch.randint(0, num_captions, (n,), generator=g)
    local = centres[cid] + 0.15 * torch.randn(n, 4, generator=g)
    image = F.normalize(local @ basis.T + 0.01 * torch.randn(n, E, generator=g), dim=-1)
    text_embeds = F.normalize(centres @ basis.T + 0.3 * torch.randn(num_captions, E, generator=g), dim=-1)
    enc = torch.randn(num_captions, L, W, generator=g)
    mask = torch.ones(num_captions, L, dtype=torch.bool)
    mask[::2, 3:] = False  # some padded captions
    captions = [f"caption {i}" for i in range(num_captions)]
    table = TextTable(captions, torch.zeros(num_captions, L, dtype=torch.long), text_embeds, enc.half(), mask)
    images = torch.zeros(n, 3, 2, 2, dtype=torch.uint8)
    return TrainingSet(images=images, caption_ids=cid, captions=captions, image_embeds=image, text=table)


def tiny_prior(data: TrainingSet, num_components: int = 6, seed: int = 0, **kwargs) -> ARPrior:
    torch.manual_seed(seed)
    cfg = dict(
        embed_dim=E,
        text_width=W,
        context_length=L,
        num_components=num_components,
        num_buckets=32,
        num_dot_buckets=8,
        width=32,
        depth=2,
        heads=2,
    )
    cfg.update(kwargs)
    model = ARPrior(ARPriorConfig(**cfg))
    model.fit_codebook(data.image_embeds, data.text.text_embeds[data.caption_ids], PCA.fit(data.image_embeds))
    return model


def text_batch(data: TrainingSet, ids):
    ids = torch.as_tensor(ids)
    t = data.text
    return t.text_embeds[ids].float(), t.token_encodings[ids].float(), t.token_mask[ids]
