"""Corruptions of the conditioning image for training the upsamplers (unCLIP section 2.1).

unCLIP trains its first upsampler (64 -> 256) on low-resolution images slightly corrupted
with Gaussian blur, and its second (256 -> 1024) on a more diverse "BSR degradation"
(Rombach et al. 2022, after BSRGAN, Zhang et al. 2021): random blur kernels (isotropic and
anisotropic), downsampling of a random kind, Gaussian, JPEG and camera-sensor noise, in a
random order, then a final JPEG (see :mod:`.bsr`). Corrupting the conditioning image makes the upsampler robust
to the artefacts of the stage before it, whose outputs are never as clean as a
downsampled photograph.

Every function takes a ``torch.Generator``: the same seed gives the same output. Images
are float tensors (B, 3, H, W) in [-1, 1]. Parameters (kernel widths, noise levels, JPEG
qualities) are drawn per image and applied in one batched operation. The full BSR model
(:mod:`.bsr`) draws its order, kinds and sizes per image and runs image by image.
"""

from __future__ import annotations

import io
import math
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..errors import InputError

RESIZE_MODES = ("bilinear", "bicubic", "area", "nearest")
DEGRADATIONS = ("none", "blur", "bsr", "bsr-light")


def _uniform(n: int, lo: float, hi: float, generator: torch.Generator) -> torch.Tensor:
    """(n,) float64 values uniform in [lo, hi]."""
    return lo + (hi - lo) * torch.rand(n, generator=generator, dtype=torch.float64)


def _check_images(images: torch.Tensor) -> None:
    if images.ndim != 4 or images.shape[1] != 3:
        raise InputError(f"images must have shape (B, 3, H, W), got {tuple(images.shape)}")


def gaussian_kernels(
    sigma_x: torch.Tensor,
    sigma_y: torch.Tensor | None = None,
    theta: torch.Tensor | None = None,
    size: int | None = None,
) -> torch.Tensor:
    """Normalised 2-D Gaussian kernels, one per entry: (B, k, k) float32.

    The covariance is ``R(theta) diag(sigma_x^2, sigma_y^2) R(theta)^T``; without
    ``sigma_y``/``theta`` the kernels are isotropic. ``size`` (odd) defaults to
    ``2 * ceil(3 * max sigma) + 1``, wide enough for the largest kernel.
    """
    sx = sigma_x.double().clamp_min(1e-3)
    sy = sx if sigma_y is None else sigma_y.double().clamp_min(1e-3)
    th = torch.zeros_like(sx) if theta is None else theta.double()
    if size is None:
        size = 2 * math.ceil(3 * float(torch.maximum(sx, sy).max())) + 1
    if size < 1 or size % 2 == 0:
        raise InputError(f"kernel size must be odd and >= 1, got {size}")
    r = torch.arange(size, dtype=torch.float64) - size // 2
    yy, xx = torch.meshgrid(r, r, indexing="ij")
    cos, sin = torch.cos(th)[:, None, None], torch.sin(th)[:, None, None]
    # Coordinates in the kernel's own (rotated) frame, then the quadratic form x^T S^-1 x.
    u = cos * xx + sin * yy
    v = -sin * xx + cos * yy
    q = (u / sx[:, None, None]) ** 2 + (v / sy[:, None, None]) ** 2
    k = torch.exp(-0.5 * q)
    return (k / k.sum(dim=(1, 2), keepdim=True)).float()


def apply_kernels(images: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
    """Convolve image b with kernel b (same kernel on each channel), reflect-padded.

    Args:
        images: (B, 3, H, W).
        kernels: (B, k, k), k odd.
    Returns:
        (B, 3, H, W), one grouped convolution for the whole batch.
    """
    _check_images(images)
    b, c, h, w = images.shape
    k = kernels.shape[-1]
    if kernels.shape != (b, k, k) or k % 2 == 0:
        raise InputError(f"kernels must have shape ({b}, k, k) with k odd, got {tuple(kernels.shape)}")
    pad = k // 2
    mode = "reflect" if pad < min(h, w) else "replicate"
    x = F.pad(images.reshape(1, b * c, h, w), (pad, pad, pad, pad), mode=mode)
    weight = kernels.to(images.dtype).repeat_interleave(c, dim=0).unsqueeze(1)  # (B*3, 1, k, k)
    return F.conv2d(x, weight, groups=b * c).reshape(b, c, h, w)


def gaussian_blur(
    images: torch.Tensor, generator: torch.Generator, sigma_range: tuple[float, float] = (0.2, 0.8)
) -> torch.Tensor:
    """Isotropic Gaussian blur with a per-image sigma (in pixels) uniform in ``sigma_range``: (B, 3, H, W)."""
    _check_images(images)
    sigma = _uniform(images.shape[0], *sigma_range, generator)
    return apply_kernels(images, gaussian_kernels(sigma))


def random_blur(
    images: torch.Tensor,
    generator: torch.Generator,
    sigma_range: tuple[float, float] = (0.2, 2.0),
    anisotropic_prob: float = 0.5,
) -> torch.Tensor:
    """BSR blur: per image an isotropic or (with ``anisotropic_prob``) anisotropic, rotated Gaussian kernel."""
    _check_images(images)
    n = images.shape[0]
    sx = _uniform(n, *sigma_range, generator)
    sy = _uniform(n, *sigma_range, generator)
    theta = _uniform(n, 0.0, math.pi, generator)
    aniso = torch.rand(n, generator=generator, dtype=torch.float64) < anisotropic_prob
    sy = torch.where(aniso, sy, sx)
    theta = torch.where(aniso, theta, torch.zeros_like(theta))
    return apply_kernels(images, gaussian_kernels(sx, sy, theta))


def resize(images: torch.Tensor, size: int | tuple[int, int], mode: str = "bicubic") -> torch.Tensor:
    """Resize (B, 3, H, W) to ``size`` with ``mode`` (antialiased when shrinking with bilinear/bicubic)."""
    if mode not in RESIZE_MODES:
        raise InputError(f"resize mode {mode!r} must be one of {RESIZE_MODES}")
    size = (size, size) if isinstance(size, int) else tuple(size)
    if tuple(images.shape[-2:]) == size:
        return images
    if mode == "nearest":
        return F.interpolate(images, size=size, mode="nearest")
    if mode == "area":
        return F.interpolate(images, size=size, mode="area")
    shrink = size[0] < images.shape[-2] or size[1] < images.shape[-1]
    return F.interpolate(images, size=size, mode=mode, align_corners=False, antialias=shrink)


def random_resize(
    images: torch.Tensor, size: int | tuple[int, int], generator: torch.Generator, modes: Sequence[str] = RESIZE_MODES
) -> torch.Tensor:
    """Resize the batch to ``size`` with one interpolation mode drawn from ``modes``."""
    mode = modes[int(torch.randint(len(modes), (1,), generator=generator))]
    return resize(images, size, mode)


def gaussian_noise(
    images: torch.Tensor,
    generator: torch.Generator,
    sigma_range: tuple[float, float] = (1 / 255, 25 / 255),
    gray_prob: float = 0.3,
) -> torch.Tensor:
    """Add Gaussian noise, per image sigma uniform in ``sigma_range`` (on the [0, 1] scale).

    With probability ``gray_prob`` an image gets the same noise on all three channels
    (luminance noise), else independent colour noise, as in BSRGAN.
    """
    _check_images(images)
    b = images.shape[0]
    sigma = (2.0 * _uniform(b, *sigma_range, generator)).float().view(b, 1, 1, 1)  # [0,1] scale -> [-1,1] scale
    gray = (torch.rand(b, generator=generator) < gray_prob).view(b, 1, 1, 1)
    colour = torch.randn(images.shape, generator=generator)
    mono = torch.randn((b, 1, *images.shape[-2:]), generator=generator).expand_as(colour)
    noise = torch.where(gray, mono, colour).to(images.device, images.dtype)
    return images + sigma.to(images.device, images.dtype) * noise


def jpeg_compress(
    images: torch.Tensor, generator: torch.Generator, quality_range: tuple[int, int] = (30, 95)
) -> torch.Tensor:
    """Round-trip each image through in-memory JPEG (PIL) at a per-image quality in ``quality_range``.

    Values are clamped to [-1, 1] and quantised to 8 bits first, as any saved image is.
    """
    _check_images(images)
    qualities = torch.randint(
        int(quality_range[0]), int(quality_range[1]) + 1, (images.shape[0],), generator=generator
    ).tolist()
    arrays = (
        ((images.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    )
    out = []
    for array, quality in zip(arrays, qualities):
        buffer = io.BytesIO()
        Image.fromarray(array).save(buffer, format="JPEG", quality=int(quality))
        buffer.seek(0)
        out.append(np.asarray(Image.open(buffer).convert("RGB")))
    decoded = torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)
    return decoded.to(images.device, images.dtype)


def blur_degradation(
    images: torch.Tensor,
    low_res: int | tuple[int, int],
    generator: torch.Generator,
    sigma_range: tuple[float, float] = (0.2, 0.8),
    downsample_modes: Sequence[str] = ("bicubic", "area"),
) -> torch.Tensor:
    """First-stage corruption: downsample to ``low_res``, then Gaussian-blur.

    The downsampling filter is drawn per call from ``downsample_modes``: antialiased
    bicubic, or ``"area"`` (the box filter, which is how a renderer that averages
    sub-pixel coverage, like the ``shapes`` one, makes its low-resolution images). Training
    on one filter only teaches the upsampler that filter's edge profile; given the other
    it over- or under-sharpens.

    Args:
        images: (B, 3, H, W) high-resolution images in [-1, 1].
        low_res: side (or (h, w)) of the conditioning image.
        sigma_range: blur widths, in low-resolution pixels.
        downsample_modes: the filters to draw from (see :data:`RESIZE_MODES`).
    Returns:
        (B, 3, h, w) in [-1, 1].
    """
    low = random_resize(images, low_res, generator, downsample_modes)
    return gaussian_blur(low, generator, sigma_range).clamp(-1, 1)
