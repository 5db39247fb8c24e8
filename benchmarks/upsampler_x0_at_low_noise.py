"""How much of a near-clean outside image the shipped upsampler's x0 prediction keeps (issue 16, item 6).

    PYTHONPATH=src python benchmarks/upsampler_x0_at_low_noise.py

Prints the PSNR of bicubic, then per timestep t the noise sigma and the PSNR of the stage's
x0 prediction against the 128 px input: 22.0 dB at t=0 (sigma 0.006) on the committed
outside images, so DDIM's last step cannot return their detail.
"""

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from outside_stage_case import outside_stage_case
from unclip.upsampler.degradations import resize
from upsampler_quality import psnr

x128, x32, stage, fn = outside_stage_case()
d = stage.settings.make()
g = torch.Generator().manual_seed(0)
bic = resize(x32, 128, "bicubic").clamp(-1, 1)
print("bicubic", psnr(bic, x128).mean().item())
with torch.no_grad():
    for t in [0, 5, 20, 50, 100, 200, 400]:
        ab = float(d.alphas_cumprod[t])
        e = torch.randn(x128.shape, generator=g)
        xt = ab**0.5 * x128 + (1 - ab) ** 0.5 * e
        x0 = fn(xt, torch.full((x128.shape[0],), t))
        print(t, "sigma %.4f" % ((1 - ab) ** 0.5), "psnr x0hat %.2f" % psnr(x0.clamp(-1, 1), x128).mean().item())
