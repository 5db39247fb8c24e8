"""The shared set-up of the two upsampler-inversion diagnoses (issue 16, item 6): the committed
outside images at 128 px and 32 px, and the shipped 32 -> 128 stage as a denoiser conditioned
on the 32 px images."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import torch
from PIL import Image

from unclip.manipulate.invert import _stage_fn, as_image_tensor
from unclip.pipeline import UnCLIP

OUTSIDE_IMAGES = Path(__file__).resolve().parent / "outside_images"


def outside_stage_case(model: str = "shapes") -> tuple[torch.Tensor, torch.Tensor, Any, Callable]:
    """(images at 128 px, the same at 32 px, the model's first upsampler stage, its denoiser fn)."""
    torch.set_num_threads(2)
    pipe = UnCLIP.load(model)
    paths = sorted(OUTSIDE_IMAGES.glob("*.png"))
    x128 = as_image_tensor([Image.open(p).convert("RGB") for p in paths], 128)
    x32 = as_image_tensor(x128, 32)
    stage = pipe.stage_chain(128)[0]
    return x128, x32, stage, _stage_fn(stage, x32)
