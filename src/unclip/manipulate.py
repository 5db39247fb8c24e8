"""Image manipulations through the bipartite latent (z_i, x_T) (unCLIP, Ramesh et al. 2022, section 3).

An image x is described by two latents: its CLIP image embedding z_i (what the image shows)
and the noise x_T that deterministic DDIM under the decoder, conditioned on z_i, maps to x
(everything else). :func:`invert` computes both; decoding them back with DDIM at eta 0
reconstructs x (:func:`reconstruct`), and changing one of them manipulates it:

* variations (section 3.1, :func:`vary`): keep (z_i, x_T) and sample with eta > 0, so
  detail not held in z_i is redrawn, more as eta grows;
* interpolations (section 3.2, :func:`interpolate`): z_theta = slerp(z_i1, z_i2, theta),
  with x_T either the slerp of the two inverted noises (the endpoints then reconstruct the
  inputs) or one fixed random x_T for every frame;
* text diffs (section 3.3, :func:`text_diff`): z_d = norm(z_t - z_t0) from a target
  caption and a caption of the current image, z_theta = slerp(z_i, z_d, theta) for theta
  from 0 to a maximum, decoded with the inverted x_T held fixed.

Conditioning and guidance. DDIM inversion runs the sampler's deterministic update
backwards, so it is exact only when sampling uses the same model function as inversion:
the same z_i, caption and guidance scale. Every function here therefore takes one
``guidance`` (default 1.0: no classifier-free guidance, the plain conditional decoder,
which inverts best; with guidance > 1 the guided eps field is less smooth and the round
trip loses a few dB) and uses it for both inversion and decoding, and the latent records
the steps and guidance it was inverted with. The caption of an arbitrary input image is
unknown, so by default the decoder's caption is *dropped* (``text_keep=False``: its text
context is masked and a learned null vector replaces the pooled text state). The decoder
was trained with the caption dropped half the time, so this is an in-distribution
condition, unlike an empty caption ``""`` (which tokenizes to just the start and end
tokens, never seen in training). Pass ``caption=`` to condition on a caption instead.
Classifier-free guidance then contrasts z_i against the null embedding.

Noise levels. The cosine schedule ends at alpha-bar ~ 2e-9 (t = T - 1). A DDIM step down
from there divides by sqrt(alpha-bar) ~ 5e-5, so any mismatch between the eps the inversion
used and the eps the sampler sees is amplified ~20,000 times: inverting to T - 1
reconstructs nothing (measured: 5 dB PSNR on the shipped model). The manipulations
therefore run DDIM over evenly spaced timesteps from 0 to the last timestep with alpha-bar
>= ``MIN_ALPHA_BAR`` (2e-3: x_T keeps 4.5 % of the image's amplitude, 95.5 % noise; the
paper's own schedules stop at a similar level), see :func:`manipulation_diffusion`.

Images may be PIL images, tensors (B, 3, H, W) or (3, H, W) in [-1, 1], or (where a latent
is enough) a :class:`BipartiteLatent`; they are centre-cropped and resized to the
decoder's resolution. Functions return tensors (N, 3, S, S) in [-1, 1]; turn them into PIL
images with :func:`unclip.imageio.tensor_to_pil`.
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence, Union

import torch
import torch.nn.functional as F
from PIL import Image

from .checkpoint import save_tensors
from .diffusion import GaussianDiffusion, bind, classifier_free_guidance, ddim_invert, ddim_sample
from .errors import CheckpointError, InputError
from .imageio import pil_to_tensor

if TYPE_CHECKING:  # pragma: no cover
    from .pipeline import UnCLIP

log = logging.getLogger(__name__)

LATENT_FORMAT = "unclip-bipartite-latent"
LATENT_VERSION = 1
DEFAULT_STEPS = 50
DEFAULT_GUIDANCE = 1.0
# The noisiest level the manipulations use: the largest timestep whose alpha-bar is at least
# this (t = 970 of 1000 under the cosine schedule). See :func:`manipulation_diffusion`.
MIN_ALPHA_BAR = 2e-3
NOISE_PATHS = ("slerp", "fixed")

__all__ = [
    "BipartiteLatent", "slerp", "text_diff_direction", "theta_schedule", "as_image_tensor",
    "decoder_model_fn", "manipulation_diffusion", "decode_latent", "invert", "reconstruct", "vary", "interpolate", "text_diff",
]  # fmt: skip


# ----------------------------------------------------------------------------- latent


@dataclass
class BipartiteLatent:
    """The bipartite latent of a batch of images (section 3).

    Attributes:
        image_embed: (B, E) CLIP image embeddings z_i (unit norm as CLIP gives them).
        noise: (B, 3, S, S) DDIM-inverted noise x_T at the decoder's resolution S.
        steps: DDIM steps of the inversion; decode with the same number to reconstruct.
        guidance: classifier-free guidance scale of the inversion; decode with the same.
        captions: the decoder captions used, or None when the caption was dropped.
        model: the model the latent belongs to (a name or a path; informational).
        min_alpha_bar: the noise level x_T sits at (see :func:`manipulation_diffusion`).
        extra: other JSON-able facts (e.g. ``refine``).
    """

    image_embed: torch.Tensor
    noise: torch.Tensor
    steps: int = DEFAULT_STEPS
    guidance: float = DEFAULT_GUIDANCE
    captions: list[str] | None = None
    model: str = ""
    min_alpha_bar: float = MIN_ALPHA_BAR
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.image_embed.dim() != 2 or self.noise.dim() != 4 or self.image_embed.shape[0] != self.noise.shape[0]:
            raise InputError(f"a BipartiteLatent needs image_embed (B, E) and noise (B, 3, S, S) with the same B, got {tuple(self.image_embed.shape)} and {tuple(self.noise.shape)}")
        if self.captions is not None and len(self.captions) != self.image_embed.shape[0]:
            raise InputError(f"a BipartiteLatent of batch {self.image_embed.shape[0]} got {len(self.captions)} captions")

    def __len__(self) -> int:
        return self.image_embed.shape[0]

    def __getitem__(self, index: int | slice) -> "BipartiteLatent":
        """The latent of image(s) ``index`` (batch dimension kept)."""
        sl = index if isinstance(index, slice) else slice(index, index + 1 if index != -1 else None)
        caps = None if self.captions is None else self.captions[sl]
        return BipartiteLatent(self.image_embed[sl], self.noise[sl], self.steps, self.guidance, caps, self.model, self.min_alpha_bar, dict(self.extra))

    def metadata(self) -> dict[str, Any]:
        """The JSON-able facts stored next to the tensors."""
        return {"format": LATENT_FORMAT, "version": LATENT_VERSION, "model": self.model, "steps": self.steps, "guidance": self.guidance, "captions": self.captions, "min_alpha_bar": self.min_alpha_bar, "extra": self.extra}

    def save(self, path: str | os.PathLike) -> Path:
        """Write one safetensors file (``image_embed``, ``noise``) with the metadata as JSON in its header."""
        path = Path(path)
        save_tensors(path, {"image_embed": self.image_embed.float(), "noise": self.noise.float()}, metadata={"unclip": json.dumps(self.metadata())})
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "BipartiteLatent":
        """Read a file written by :meth:`save` (never pickle); errors name the file."""
        from safetensors import safe_open

        path = Path(path)
        if not path.is_file():
            raise CheckpointError(f"bipartite latent file not found: {path}; write one with `unclip invert IMAGE --out FILE`")
        try:
            with safe_open(str(path), framework="pt") as f:
                meta_text = (f.metadata() or {}).get("unclip")
                tensors = {k: f.get_tensor(k) for k in f.keys()}
        except Exception as exc:  # safetensors raises several types for corrupt files
            raise CheckpointError(f"could not read {path} as safetensors ({exc})") from exc
        if meta_text is None or not {"image_embed", "noise"} <= set(tensors):
            raise CheckpointError(f"{path} is not a bipartite latent (no 'unclip' metadata or missing tensors); write one with `unclip invert`")
        meta = json.loads(meta_text)
        if meta.get("format") != LATENT_FORMAT or meta.get("version") != LATENT_VERSION:
            raise CheckpointError(f"{path}: expected format '{LATENT_FORMAT}' version {LATENT_VERSION}, found {meta.get('format')!r} version {meta.get('version')!r}")
        return cls(tensors["image_embed"], tensors["noise"], int(meta["steps"]), float(meta["guidance"]), meta.get("captions"), meta.get("model", ""), float(meta.get("min_alpha_bar", MIN_ALPHA_BAR)), meta.get("extra") or {})

    def to(self, device: str | torch.device) -> "BipartiteLatent":
        return BipartiteLatent(self.image_embed.to(device), self.noise.to(device), self.steps, self.guidance, self.captions, self.model, self.min_alpha_bar, dict(self.extra))


# ----------------------------------------------------------------------------- vector maths


def _unit(x: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    return x / x.norm(dim=-1, keepdim=True).clamp_min(eps)


def _orthogonal_to(u: torch.Tensor) -> torch.Tensor:
    """A deterministic unit vector orthogonal to each unit vector in ``u`` (..., D), D >= 2.

    Gram-Schmidt of the standard basis vector along which ``u`` is smallest in absolute
    value (the first such axis on ties), so the result depends on ``u`` alone.
    """
    axis = u.abs().argmin(dim=-1, keepdim=True)
    e = torch.zeros_like(u).scatter_(-1, axis, 1.0)
    return _unit(e - (e * u).sum(-1, keepdim=True) * u)


def slerp(a: torch.Tensor, b: torch.Tensor, theta: float | torch.Tensor, *, parallel_eps: float = 1e-4) -> torch.Tensor:
    """Spherical interpolation from ``a`` (theta 0) to ``b`` (theta 1), norms interpolated linearly.

    Args:
        a, b: (..., D) vectors, broadcastable against each other.
        theta: a number, or a tensor broadcast against the leading dimensions: shape (B,)
            with a, b of shape (B, D) gives one theta per row; shape (F,) with a, b of shape
            (D,) gives F frames (F, D). Values outside [0, 1] extrapolate along the arc.
        parallel_eps: below this sine of the angle the vectors count as parallel or opposite.
    Returns:
        (..., D): direction sin((1-theta) w) u_a + sin(theta w) u_b over sin w, where u are the
        unit vectors and w = arccos(u_a . u_b) is the angle between them, times the norm
        (1 - theta)|a| + theta|b|.

    Degenerate cases, all deterministic:

    * nearly parallel (w ~ 0): the arc is a line; the direction is the normalised lerp of
      the unit vectors (equal to slerp to second order in w);
    * opposite (w ~ pi): every great circle through u_a reaches -u_a, so one is chosen: the
      one through :func:`_orthogonal_to` (u_a), i.e. the direction cos(pi theta) u_a +
      sin(pi theta) v with v the basis vector least aligned with u_a, made orthogonal to it;
    * a zero vector: no direction exists; plain lerp (1 - theta) a + theta b.
    """
    a, b = torch.broadcast_tensors(torch.as_tensor(a), torch.as_tensor(b))
    if a.dim() == 0 or a.shape[-1] < 2:
        raise InputError(f"slerp needs vectors of dimension >= 2 along the last axis, got shape {tuple(a.shape)}")
    if not a.is_floating_point():
        a, b = a.float(), b.float()
    t = torch.as_tensor(theta, dtype=a.dtype, device=a.device)
    if t.dim() > 0:
        t = t.unsqueeze(-1)  # theta (..., ) -> (..., 1), broadcast over the vector axis
    na, nb = a.norm(dim=-1, keepdim=True), b.norm(dim=-1, keepdim=True)
    ua, ub = _unit(a), _unit(b)
    cos = (ua * ub).sum(-1, keepdim=True).clamp(-1.0, 1.0)
    omega = torch.arccos(cos)
    sin = torch.sin(omega)
    general = (torch.sin((1 - t) * omega) * ua + torch.sin(t * omega) * ub) / sin.clamp_min(parallel_eps)
    parallel = _unit((1 - t) * ua + t * ub)
    opposite = torch.cos(math.pi * t) * ua + torch.sin(math.pi * t) * _orthogonal_to(ua)
    degenerate = sin < parallel_eps
    direction = torch.where(degenerate & (cos > 0), parallel, torch.where(degenerate, opposite, general))
    out = direction * ((1 - t) * na + t * nb)
    zero = (na == 0) | (nb == 0)
    return torch.where(zero, (1 - t) * a + t * b, out)


def text_diff_direction(z_t: torch.Tensor, z_t0: torch.Tensor) -> torch.Tensor:
    """The text diff z_d = norm(z_t - z_t0) (section 3.3): (..., E) unit vectors.

    ``z_t`` embeds the target caption, ``z_t0`` a caption of the current image (or a
    neutral one). Identical embeddings have no difference to follow: an InputError.
    """
    diff = z_t - z_t0
    norm = diff.norm(dim=-1, keepdim=True)
    if bool((norm < 1e-8).any()):
        raise InputError("the two captions have the same CLIP text embedding, so there is no text diff; choose a --to caption that differs from --from")
    return diff / norm


def theta_schedule(frames: int, max_theta: float = 1.0) -> torch.Tensor:
    """``frames`` evenly spaced values from 0 to ``max_theta`` (both included), float64."""
    if int(frames) < 2:
        raise InputError(f"frames must be >= 2 (the two ends), got {frames}")
    return torch.linspace(0.0, float(max_theta), int(frames), dtype=torch.float64)


# ----------------------------------------------------------------------------- decoder plumbing

ImageInput = Union[Image.Image, Sequence[Image.Image], torch.Tensor]


def as_image_tensor(images: ImageInput, size: int) -> torch.Tensor:
    """PIL image(s) or a tensor in [-1, 1] -> float tensor (B, 3, size, size) in [-1, 1].

    PIL images are centre-cropped and resized (:func:`unclip.imageio.pil_to_tensor`);
    square tensors of another size are resized with antialiased bilinear filtering.
    """
    if isinstance(images, torch.Tensor):
        x = images.unsqueeze(0) if images.dim() == 3 else images
        if x.dim() != 4 or x.shape[1] != 3:
            raise InputError(f"image tensors must be (B, 3, H, W) or (3, H, W) in [-1, 1], got {tuple(images.shape)}")
        if x.shape[-2] != x.shape[-1]:
            raise InputError(f"image tensors must be square, got {tuple(x.shape[-2:])}; pass PIL images to centre-crop them")
        x = x.float()
        if x.shape[-1] != size:
            x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False).clamp(-1, 1)
        return x
    if isinstance(images, Image.Image) or (isinstance(images, Sequence) and images and all(isinstance(i, Image.Image) for i in images)):
        return pil_to_tensor(images, size=size)
    raise InputError(f"images must be PIL images or a (B, 3, H, W) tensor in [-1, 1], got {type(images).__name__}")


def decoder_model_fn(pipe: "UnCLIP", image_embed: torch.Tensor, captions: list[str] | None = None, guidance: float = DEFAULT_GUIDANCE):
    """The decoder as a ``model_fn(x, t)`` conditioned on z_i, with the caption dropped when ``captions`` is None.

    Guidance > 1 contrasts the condition with the fully unconditional decoder (null z_i,
    dropped caption) in one batched forward; 1.0 is a single plain forward.
    """
    dev = pipe.device
    b = image_embed.shape[0]
    if captions is not None and len(captions) != b:
        raise InputError(f"{len(captions)} captions for {b} images")
    tokens = pipe.clip.tokenize(captions if captions is not None else [""] * b).to(dev)
    ones = torch.ones(b, dtype=torch.bool, device=dev)
    cond = {"image_embed": image_embed.to(dev).float(), "text_tokens": tokens, "image_keep": ones, "text_keep": ones if captions is not None else ~ones}
    if float(guidance) == 1.0:
        return bind(pipe.decoder, **cond)
    uncond = {**cond, "image_keep": ~ones, "text_keep": ~ones}
    channels = 3 if pipe.decoder_settings.learned_variance else None
    return classifier_free_guidance(pipe.decoder, guidance, cond, uncond, guided_channels=channels)


def manipulation_diffusion(diffusion: GaussianDiffusion, steps: int, min_alpha_bar: float = MIN_ALPHA_BAR) -> GaussianDiffusion:
    """``diffusion`` respaced to ``steps`` timesteps evenly spaced from 0 to the top level.

    The top timestep is the last with alpha-bar >= ``min_alpha_bar`` (see the module
    docstring: inverting to alpha-bar ~ 0 is hopelessly ill-conditioned). Pass the result
    to the samplers with ``steps=None``; they call the network with original timesteps.
    """
    steps = _check_steps(steps)
    if not 0.0 < float(min_alpha_bar) < 1.0:
        raise InputError(f"min_alpha_bar must lie in (0, 1), got {min_alpha_bar}")
    above = torch.nonzero(diffusion.alphas_cumprod >= float(min_alpha_bar)).flatten()
    top = int(above.max()) if above.numel() else diffusion.num_timesteps - 1
    if steps > top + 1:
        raise InputError(f"steps={steps} exceeds the {top + 1} timesteps up to the top level t={top}; use fewer steps")
    ts = sorted({int(round(v)) for v in torch.linspace(0, top, steps, dtype=torch.float64).tolist()})
    return diffusion.respace(ts)


@torch.no_grad()
def decode_latent(
    pipe: "UnCLIP",
    image_embed: torch.Tensor,
    noise: torch.Tensor,
    *,
    steps: int = DEFAULT_STEPS,
    guidance: float = DEFAULT_GUIDANCE,
    eta: float = 0.0,
    generator: torch.Generator | None = None,
    captions: list[str] | None = None,
    min_alpha_bar: float = MIN_ALPHA_BAR,
    progress: bool = False,
) -> torch.Tensor:
    """DDIM-decode (z_i (B, E), x_T (B, 3, S, S)) to images (B, 3, S, S) in [-1, 1].

    x0 estimates are not clipped, exactly as in :func:`invert`, so eta 0 retraces the
    inversion; the final images are clamped to [-1, 1].
    """
    model_fn = decoder_model_fn(pipe, image_embed, captions, guidance)
    diffusion = manipulation_diffusion(pipe.decoder_diffusion, steps, min_alpha_bar)
    x = ddim_sample(model_fn, diffusion, noise.to(pipe.device).float(), eta=eta, generator=generator, progress=progress)
    return x.clamp(-1, 1)


def _check_steps(steps: int) -> int:
    if int(steps) < 1:
        raise InputError(f"steps must be >= 1, got {steps}")
    return int(steps)


# ----------------------------------------------------------------------------- manipulations


@torch.no_grad()
def invert(
    pipe: "UnCLIP",
    images: ImageInput,
    *,
    steps: int = DEFAULT_STEPS,
    guidance: float = DEFAULT_GUIDANCE,
    refine: int = 0,
    captions: list[str] | None = None,
    min_alpha_bar: float = MIN_ALPHA_BAR,
    progress: bool = False,
) -> BipartiteLatent:
    """Encode images to their bipartite latent (z_i, x_T) (section 3).

    z_i = CLIP's image embedding; x_T = DDIM inversion (:func:`unclip.diffusion.ddim_invert`)
    of the image at the decoder's resolution under the decoder conditioned on z_i (caption
    dropped unless ``captions`` is given) with classifier-free guidance ``guidance``.
    ``refine`` fixed-point iterations per step make the inversion closer to exact at
    (1 + refine) model calls per step. Decode with the same ``steps`` and ``guidance``
    (:func:`reconstruct` does) to get the image back.
    """
    steps = _check_steps(steps)
    x = as_image_tensor(images, pipe.decoder.config.image_size).to(pipe.device)
    z_i = pipe.clip.encode_image(x).float()
    model_fn = decoder_model_fn(pipe, z_i, captions, guidance)
    diffusion = manipulation_diffusion(pipe.decoder_diffusion, steps, min_alpha_bar)
    x_T = ddim_invert(model_fn, diffusion, x, refine=refine, progress=progress)
    return BipartiteLatent(z_i, x_T, steps, float(guidance), list(captions) if captions is not None else None, str(getattr(pipe, "path", "")), float(min_alpha_bar), {"refine": int(refine)})


def _latent(pipe: "UnCLIP", image: ImageInput | BipartiteLatent, steps: int, guidance: float, refine: int, progress: bool) -> BipartiteLatent:
    if isinstance(image, BipartiteLatent):
        return image.to(pipe.device)
    return invert(pipe, image, steps=steps, guidance=guidance, refine=refine, progress=progress)


@torch.no_grad()
def reconstruct(pipe: "UnCLIP", latent: BipartiteLatent, *, eta: float = 0.0, generator: torch.Generator | None = None, progress: bool = False) -> torch.Tensor:
    """Decode a latent with its own steps and guidance: (B, 3, S, S); eta 0 gives the inverted images back."""
    return decode_latent(pipe, latent.image_embed, latent.noise, steps=latent.steps, guidance=latent.guidance, eta=eta, generator=generator, captions=latent.captions, min_alpha_bar=latent.min_alpha_bar, progress=progress)


@torch.no_grad()
def vary(
    pipe: "UnCLIP",
    image: ImageInput | BipartiteLatent,
    *,
    eta: float = 1.0,
    n: int = 4,
    seed: int = 0,
    steps: int = DEFAULT_STEPS,
    guidance: float = DEFAULT_GUIDANCE,
    refine: int = 0,
    progress: bool = False,
) -> torch.Tensor:
    """Variations of image(s) (section 3.1): (B * n, 3, S, S), the n variations of each image in turn.

    Each image is inverted once; its (z_i, x_T) is decoded n times by DDIM with ``eta``,
    whose fresh noise comes from ``seed``. eta 0 reconstructs the image n times; larger eta
    keeps what z_i holds (for shapes: colour and shape) while redrawing the rest. A given
    :class:`BipartiteLatent` is used as it is (its own steps and guidance).
    """
    if int(n) < 1:
        raise InputError(f"n must be >= 1, got {n}")
    lat = _latent(pipe, image, steps, guidance, refine, progress)
    rep = lambda t: t.repeat_interleave(int(n), dim=0)  # noqa: E731
    caps = None if lat.captions is None else [c for c in lat.captions for _ in range(int(n))]
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    if pipe.device.type != "cpu":
        gen = torch.Generator(device=pipe.device).manual_seed(int(seed))
    return decode_latent(pipe, rep(lat.image_embed), rep(lat.noise), steps=lat.steps, guidance=lat.guidance, eta=eta, generator=gen, captions=caps, min_alpha_bar=lat.min_alpha_bar, progress=progress)


@torch.no_grad()
def interpolate(
    pipe: "UnCLIP",
    a: ImageInput | BipartiteLatent,
    b: ImageInput | BipartiteLatent,
    *,
    frames: int = 8,
    noise: str = "slerp",
    seed: int = 0,
    steps: int = DEFAULT_STEPS,
    guidance: float = DEFAULT_GUIDANCE,
    refine: int = 0,
    progress: bool = False,
) -> torch.Tensor:
    """Interpolate between two images (section 3.2): (frames, 3, S, S), theta = 0 .. 1.

    z_theta = slerp(z_a, z_b, theta). ``noise="slerp"`` also slerps the two inverted x_T
    (flattened), so the first and last frames reconstruct the inputs; ``noise="fixed"``
    decodes every frame from one random x_T drawn from ``seed`` (no DDIM inversion is
    needed then, only the CLIP embeddings), which shows what z_i alone carries.
    """
    if noise not in NOISE_PATHS:
        raise InputError(f"noise must be one of {', '.join(NOISE_PATHS)}, got {noise!r}")
    thetas = theta_schedule(frames).to(torch.float32)
    size = pipe.decoder.config.image_size
    if noise == "slerp":
        la, lb = (_latent(pipe, im, steps, guidance, refine, progress) for im in (a, b))
        if len(la) != 1 or len(lb) != 1:
            raise InputError("interpolate takes one image (or latent) at each end")
        z = slerp(la.image_embed[0].cpu(), lb.image_embed[0].cpu(), thetas)
        x_T = slerp(la.noise[0].flatten().cpu(), lb.noise[0].flatten().cpu(), thetas).view(-1, 3, size, size)
        steps, guidance, mab = la.steps, la.guidance, la.min_alpha_bar
    else:
        z_ends = []
        for im in (a, b):
            z_ends.append(im.image_embed.cpu() if isinstance(im, BipartiteLatent) else pipe.clip.encode_image(as_image_tensor(im, size).to(pipe.device)).float().cpu())
        if z_ends[0].shape[0] != 1 or z_ends[1].shape[0] != 1:
            raise InputError("interpolate takes one image (or latent) at each end")
        z = slerp(z_ends[0][0], z_ends[1][0], thetas)
        gen = torch.Generator(device="cpu").manual_seed(int(seed))
        x_T = torch.randn(1, 3, size, size, generator=gen).expand(len(thetas), -1, -1, -1)
        mab = MIN_ALPHA_BAR
    return decode_latent(pipe, z, x_T, steps=steps, guidance=guidance, min_alpha_bar=mab, progress=progress)


@torch.no_grad()
def text_diff(
    pipe: "UnCLIP",
    image: ImageInput | BipartiteLatent,
    from_text: str,
    to_text: str,
    *,
    max_theta: float = 0.5,
    frames: int = 5,
    steps: int = DEFAULT_STEPS,
    guidance: float = DEFAULT_GUIDANCE,
    refine: int = 0,
    progress: bool = False,
) -> torch.Tensor:
    """Edit an image towards a caption (section 3.3): (frames, 3, S, S) for theta = 0 .. max_theta.

    z_d = norm(z_t(to_text) - z_t(from_text)); z_theta = slerp(z_i, z_d, theta); every frame
    is decoded from the image's inverted x_T, so theta 0 reconstructs the image.
    ``from_text`` describes the current image; "" is a neutral caption.
    """
    if not isinstance(to_text, str) or not to_text.strip():
        raise InputError("text_diff needs a non-empty target caption (--to)")
    lat = _latent(pipe, image, steps, guidance, refine, progress)
    if len(lat) != 1:
        raise InputError("text_diff takes one image (or latent)")
    z_t = pipe.clip.encode_text([to_text, from_text or ""]).float().cpu()
    z_i = lat.image_embed[0].cpu()
    # z_d at |z_i|: unit for our CLIP (the paper's slerp on the sphere); raw embeddings (Karlo) keep their norm
    z_d = text_diff_direction(z_t[0], z_t[1]) * z_i.norm()
    thetas = theta_schedule(frames, max_theta).to(torch.float32)
    z = slerp(z_i, z_d, thetas)
    x_T = lat.noise.cpu().expand(len(thetas), -1, -1, -1)
    caps = None if lat.captions is None else lat.captions * len(thetas)
    return decode_latent(pipe, z, x_T, steps=lat.steps, guidance=lat.guidance, captions=caps, min_alpha_bar=lat.min_alpha_bar, progress=progress)
