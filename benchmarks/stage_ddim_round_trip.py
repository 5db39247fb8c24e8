"""DDIM round trip of the upsampler stage alone, conditioned on the resized input (issue 16, item 6).

    PYTHONPATH=src python benchmarks/stage_ddim_round_trip.py 27:0:2e-3 27:2:2e-3 100:0:2e-3 27:2:0.05

Each argument is STEPS:REFINE:MIN_ALPHA_BAR; prints the mean, min and per-image PSNR at 128 px
on the committed outside images. Measured: 23.0-23.5 dB for all four, so neither steps,
refinement nor the noise level fixes the DDIM inversion of this stage.
"""

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from outside_stage_case import outside_stage_case
from unclip.diffusion import ddim_invert, ddim_sample
from unclip.manipulate.invert import manipulation_diffusion
from upsampler_quality import psnr

x128, x32, stage, fn = outside_stage_case()
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
