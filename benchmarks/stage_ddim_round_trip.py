"""DDIM round trip of the upsampler stage alone, conditioned on the resized input (issue 16, item 6).

    PYTHONPATH=src python benchmarks/stage_ddim_round_trip.py 27:0:2e-3 27:2:2e-3 100:0:2e-3 27:2:0.05

Each argument is STEPS:REFINE:MIN_ALPHA_BAR; prints the mean, min and per-image PSNR at 128 px
on the committed outside images. Measured: 23.0-23.5 dB for all four, so neither steps,
refinement nor the noise level fixes the DDIM inversion of this stage.
"""

import sys
import time
from pathlib import Path

import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from unclip.diffusion import ddim_invert, ddim_sample
from unclip.manipulate.invert import _stage_fn, as_image_tensor, manipulation_diffusion
from unclip.pipeline import UnCLIP
from upsampler_quality import psnr

torch.set_num_threads(2)
pipe = UnCLIP.load("shapes")
paths = sorted((Path(__file__).resolve().parent / "outside_images").glob("*.png"))
imgs = [Image.open(p).convert("RGB") for p in paths]
x128 = as_image_tensor(imgs, 128)
x32 = as_image_tensor(x128, 32)
stage = pipe.stage_chain(128)[0]
fn = _stage_fn(stage, x32)
for steps, refine, mab in [(int(a), int(b), float(c)) for a, b, c in (s.split(":") for s in sys.argv[1:])]:
    d = manipulation_diffusion(stage.settings.make(), steps, mab)
    t0 = time.time()
    noise = ddim_invert(fn, d, x128, refine=refine)
    rec = ddim_sample(fn, d, noise).clamp(-1, 1)
    p = psnr(rec, x128)
    print(
        steps,
        refine,
        mab,
        "mean %.2f min %.2f" % (p.mean(), p.min()),
        [round(float(v), 1) for v in p],
        "%.1fs" % (time.time() - t0),
        flush=True,
    )
