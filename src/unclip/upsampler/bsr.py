"""The BSR degradation model for the second upsampler (unCLIP section 2.1; BSRGAN, Zhang et al. 2021).

unCLIP trains its 256 -> 1024 upsampler on low-resolution images made with "BSR
degradation" (the degradation of BSRGAN, "Designing a Practical Degradation Model for Deep
Blind Image Super-Resolution", Sec. 3). Per image, for a scale factor sf = high / low:

1. with probability 0.25, when sf >= 4, first halve the image (random interpolation) and
   continue with sf / 2 ("downsample1"; BSRGAN does this for sf = 4 only);
2. then the seven steps below in a random order drawn per image, except that the two
   downsampling steps keep their relative order (if shuffled the wrong way they swap places):

   - two blurs, each of a random kind: with probability 1/2 an anisotropic Gaussian
     (eigen-variances uniform in [0, 4 + sf], rotation uniform in [0, pi]), else an
     isotropic one (sigma uniform in [0, 2 + 0.2 sf]); kernel side 2k + 3, k uniform in
     {2, ..., 11}; reflect padding;
   - "downsample2": with probability 0.75 a resize by 1 / s1, s1 uniform in [1, 2 sf], with
     a random interpolation; else a Gaussian blur (sigma uniform in [0.1, 0.6 sf]) whose
     kernel is shifted by (sf - 1) / 2 pixels, followed by nearest (strided) downsampling by
     sf -- the shift keeps each kept pixel at the centre of the block it stands for;
   - "downsample3": a resize to the final low resolution with a random interpolation (after
     downsample2, so with s1 > sf the pair is a down-up resampling);
   - Gaussian noise, level uniform in {2, ..., 25} / 255: channel-independent (p 0.4),
     the same on every channel (grey, p 0.4), or correlated across channels (p 0.2) with
     covariance L^2 U^T D U, L = 25/255, D diagonal uniform in [0, 1], U a random rotation;
   - JPEG compression with probability 0.9, quality uniform in {30, ..., 95};
   - camera-sensor noise with probability 0.25 (a reverse-ISP round trip, simplified; see
     :mod:`.camera`);
3. a final JPEG compression, quality uniform in {30, ..., 95}.

Values are clipped to the image range after every resize and noise step, as BSRGAN does.

Interpolations are drawn from ``nearest``, ``bilinear`` and ``bicubic`` as the paper says
(BSRGAN's code draws from OpenCV's bilinear, bicubic and area); ours antialias when they
shrink (:func:`.degradations.resize`), like MATLAB's imresize that BSRGAN also uses.

The random choices of one image form a *plan* (:func:`draw_plan`, cheap, no pixels), which
:func:`apply_plan` executes; :func:`bsr_degradation` does both for every image of a batch.
Images are (B, 3, H, W) in [-1, 1]; every draw comes from the ``torch.Generator`` passed in.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch

from ..errors import InputError
from .camera import camera_sensor_noise, draw_camera
from .degradations import apply_kernels, gaussian_kernels, jpeg_compress, resize

SHUFFLED = ("blur1", "blur2", "downsample2", "downsample3", "noise", "jpeg", "camera")


@dataclass(frozen=True)
class BSRConfig:
    """Probabilities and ranges of the BSR model (defaults: BSRGAN's ``degradation_bsrgan``).

    ``blurs`` is how many blur steps enter the shuffle; ``blur_scale`` multiplies the blur
    widths (the variances of the anisotropic kernel, the sigma of the isotropic one);
    ``isotropic_kernel_k`` is the isotropic kernel's size range when it differs from
    ``kernel_k``. :data:`BSR_LIGHT` sets them for the light variant.
    """

    downsample1_prob: float = 0.25
    anisotropic_prob: float = 0.5
    kernel_k: tuple[int, int] = (2, 11)  # kernel side 2k + 3
    isotropic_kernel_k: tuple[int, int] | None = None  # None: kernel_k
    blurs: int = 2
    blur_scale: float = 1.0
    downsample2_resize_prob: float = 0.75
    noise_levels: tuple[int, int] = (2, 25)  # in 1/255
    noise_colour_prob: float = 0.4
    noise_gray_prob: float = 0.4  # the rest: correlated across channels
    jpeg_prob: float = 0.9
    jpeg_quality: tuple[int, int] = (30, 95)
    camera_prob: float = 0.25
    modes: tuple[str, ...] = ("nearest", "bilinear", "bicubic")

    def __post_init__(self) -> None:
        if self.blurs not in (0, 1, 2):
            raise InputError(f"BSRConfig.blurs must be 0, 1 or 2, got {self.blurs}")


#: The light variant that latent diffusion trains its BSR super-resolution models with
#: (Rombach et al. 2022, ``bsrgan_light.degradation_bsrgan_variant``; unCLIP section 2.1 cites
#: both papers for its "BSR degradation"): one blur with a quarter of the widths (isotropic
#: kernels of side 5 to 7, anisotropic ones of 5 to 13: odd sides here, so that every kernel
#: is centred), a resize-type ``downsample2`` with probability 0.8, Gaussian noise of level
#: 1 or 2 / 255, JPEG qualities 80 to 95, no camera-sensor noise. The order is still
#: shuffled per image and ``downsample1`` still halves first with p 0.25.
BSR_LIGHT = BSRConfig(
    kernel_k=(1, 5),
    isotropic_kernel_k=(1, 2),
    blurs=1,
    blur_scale=0.25,
    downsample2_resize_prob=0.8,
    noise_levels=(1, 2),
    jpeg_quality=(80, 95),
    camera_prob=0.0,
)


@dataclass
class Step:
    """One operation of a plan: its name and the parameters drawn for it."""

    name: str
    params: dict[str, Any] = field(default_factory=dict)


def _u(generator: torch.Generator, lo: float = 0.0, hi: float = 1.0) -> float:
    return lo + (hi - lo) * float(torch.rand(1, generator=generator, dtype=torch.float64))


def _int(generator: torch.Generator, lo: int, hi: int) -> int:
    """Uniform in {lo, ..., hi}."""
    return int(torch.randint(lo, hi + 1, (1,), generator=generator))


def _mode(generator: torch.Generator, config: BSRConfig) -> str:
    return config.modes[_int(generator, 0, len(config.modes) - 1)]


def draw_blur(sf: float, generator: torch.Generator, config: BSRConfig) -> dict[str, Any]:
    """A random isotropic or anisotropic Gaussian kernel for scale factor ``sf`` (BSRGAN add_blur)."""
    size = 2 * _int(generator, *config.kernel_k) + 3
    if _u(generator) < config.anisotropic_prob:
        wide = (4.0 + sf) * config.blur_scale  # the largest variance along an axis
        l1, l2 = wide * _u(generator), wide * _u(generator)
        theta = math.pi * _u(generator)
        return {"kind": "anisotropic", "size": size, "sigma_x": math.sqrt(l1), "sigma_y": math.sqrt(l2), "theta": theta}
    if config.isotropic_kernel_k is not None:
        size = 2 * _int(generator, *config.isotropic_kernel_k) + 3
    sigma = (2.0 + 0.2 * sf) * config.blur_scale * _u(generator)
    return {"kind": "isotropic", "size": size, "sigma_x": sigma, "sigma_y": sigma, "theta": 0.0}


def draw_noise(generator: torch.Generator, config: BSRConfig) -> dict[str, Any]:
    """Level (in [0, 1] units) and kind of the additive Gaussian noise; a 3x3 covariance for 'correlated'."""
    level = _int(generator, *config.noise_levels) / 255.0
    r = _u(generator)
    if r < config.noise_colour_prob:
        return {"kind": "colour", "sigma": level}
    if r < config.noise_colour_prob + config.noise_gray_prob:
        return {"kind": "gray", "sigma": level}
    q, _ = torch.linalg.qr(torch.rand(3, 3, generator=generator, dtype=torch.float64))
    d = torch.diag(torch.rand(3, generator=generator, dtype=torch.float64))
    big = config.noise_levels[1] / 255.0
    return {"kind": "correlated", "sigma": level, "cov": (big**2 * q.T @ d @ q).float()}


def draw_plan(scale: float, generator: torch.Generator, config: BSRConfig | None = None) -> list[Step]:
    """The random choices of the BSR model for one image with ``scale`` = high side / low side."""
    config = config or BSRConfig()
    if scale < 1:
        raise InputError(f"BSR degradation needs a scale factor >= 1 (high side / low side), got {scale}")
    plan: list[Step] = []
    sf = float(scale)
    if sf >= 4 and _u(generator) < config.downsample1_prob:
        plan.append(Step("downsample1", {"mode": _mode(generator, config)}))
        sf /= 2
    shuffled = SHUFFLED[2 - config.blurs :]  # drop blur1 (and blur2) when the config has fewer blurs
    order = [shuffled[i] for i in torch.randperm(len(shuffled), generator=generator).tolist()]
    i2, i3 = order.index("downsample2"), order.index("downsample3")
    if i2 > i3:  # downsample3 must come after downsample2
        order[i2], order[i3] = order[i3], order[i2]
    for name in order:
        if name in ("blur1", "blur2"):
            plan.append(Step("blur", draw_blur(sf, generator, config)))
        elif name == "downsample2":
            strided = _u(generator) >= config.downsample2_resize_prob and float(sf).is_integer() and sf > 1
            if strided:
                sigma = _u(generator, 0.1, 0.6 * sf)
                plan.append(Step("downsample2", {"variant": "blur_nearest", "sigma": sigma, "sf": int(sf)}))
            else:
                plan.append(
                    Step(
                        "downsample2",
                        {"variant": "resize", "factor": _u(generator, 1.0, 2.0 * sf), "mode": _mode(generator, config)},
                    )
                )
        elif name == "downsample3":
            plan.append(Step("downsample3", {"mode": _mode(generator, config)}))
        elif name == "noise":
            plan.append(Step("noise", draw_noise(generator, config)))
        elif name == "jpeg":
            if _u(generator) < config.jpeg_prob:
                plan.append(Step("jpeg", {"quality": _int(generator, *config.jpeg_quality)}))
        elif _u(generator) < config.camera_prob:
            plan.append(Step("camera", {"camera": draw_camera(generator)}))
    plan.append(Step("final_jpeg", {"quality": _int(generator, *config.jpeg_quality)}))
    return plan


def shifted_gaussian_kernel(sigma: float, shift: float, size: int = 25) -> torch.Tensor:
    """(size, size) isotropic Gaussian whose centre sits ``shift`` pixels right of and below the middle."""
    r = torch.arange(size, dtype=torch.float64) - size // 2 - shift
    g = torch.exp(-0.5 * (r / max(sigma, 1e-3)) ** 2)
    k = g[:, None] * g[None, :]
    return (k / k.sum()).float()


def blur_nearest_downsample(x: torch.Tensor, sigma: float, sf: int) -> torch.Tensor:
    """Blur with a kernel shifted by (sf - 1)/2, then keep every sf-th pixel (BSRGAN's downsample2 variant).

    Output pixel (i, j) is the blurred value at the centre of input block (i, j),
    i.e. at (sf i + (sf - 1)/2, sf j + (sf - 1)/2).
    """
    kernel = shifted_gaussian_kernel(sigma, (sf - 1) / 2.0)
    blurred = apply_kernels(x, kernel.expand(x.shape[0], -1, -1))
    return blurred[..., ::sf, ::sf]


def add_noise(x: torch.Tensor, params: dict[str, Any], generator: torch.Generator) -> torch.Tensor:
    """Add the Gaussian noise of a :func:`draw_noise` draw to (B, 3, H, W) images in [-1, 1]."""
    b, _, h, w = x.shape
    scale = 2.0  # noise levels are on the [0, 1] scale; images on [-1, 1]
    if params["kind"] == "colour":
        noise = params["sigma"] * torch.randn((b, 3, h, w), generator=generator)
    elif params["kind"] == "gray":
        noise = params["sigma"] * torch.randn((b, 1, h, w), generator=generator).expand(b, 3, h, w)
    else:
        chol = torch.linalg.cholesky(params["cov"].double() + 1e-12 * torch.eye(3, dtype=torch.float64)).float()
        z = torch.randn((b, 3, h, w), generator=generator)
        noise = torch.einsum("ij,bjhw->bihw", chol, z)
    return (x + scale * noise.to(x)).clamp(-1, 1)


def _jpeg(x: torch.Tensor, quality: int, generator: torch.Generator) -> torch.Tensor:
    return jpeg_compress(x, generator, (quality, quality))


def apply_plan(
    images: torch.Tensor, plan: list[Step], low_res: int | tuple[int, int], generator: torch.Generator
) -> torch.Tensor:
    """Run ``plan`` on ``images`` (B, 3, H, W) in [-1, 1]; returns (B, 3, h, w) in [-1, 1].

    Pixel noise is drawn from ``generator``; every other choice is in the plan.
    """
    low = (low_res, low_res) if isinstance(low_res, int) else tuple(low_res)
    x = images
    for step in plan:
        p = step.params
        if step.name == "downsample1":
            x = resize(x, (max(1, x.shape[-2] // 2), max(1, x.shape[-1] // 2)), p["mode"]).clamp(-1, 1)
        elif step.name == "blur":
            sx, sy, theta = (torch.tensor([p[key]]) for key in ("sigma_x", "sigma_y", "theta"))
            k = gaussian_kernels(sx, sy, theta, p["size"])
            x = apply_kernels(x, k.expand(x.shape[0], -1, -1))
        elif step.name == "downsample2":
            if p["variant"] == "blur_nearest":
                x = blur_nearest_downsample(x, p["sigma"], p["sf"]).clamp(-1, 1)
            else:
                size = (max(1, int(x.shape[-2] / p["factor"])), max(1, int(x.shape[-1] / p["factor"])))
                x = resize(x, size, p["mode"]).clamp(-1, 1)
        elif step.name == "downsample3":
            x = resize(x, low, p["mode"]).clamp(-1, 1)
        elif step.name == "noise":
            x = add_noise(x, p, generator)
        elif step.name in ("jpeg", "final_jpeg"):
            x = _jpeg(x, p["quality"], generator)
        elif step.name == "camera":
            x = camera_sensor_noise((x + 1) / 2, p["camera"], generator) * 2 - 1
        else:
            raise InputError(f"unknown BSR step {step.name!r}")
    if tuple(x.shape[-2:]) != low:  # a plan without downsample3 (hand-made): bring it to size
        x = resize(x, low, "bicubic")
    return x.clamp(-1, 1)


def bsr_degradation(
    images: torch.Tensor, low_res: int | tuple[int, int], generator: torch.Generator, config: BSRConfig | None = None
) -> torch.Tensor:
    """BSR-degrade each image with its own random plan (order, kinds and levels): (B, 3, h, w) in [-1, 1].

    The scale factor is the high side over ``low_res``; BSRGAN's defaults assume 2 or 4.
    """
    if images.ndim != 4 or images.shape[1] != 3:
        raise InputError(f"images must have shape (B, 3, H, W), got {tuple(images.shape)}")
    low = (low_res, low_res) if isinstance(low_res, int) else tuple(low_res)
    if images.shape[-2] < low[0] or images.shape[-1] < low[1]:
        raise InputError(f"BSR degradation shrinks images: {tuple(images.shape[-2:])} is smaller than low_res {low}")
    scale = images.shape[-2] / low[0]
    outs = [
        apply_plan(images[i : i + 1], draw_plan(scale, generator, config), low, generator)
        for i in range(images.shape[0])
    ]
    return torch.cat(outs)
