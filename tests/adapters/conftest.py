"""Fixtures: tiny random diffusers unCLIP (Karlo-layout) directories, built once per session (see karlo_tiny.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

diffusers = pytest.importorskip("diffusers")
transformers = pytest.importorskip("transformers")

from karlo_tiny import build_image_variation, build_text_to_image

# Output scale of the decoder in the manipulation tests. DDIM inversion is exact only as far as
# eps stays the same along a step (unCLIP section 3.1; unclip.diffusion.ddim_invert); a
# trained denoiser's eps does, a randomly initialised UNet's does not: it changes with x and t
# as an arbitrary function, and its inversion reconstructs nothing (measured: 5 dB PSNR at 25
# steps). Scaling its output layer by 0.01 makes eps vary along the path about as little as a
# trained model's, while still depending on z_i and the caption (decoding the inverted noise
# under another z_i: 30 dB, against 42 dB under the right one).
INVERTIBLE_SCALE = 0.01


@pytest.fixture(scope="session")
def karlo_dirs(tmp_path_factory) -> dict:
    """{"t2i": dir, "variations": dir, "pipe": the reference UnCLIPPipeline, "var_pipe": ...}, built once."""
    root = tmp_path_factory.mktemp("karlo")
    t2i = build_text_to_image(root)
    var = build_image_variation(t2i)
    t2i.save_pretrained(str(root / "karlo-v1-alpha"))
    var.save_pretrained(str(root / "karlo-v1-alpha-image-variations"))
    return {
        "t2i": root / "karlo-v1-alpha",
        "variations": root / "karlo-v1-alpha-image-variations",
        "pipe": t2i,
        "var_pipe": var,
    }


@pytest.fixture(scope="session")
def karlo_pipe(karlo_dirs):
    """Our KarloUnCLIP over the tiny text-to-image directory plus the variations directory's image encoder."""
    from unclip import UnCLIP

    return UnCLIP.load(karlo_dirs["t2i"], image_encoder_from=karlo_dirs["variations"])


@pytest.fixture(scope="session")
def karlo_invertible_dir(karlo_dirs, tmp_path_factory) -> Path:
    """The tiny text-to-image directory with the decoder's output layer scaled by INVERTIBLE_SCALE."""
    import copy

    from diffusers import UnCLIPPipeline

    ref = karlo_dirs["pipe"]
    decoder_net = copy.deepcopy(ref.decoder)
    with torch.no_grad():
        decoder_net.conv_out.weight.mul_(INVERTIBLE_SCALE)
        decoder_net.conv_out.bias.mul_(INVERTIBLE_SCALE)
    out = tmp_path_factory.mktemp("karlo_invertible") / "karlo-v1-alpha"
    UnCLIPPipeline(**{**ref.components, "decoder": decoder_net}).save_pretrained(str(out))
    return out
