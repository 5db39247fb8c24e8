"""``unclip demo``: the main job. Loads a model and writes a text-to-image gallery."""

from __future__ import annotations

import time
from pathlib import Path

from ..pipeline import UnCLIP
from ..storage.imageio import tensor_to_pil
from .gallery import GallerySection, write_gallery

# Captions shown in the gallery, by what they test. Held-out pairs never occur in the
# training split of `shapes`, so they show compositional generalisation.
DEMO_CAPTIONS: dict[str, list[str]] = {
    "Seen colour-shape pairs": [
        "a red circle",
        "a blue square",
        "a yellow triangle",
        "a purple star",
        "a cyan circle",
        "a orange square",
    ],
    "Held-out pairs (never seen in training)": ["a green star", "a pink square", "a orange circle", "a cyan triangle"],
    "Two objects and relations": [
        "a red circle and a blue square",
        "a yellow star left of a green circle",
        "a purple triangle above a orange square",
    ],
    "Size, position and background": [
        "a large pink circle",
        "a small blue star",
        "a red triangle in the top left",
        "a green square on a black background",
    ],
}


def run_demo(
    model: str = "shapes",
    out: str | Path = "demo_out",
    *,
    seed: int = 0,
    n: int = 1,
    steps: int | None = 20,
    device: str = "cpu",
    manipulations: bool = False,
    size: int | None = None,
) -> Path:
    """Generate ``n`` images for every demo caption and write ``out/index.html``.

    Images are shown at ``size`` (None: the model's default output side; a larger one
    runs its upsampler stages). With ``manipulations``, the gallery also shows
    variations, interpolation, a text diff and the PCA probe (paper section 3), built
    from inverted ``shapes`` test images.
    """
    start = time.perf_counter()
    pipe = UnCLIP.load(model, device=device)
    size = pipe.resolve_size(size)
    prompts = [p for group in DEMO_CAPTIONS.values() for p in group]
    images, expanded = pipe.generate_tensors(prompts, num_images=n, seed=seed, steps=steps, size=size, progress=True)
    pil = tensor_to_pil(images)
    sections, k = [], 0
    for title, group in DEMO_CAPTIONS.items():
        count = len(group) * n
        sections.append(GallerySection(title, items=list(zip(pil[k : k + count], expanded[k : k + count]))))
        k += count
    largest = pipe.output_sizes[-1]
    if largest > size:  # show what the model's upsampler stages make of a few of the samples
        count = min(4, images.shape[0])
        upsampled = pipe.upsample_to(images[:count], largest, seed=seed, progress=True)
        note = (
            f"The first {count} samples above, taken from {size} px to {largest} px by the model's upsampler stage(s) "
            f"(`--size {largest}` shows every image this way; the README compares the stage with bicubic "
            "interpolation)."
        )
        sections.append(
            GallerySection(
                f"Upsampled to {largest} px",
                items=list(zip(tensor_to_pil(upsampled), expanded[:count])),
                description=note,
            )
        )
    if manipulations:
        from .demo_manipulate import manipulation_sections

        sections += manipulation_sections(pipe, seed=seed, steps=steps or 25)
    elapsed = time.perf_counter() - start
    stages = "".join(
        f", upsampler {st.low_res}->{st.high_res}px ({st.steps} DDIM steps)"
        for st in pipe.upsamplers
        if st.high_res <= size
    )
    footer = (
        f"model: {model}; seed {seed}; {n} images per caption, shown at {size}px; decoder "
        f"{pipe.decoder.config.image_size}px, {steps or pipe.defaults.decoder_steps} DDIM steps, guidance "
        f"{pipe.defaults.decoder_guidance}{stages}; prior {pipe.defaults.prior_steps} steps, best of "
        f"{pipe.defaults.best_of}; {elapsed:.0f} s on {device}."
    )
    return write_gallery(out, "unclip: text to image", sections, footer=footer, display_size=max(128, size))
