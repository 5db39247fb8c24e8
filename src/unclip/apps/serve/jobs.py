"""The work behind each route and tab: checked parameters in, images and a manifest out.

One function per job, each a thin call of the public pipeline API (``UnCLIP.generate``,
``invert``, ``vary``, ``interpolate``, ``text_diff``) with parameters that
:mod:`unclip.apps.serve.schemas` has already checked. The JSON API and the Gradio UI
both run these on a model's worker pool, so they share the queue and the limits.

A :class:`JobResult`'s manifest follows the command line's (DESIGN.md section 4: the
command, model and settings, and one entry per image with its ``file`` name), so a
download from the app reads like the output of the matching ``unclip`` command. Bipartite
latents (for jobs that invert an image) are the safetensors files ``unclip invert`` writes,
labelled with the model's served name, never its path on the server.
"""

from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ...manipulate import BipartiteLatent, as_image_tensor

JOBS = ("generate", "vary", "interpolate", "textdiff", "invert")


@dataclass
class JobResult:
    """What one job produced: ``images`` with one manifest entry each, and the run's settings.

    ``reconstruction`` is the eta-0 decode of an inverted upload (variations, inversion);
    ``latents`` maps a label to the bytes of a bipartite-latent safetensors file.
    """

    command: str
    model: str
    images: list[Image.Image]
    entries: list[dict[str, Any]]
    settings: dict[str, Any]
    reconstruction: Image.Image | None = None
    latents: dict[str, bytes] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)

    def manifest(self) -> dict[str, Any]:
        """The JSON manifest: command, model, settings, extra facts and ``images`` with file names."""
        width = max(3, len(str(max(len(self.images) - 1, 0))))
        images = [{"file": f"{k:0{width}d}.png", **entry} for k, entry in enumerate(self.entries)]
        return {"command": self.command, "model": self.model, "settings": self.settings, **self.info, "images": images}


def latent_bytes(latent: BipartiteLatent, model: str) -> bytes:
    """The bytes of the safetensors file ``latent.save`` writes, labelled with the served model name."""
    latent.model = model
    with tempfile.TemporaryDirectory(prefix="unclip-serve-") as tmp:
        path = Path(tmp) / "latent.safetensors"
        latent.save(path)
        return path.read_bytes()


def psnr_db(reconstruction: Image.Image, source: Image.Image) -> float:
    """PSNR in dB of a reconstruction against its source, centre-cropped and resized to the
    reconstruction's side as the manipulations see it (as ``unclip invert --reconstruct`` reports it)."""
    side = reconstruction.size[0]
    x, r = as_image_tensor(source, side), as_image_tensor(reconstruction, side)
    mse = float(((r - x) / 2).pow(2).mean())
    return round(10.0 * math.log10(1.0 / max(mse, 1e-12)), 2)


def run_generate(
    pipe: Any,
    model: str,
    *,
    prompts: list[str],
    num_images: int,
    seed: int,
    prior: str,
    size: int | None,
    steps: int,
    prior_steps: int,
    decoder_guidance: float | None,
    prior_guidance: float | None,
) -> JobResult:
    """Text to image: ``num_images`` per prompt, one seed for the whole request (as ``unclip generate``)."""
    images = pipe.generate(
        prompts,
        num_images=num_images,
        seed=seed,
        prior=prior,
        size=size,
        steps=steps,
        prior_steps=prior_steps,
        decoder_guidance=decoder_guidance,
        prior_guidance=prior_guidance,
    )
    entries = [{"prompt": p, "seed": seed, "index": k} for p in prompts for k in range(num_images)]
    settings = {
        "prior": prior,
        "size": images[0].size[0],
        "steps": steps,
        "prior_steps": prior_steps,
        "num_images": num_images,
        "seed": seed,
        "decoder_guidance": decoder_guidance,
        "prior_guidance": prior_guidance,
    }
    return JobResult("generate", model, images, entries, settings)


def run_invert(pipe: Any, model: str, *, image: Image.Image, steps: int, guidance: float) -> JobResult:
    """Bipartite latent of an upload (section 3), through the upsampler stages to the model's
    default side, and its eta-0 reconstruction with the PSNR against the input."""
    latent = pipe.invert(image, size=pipe.resolve_size(None), steps=steps, guidance=guidance)
    rec = pipe.vary(latent, eta=0.0, n=1)[0]
    psnr = psnr_db(rec, image)
    settings = {"steps": steps, "guidance": guidance, "size": rec.size[0]}
    return JobResult(
        "invert",
        model,
        [rec],
        [{"source": "upload", "psnr_db": psnr}],
        settings,
        reconstruction=rec,
        latents={"latent": latent_bytes(latent, model)},
        info={"psnr_db": psnr},
    )


def run_vary(
    pipe: Any,
    model: str,
    *,
    image: Image.Image,
    eta: float,
    num_images: int,
    seed: int,
    steps: int,
    guidance: float,
    size: int | None,
) -> JobResult:
    """Variations (section 3.1): invert once (through the stages up to ``size``), then decode at
    eta 0 (the reconstruction) and ``num_images`` times at ``eta``."""
    latent = pipe.invert(image, size=pipe.resolve_size(size), steps=steps, guidance=guidance)
    rec = pipe.vary(latent, eta=0.0, n=1, seed=seed, size=size)[0]
    images = pipe.vary(latent, eta=eta, n=num_images, seed=seed, size=size)
    entries = [{"source": "upload", "eta": eta, "seed": seed, "index": k} for k in range(len(images))]
    settings = {
        "eta": eta,
        "num_images": num_images,
        "seed": seed,
        "steps": steps,
        "guidance": guidance,
        "size": images[0].size[0],
    }
    return JobResult(
        "vary", model, images, entries, settings, reconstruction=rec, latents={"latent": latent_bytes(latent, model)}
    )


def run_interpolate(
    pipe: Any,
    model: str,
    *,
    image_a: Image.Image,
    image_b: Image.Image,
    frames: int,
    noise: str,
    seed: int,
    steps: int,
    guidance: float,
    size: int | None,
) -> JobResult:
    """Interpolation (section 3.2). With ``noise="slerp"`` both uploads are inverted and their latents offered too."""
    latents: dict[str, bytes] = {}
    if noise == "slerp":
        la, lb = (
            pipe.invert(image_a, steps=steps, guidance=guidance),
            pipe.invert(image_b, steps=steps, guidance=guidance),
        )
        images = pipe.interpolate(la, lb, frames=frames, noise=noise, seed=seed, size=size)
        latents = {"latent_a": latent_bytes(la, model), "latent_b": latent_bytes(lb, model)}
    else:
        images = pipe.interpolate(
            image_a, image_b, frames=frames, noise=noise, seed=seed, steps=steps, guidance=guidance, size=size
        )
    thetas = np.linspace(0.0, 1.0, frames)
    entries = [
        {"theta": round(float(t), 6), "sources": ["upload a", "upload b"], "noise": noise, "seed": seed} for t in thetas
    ]
    settings = {
        "frames": frames,
        "noise": noise,
        "seed": seed,
        "steps": steps,
        "guidance": guidance,
        "size": images[0].size[0],
    }
    return JobResult("interpolate", model, images, entries, settings, latents=latents)


def run_textdiff(
    pipe: Any,
    model: str,
    *,
    image: Image.Image,
    from_text: str,
    to_text: str,
    max_theta: float,
    frames: int,
    steps: int,
    guidance: float,
    size: int | None,
) -> JobResult:
    """Text diff (section 3.3): frames from theta 0 (the reconstruction) to ``max_theta`` towards ``to_text``."""
    latent = pipe.invert(image, steps=steps, guidance=guidance)
    images = pipe.text_diff(latent, from_text, to_text, max_theta=max_theta, frames=frames, size=size)
    thetas = np.linspace(0.0, max_theta, frames)
    entries = [{"theta": round(float(t), 6), "source": "upload", "prompt": to_text, "from": from_text} for t in thetas]
    settings = {
        "from_text": from_text,
        "to_text": to_text,
        "max_theta": max_theta,
        "frames": frames,
        "steps": steps,
        "guidance": guidance,
        "size": images[0].size[0],
    }
    return JobResult("textdiff", model, images, entries, settings, latents={"latent": latent_bytes(latent, model)})


RUNNERS = {
    "generate": run_generate,
    "vary": run_vary,
    "interpolate": run_interpolate,
    "textdiff": run_textdiff,
    "invert": run_invert,
}
