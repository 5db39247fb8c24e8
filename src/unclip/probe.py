"""Probing the CLIP latent space with PCA (unCLIP, Ramesh et al. 2022, section 3.4 and Figure 7).

Fit PCA on the CLIP image embeddings of a data split, project an image's z_i onto the
first k principal components for several k, and decode each reconstruction with the same
fixed DDIM noise: the row of images shows which properties the leading directions carry
(the paper: the first few hold the gist, later ones detail). We also report how many
components keep the relative reconstruction error of the embeddings under 1%.

The truncated reconstructions are shorter than the z_i the decoder was trained on, so they
are rescaled to the norm of the image's full z_i before decoding (unit for our CLIP; the raw
norm for Karlo's unnormalised embeddings; errors are measured before that).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

import torch

from .errors import InputError
from .manipulate import MIN_ALPHA_BAR, ImageInput, as_image_tensor, decode_latent

if TYPE_CHECKING:  # pragma: no cover
    from .pipeline import UnCLIP

DEFAULT_DIMS = (2, 4, 8, 16, 32, 64)

__all__ = ["PCA", "fit_pca", "relative_errors", "components_for_error", "embed_split", "probe_pca", "DEFAULT_DIMS"]


@dataclass
class PCA:
    """Principal components of a set of vectors.

    Attributes:
        mean: (E,) the data mean.
        components: (K, E) orthonormal rows, by decreasing variance (K = min(N, E)).
        explained_variance: (K,) variance along each component.
    """

    mean: torch.Tensor
    components: torch.Tensor
    explained_variance: torch.Tensor

    def reconstruct(self, z: torch.Tensor, k: int) -> torch.Tensor:
        """Project z (..., E) onto the first ``k`` components and map back: (..., E)."""
        if not 0 <= int(k) <= self.components.shape[0]:
            raise InputError(f"k must lie in [0, {self.components.shape[0]}] (the number of components), got {k}")
        c = self.components[: int(k)].to(z.dtype)
        mean = self.mean.to(z.dtype)
        return mean + ((z - mean) @ c.T) @ c


def fit_pca(embeds: torch.Tensor) -> PCA:
    """PCA of (N, E) vectors by an SVD of the centred data (float64)."""
    if embeds.dim() != 2 or embeds.shape[0] < 2:
        raise InputError(f"fit_pca needs (N, E) embeddings with N >= 2, got {tuple(embeds.shape)}")
    x = embeds.double()
    mean = x.mean(0)
    _, s, vh = torch.linalg.svd(x - mean, full_matrices=False)
    return PCA(mean, vh, s.pow(2) / (x.shape[0] - 1))


def relative_errors(pca: PCA, z: torch.Tensor, dims: Sequence[int]) -> torch.Tensor:
    """Mean over rows of ||z - z_k|| / ||z|| for each k in ``dims``: (len(dims),)."""
    z = z.double()
    return torch.stack([((z - pca.reconstruct(z, k)).norm(dim=-1) / z.norm(dim=-1).clamp_min(1e-12)).mean() for k in dims])


def components_for_error(pca: PCA, z: torch.Tensor, threshold: float = 0.01) -> int:
    """The fewest components whose mean relative reconstruction error of ``z`` (N, E) is below ``threshold``."""
    errs = relative_errors(pca, z, range(pca.components.shape[0] + 1))
    below = torch.nonzero(errs < threshold).flatten()
    return int(below[0]) if below.numel() else pca.components.shape[0]


@torch.no_grad()
def embed_split(pipe: "UnCLIP", data: str = "shapes", split: str = "train", n: int = 1000, seed: int = 0) -> torch.Tensor:
    """CLIP image embeddings (n, E) of the first ``n`` items of a data split (``--data`` syntax)."""
    from .data import get_dataset

    ds = get_dataset(data, split=split, size=pipe.clip.image_size, seed=seed, length=n)
    count = min(int(n), len(ds))
    out = []
    for start in range(0, count, 256):
        x = torch.stack([ds[i]["image"] for i in range(start, min(start + 256, count))])
        out.append(pipe.clip.encode_image(x.to(pipe.device)).float().cpu())
    return torch.cat(out)


@torch.no_grad()
def probe_pca(
    pipe: "UnCLIP",
    image: ImageInput,
    dims: Sequence[int] = DEFAULT_DIMS,
    *,
    pca: PCA | None = None,
    data: str = "shapes",
    split: str = "train",
    fit_n: int = 1000,
    seed: int = 0,
    steps: int = 50,
    guidance: float | None = None,
    threshold: float = 0.01,
    progress: bool = False,
) -> tuple[torch.Tensor, dict]:
    """Figure 7 for one image: decode its z_i reconstructed from the first k components, k in ``dims``.

    Returns ``(images, info)``: images (len(dims) + 1, 3, S, S), the last decoded from the
    full z_i, all from the same random x_T drawn from ``seed`` (caption dropped, guidance
    ``guidance``, default the model's); ``info`` holds ``dims``, the embedding's relative
    error per k and ``components_for_1pct`` over the fitted split (the fewest components with
    mean relative error under ``threshold``).
    """
    dims = [int(k) for k in dims]
    if not dims:
        raise InputError("dims must name at least one number of components, e.g. 2,4,8")
    size = pipe.decoder.config.image_size
    z = pipe.clip.encode_image(as_image_tensor(image, size).to(pipe.device)).float().cpu()
    if z.shape[0] != 1:
        raise InputError("probe_pca takes one image")
    split_embeds = None
    if pca is None:
        split_embeds = embed_split(pipe, data, split, fit_n, seed)
        pca = fit_pca(split_embeds)
    bad = [k for k in dims if not 0 <= k <= pca.components.shape[0]]
    if bad:
        raise InputError(f"dims {bad} are outside [0, {pca.components.shape[0]}] (the number of components)")
    zk = torch.cat([pca.reconstruct(z.double(), k).float() for k in dims] + [z])
    zk = zk / zk.norm(dim=-1, keepdim=True).clamp_min(1e-12) * z.norm()  # |z_i|: 1 for our CLIP, raw norm for Karlo
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    noise = torch.randn(1, 3, size, size, generator=gen).expand(len(zk), -1, -1, -1)
    g = pipe.defaults.decoder_guidance if guidance is None else guidance
    images = decode_latent(pipe, zk, noise, steps=steps, guidance=g, min_alpha_bar=MIN_ALPHA_BAR, progress=progress)
    info = {
        "dims": dims,
        "relative_error": [round(float(e), 5) for e in relative_errors(pca, z, dims)],
        "components_for_1pct": components_for_error(pca, split_embeds, threshold) if split_embeds is not None else None,
        "guidance": g,
        "steps": steps,
    }
    return images, info
