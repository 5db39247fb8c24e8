"""Camera-sensor noise through a reverse image-signal-processing (ISP) round trip.

BSRGAN (Zhang et al. 2021, Sec. 3.3 "processed camera sensor noise") adds the noise of a
camera's sensor the way it reaches a JPEG: an sRGB image is "unprocessed" back to raw
sensor values, noise is added there, and the camera pipeline is run forwards again. The
unprocessing model is that of Brooks et al. 2019 ("Unprocessing Images for Learned Raw
Denoising", Sec. 3):

    sRGB --inverse tone map--> --inverse gamma (2.2)--> linear RGB --inverse colour
    correction--> camera RGB --inverse white balance and digital gain--> --Bayer mosaic
    (RGGB)--> raw; raw += N(0, shot * raw + read); then demosaic (bilinear), white
    balance, colour correction, gamma, tone map.

Noise levels follow Brooks et al.: log(shot) uniform in [log 1e-4, log 0.012] and
log(read) = 2.18 log(shot) + 1.20 + N(0, 0.26^2); gains: red in [1.9, 2.4], blue in
[1.5, 1.9], digital gain 1 / N(0.8, 0.1^2).

**Simplified, and said so:** Brooks et al. draw the colour-correction matrix as a random
convex combination of the XYZ-to-camera matrices of four real cameras (from their DNG
metadata), and BSRGAN runs a trained ISP network on the way back. We have neither the
matrices nor the network here, so the camera matrix is a random row-normalised matrix
near the identity (off-diagonal entries uniform in [-0.25, 0.25] before normalising), and
the forward pipeline is the exact inverse of the unprocessing with the same parameters.
Without noise the round trip therefore returns the input wherever the colour is locally
constant (demosaicing interpolates the two colours a pixel did not sample, so colour edges
soften a little, as in a real camera), and the high-resolution target needs no matching
colour change.

Images here are (B, 3, H, W) in [0, 1].
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

GAMMA = 2.2


@dataclass
class CameraParams:
    """One draw of the camera model (see the module docstring for the ranges)."""

    rgb2cam: torch.Tensor  # (3, 3), rows sum to 1
    red_gain: float
    blue_gain: float
    digital_gain: float  # the image is divided by it when unprocessing
    shot: float  # shot-noise variance per unit signal (raw scale)
    read: float  # read-noise variance (raw scale)


def draw_camera(generator: torch.Generator) -> CameraParams:
    """Draw the colour matrix, gains and noise levels of one simulated camera."""
    u = torch.rand(9, generator=generator, dtype=torch.float64)
    off = (u.view(3, 3) * 0.5 - 0.25) * (1 - torch.eye(3, dtype=torch.float64))
    matrix = torch.eye(3, dtype=torch.float64) + off
    matrix = matrix / matrix.sum(dim=1, keepdim=True)
    r = torch.rand(4, generator=generator, dtype=torch.float64).tolist()
    normal = torch.randn(2, generator=generator, dtype=torch.float64).tolist()
    log_shot = math.log(1e-4) + r[2] * (math.log(0.012) - math.log(1e-4))
    log_read = 2.18 * log_shot + 1.20 + 0.26 * normal[1]
    return CameraParams(
        rgb2cam=matrix.float(),
        red_gain=1.9 + 0.5 * r[0],
        blue_gain=1.5 + 0.4 * r[1],
        digital_gain=1.0 / max(0.8 + 0.1 * normal[0], 0.1),
        shot=math.exp(log_shot),
        read=math.exp(log_read),
    )


def smoothstep(x: torch.Tensor) -> torch.Tensor:
    """The global tone curve 3x^2 - 2x^3 of Brooks et al. (Sec. 3.1)."""
    return 3 * x**2 - 2 * x**3


def inverse_smoothstep(y: torch.Tensor) -> torch.Tensor:
    """The inverse of :func:`smoothstep` on [0, 1]: 1/2 - sin(asin(1 - 2y) / 3)."""
    y = y.clamp(0.0, 1.0)
    return 0.5 - torch.sin(torch.asin(1.0 - 2.0 * y) / 3.0)


def bayer_masks(h: int, w: int, device: torch.device | None = None) -> torch.Tensor:
    """(3, H, W) 0/1 masks of an RGGB Bayer pattern: red at (even, even), blue at (odd, odd)."""
    yy = torch.arange(h, device=device)[:, None] % 2
    xx = torch.arange(w, device=device)[None, :] % 2
    red = (yy == 0) & (xx == 0)
    blue = (yy == 1) & (xx == 1)
    green = ~(red | blue)
    return torch.stack([red, green, blue]).float()


def mosaic(x: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) -> (B, 1, H, W): each pixel keeps only its Bayer colour."""
    masks = bayer_masks(x.shape[-2], x.shape[-1], x.device)
    return (x * masks).sum(dim=1, keepdim=True)


def demosaic(raw: torch.Tensor) -> torch.Tensor:
    """Bilinear demosaicing of an RGGB mosaic (B, 1, H, W) -> (B, 3, H, W).

    Known samples are kept; missing ones are the mean of the nearest samples of that colour
    (the classic kernels: [[0,1,0],[1,4,1],[0,1,0]]/4 for green, [[1,2,1],[2,4,2],[1,2,1]]/4
    for red and blue, normalised by the mask so borders stay unbiased).
    """
    masks = bayer_masks(raw.shape[-2], raw.shape[-1], raw.device)[None]  # (1, 3, H, W)
    g = torch.tensor([[0.0, 1, 0], [1, 4, 1], [0, 1, 0]]) / 4
    rb = torch.tensor([[1.0, 2, 1], [2, 4, 2], [1, 2, 1]]) / 4
    kernels = torch.stack([rb, g, rb])[:, None].to(raw)  # (3, 1, 3, 3)
    sampled = F.pad(raw * masks, (1, 1, 1, 1), mode="constant")
    weight = F.pad(masks.expand_as(sampled[:, :, 1:-1, 1:-1]), (1, 1, 1, 1), mode="constant")
    num = F.conv2d(sampled, kernels, groups=3)
    den = F.conv2d(weight, kernels, groups=3)
    return num / den.clamp_min(1e-8)


def unprocess(srgb: torch.Tensor, cam: CameraParams) -> torch.Tensor:
    """sRGB (B, 3, H, W) in [0, 1] -> camera RGB before white balance (not yet mosaicked)."""
    x = inverse_smoothstep(srgb)
    x = x.clamp_min(1e-8) ** GAMMA
    x = torch.einsum("ij,bjhw->bihw", cam.rgb2cam.to(x), x)
    gains = torch.tensor([cam.red_gain, 1.0, cam.blue_gain]).to(x).view(1, 3, 1, 1) * cam.digital_gain
    return x / gains


def process(camera_rgb: torch.Tensor, cam: CameraParams) -> torch.Tensor:
    """The forward camera pipeline, the exact inverse of :func:`unprocess`: -> sRGB in [0, 1]."""
    gains = torch.tensor([cam.red_gain, 1.0, cam.blue_gain]).to(camera_rgb).view(1, 3, 1, 1) * cam.digital_gain
    x = (camera_rgb * gains).clamp(0.0, 1.0)
    x = torch.einsum("ij,bjhw->bihw", torch.linalg.inv(cam.rgb2cam.double()).to(x), x).clamp(0.0, 1.0)
    x = x.clamp_min(1e-8) ** (1.0 / GAMMA)
    return smoothstep(x).clamp(0.0, 1.0)


def camera_sensor_noise(srgb: torch.Tensor, cam: CameraParams, generator: torch.Generator) -> torch.Tensor:
    """Unprocess, mosaic, add shot and read noise on the raw values, demosaic and process.

    Args:
        srgb: (B, 3, H, W) in [0, 1].
        cam: a :func:`draw_camera` draw.
    Returns:
        (B, 3, H, W) in [0, 1].
    """
    raw = mosaic(unprocess(srgb, cam))
    variance = cam.shot * raw.clamp_min(0.0) + cam.read
    noise = torch.randn(raw.shape, generator=generator).to(raw)
    return process(demosaic(raw + variance.sqrt() * noise), cam)
