"""Probing the CLIP latent space with PCA (unCLIP section 3.4 and Figure 7).

Fit a PCA (:class:`unclip.prior.pca.PCA`, the one the AR prior uses) on the CLIP image
embeddings of a data split, rebuild an image's z_i from its first k principal components
for several k, and decode each with the same fixed DDIM noise: the row of images shows
which properties the leading directions carry (the paper: the first few hold the gist,
later ones detail). The number of components that keeps the error under 1% follows the
PCA's own definition (relative mean squared error, :meth:`PCA.num_components_for`).

Truncated embeddings are shorter than the z_i the decoder was trained on, so they are
rescaled to the norm of the image's full z_i before decoding (unit for our CLIP; the raw
norm for Karlo's unnormalised embeddings; errors are measured before that).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import torch

from ..errors import InputError
from ..prior.pca import PCA
from .edits import decode
from .invert import ImageInput, as_image_tensor
from .latent import MIN_ALPHA_BAR, BipartiteLatent

if TYPE_CHECKING:  # pragma: no cover
    from ..pipeline import UnCLIP

DEFAULT_DIMS = (2, 4, 8, 16, 32, 64)

__all__ = ["DEFAULT_DIMS", "embed_split", "image_relative_errors", "pca_probe_latent", "probe_pca"]


def image_relative_errors(pca: PCA, z: torch.Tensor, dims: Sequence[int]) -> list[float]:
    """||z - z_k|| / ||z|| of one embedding z (1, E) rebuilt from k components, for each k in ``dims``."""
    z = z.double()
    return [float((z - pca.truncate(z, k)).norm() / z.norm().clamp_min(1e-12)) for k in dims]


def pca_probe_latent(
    pca: PCA, z: torch.Tensor, dims: Sequence[int], noise: torch.Tensor, *, steps: int, guidance: float
) -> BipartiteLatent:
    """z (1, E) rebuilt from k components for each k in ``dims``, then z itself, all rescaled to |z| and
    decoded from the same ``noise`` (1, 3, S, S)."""
    zk = torch.cat([pca.truncate(z.double(), k).float() for k in dims] + [z.float()])
    zk = zk / zk.norm(dim=-1, keepdim=True).clamp_min(1e-12) * z.float().norm()  # |z_i|: 1 for our CLIP, raw for Karlo
    return BipartiteLatent(zk, noise.expand(len(zk), -1, -1, -1), steps, guidance, None, "", MIN_ALPHA_BAR)


@torch.no_grad()
def embed_split(
    pipe: "UnCLIP", data: str = "shapes", split: str = "train", n: int = 1000, seed: int = 0
) -> torch.Tensor:
    """CLIP image embeddings (n, E) of the first ``n`` items of a data split (``--data`` syntax)."""
    from ..data import get_dataset

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
    """Figure 7 for one image: decode its z_i rebuilt from the first k components, k in ``dims``.

    Returns ``(images, info)``: images (len(dims) + 1, 3, S, S), the last decoded from the
    full z_i, all from the same random x_T drawn from ``seed`` (caption dropped, guidance
    ``guidance``, default the model's); ``info`` holds ``dims``, the image embedding's
    relative error per k and ``components_for_1pct`` (the fewest components whose relative
    mean squared error over the fitted embeddings is under ``threshold``).
    """
    dims = [int(k) for k in dims]
    if not dims:
        raise InputError("dims must name at least one number of components, e.g. 2,4,8")
    size = pipe.decoder.config.image_size
    z = pipe.clip.encode_image(as_image_tensor(image, size).to(pipe.device)).float().cpu()
    if z.shape[0] != 1:
        raise InputError("probe_pca takes one image")
    if pca is None:
        pca = PCA.fit(embed_split(pipe, data, split, fit_n, seed))
    bad = [k for k in dims if not 0 <= k <= pca.dim]
    if bad:
        raise InputError(f"dims {bad} are outside [0, {pca.dim}] (the number of components)")
    noise = torch.randn(1, 3, size, size, generator=torch.Generator(device="cpu").manual_seed(int(seed)))
    g = pipe.defaults.decoder_guidance if guidance is None else guidance
    images = decode(pipe, pca_probe_latent(pca, z, dims, noise, steps=steps, guidance=g), progress=progress)
    info = {
        "dims": dims,
        "relative_error": [round(e, 5) for e in image_relative_errors(pca, z, dims)],
        "components_for_1pct": pca.num_components_for(threshold),
        "guidance": g,
        "steps": steps,
    }
    return images, info
