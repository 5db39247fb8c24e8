"""Gallery sections for the manipulations (unCLIP section 3), built from ``shapes`` test images.

:func:`manipulation_sections` inverts two single-object test images once and then decodes
every manipulation in as few batched DDIM runs as possible (one with eta 1 for the
variations, one with eta 0 for everything else), so the whole set costs about three
sampler runs at ``steps`` steps.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import torch

from ..data.shapes import render_batch
from ..manipulate import (
    BipartiteLatent,
    decode,
    embed_split,
    interpolation_latent,
    invert,
    pca_probe_latent,
    text_diff_latent,
    theta_schedule,
)
from ..prior.pca import PCA
from ..storage.imageio import tensor_to_pil
from .gallery import GallerySection

if TYPE_CHECKING:  # pragma: no cover
    from ..pipeline import UnCLIP

_OTHER_COLOUR = {"blue": "red"}  # text-diff target colour: blue, or red for a blue object


def _single_object_images(size: int, count: int, seed: int) -> tuple[torch.Tensor, list[dict]]:
    """The first ``count`` single-object test scenes with distinct colours, from index ``seed * 50``."""
    x, _, attrs = render_batch("test", seed * 50, 200, size=size)
    picked, seen = [], set()
    for i, a in enumerate(attrs):
        objs = a["objects"]
        if len(objs) == 1 and objs[0]["color"] not in seen and objs[0]["size"] != "small":
            picked.append(i)
            seen.add(objs[0]["color"])
            if len(picked) == count:
                break
    return x[picked], [attrs[i]["objects"][0] for i in picked]


@torch.no_grad()
def manipulation_sections(
    pipe: "UnCLIP",
    seed: int = 0,
    *,
    steps: int = 25,
    variations: int = 4,
    frames: int = 5,
    pca_dims: tuple[int, ...] = (2, 8, 32),
    pca_fit_n: int = 512,
) -> list[GallerySection]:
    """Sections for variations, interpolation, text diff and the PCA probe (paper Figures 3, 4, 5, 7).

    All decoding uses the caption-dropped decoder without guidance (the inversion's
    conditioning, so eta 0 reconstructs) and ``steps`` DDIM steps; fresh noise comes from ``seed``.
    """
    start = time.perf_counter()
    size = pipe.decoder.config.image_size
    x, objs = _single_object_images(size, 2, seed)
    lat = invert(pipe, x, steps=steps, refine=1)
    gen = torch.Generator(device="cpu").manual_seed(int(seed))

    # eta 0: interpolation (slerp noise), text diff (fixed inverted noise), PCA (fixed random noise)
    thetas = theta_schedule(frames).float()
    src = f"a {objs[0]['color']} {objs[0]['shape']}"
    dst = f"a {_OTHER_COLOUR.get(objs[0]['color'], 'blue')} {objs[0]['shape']}"
    z_t = pipe.clip.encode_text([dst, src]).float().cpu()
    td_thetas = theta_schedule(frames, 0.5).float()
    pca = PCA.fit(embed_split(pipe, "shapes", "train", pca_fit_n, seed))
    n_pca = torch.randn(1, 3, size, size, generator=gen)
    za = lat.image_embed[:1].cpu()
    batch = [
        lat.to("cpu"),
        interpolation_latent(lat[0], lat[1], thetas),
        text_diff_latent(lat[0], z_t[0], z_t[1], td_thetas),
        pca_probe_latent(pca, za, pca_dims, n_pca, steps=lat.steps, guidance=lat.guidance),
    ]
    out = tensor_to_pil(decode(pipe, BipartiteLatent.cat(batch), eta=0.0))
    recon, out = out[:2], out[2:]
    interp, out = out[:frames], out[frames:]
    td, pca_imgs = out[:frames], out[frames:]
    # eta 1: variations of image A
    var = tensor_to_pil(decode(pipe, lat[0].repeat_each(variations), eta=1.0, generator=gen))
    originals = tensor_to_pil(x)
    k1 = pca.num_components_for(0.01)
    secs = time.perf_counter() - start
    note = f"{size} px decoder, {steps} DDIM steps, no guidance, caption dropped; inversion with 1 refinement per step."
    return [
        GallerySection(
            "Variations (eta 1 from the inverted latent)",
            f"Input, its eta-0 reconstruction, then {variations} variations: z_i keeps colour and shape, the redrawn "
            f"noise moves and resizes the object. {note}",
            [(originals[0], "input"), (recon[0], "reconstruction (eta 0)")]
            + [(im, f"variation {k + 1}") for k, im in enumerate(var)],
        ),
        GallerySection(
            "Interpolation (slerp of z_i and of x_T)",
            "The end frames reconstruct the two inputs.",
            [(originals[0], "input A")]
            + [(im, f"theta {t:.2f}") for im, t in zip(interp, thetas.tolist())]
            + [(originals[1], "input B")],
        ),
        GallerySection(
            f"Text diff: '{src}' to '{dst}'",
            "z_theta = slerp(z_i, norm(z_t - z_t0), theta) decoded with the inverted x_T fixed; theta 0 is the "
            "reconstruction.",
            [(originals[0], "input")] + [(im, f"theta {t:.3f}") for im, t in zip(td, td_thetas.tolist())],
        ),
        GallerySection(
            "PCA probe of the CLIP image embedding (Figure 7)",
            f"z_i rebuilt from its first k principal components (PCA of {pca_fit_n} training embeddings), decoded "
            f"from one fixed noise; {k1} components keep the embeddings' mean relative error under 1%. Built in "
            f"{secs:.0f} s.",
            [(im, f"{k} components") for im, k in zip(pca_imgs, list(pca_dims))] + [(pca_imgs[-1], "full z_i")],
        ),
    ]
