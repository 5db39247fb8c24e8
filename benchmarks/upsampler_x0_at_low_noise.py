"""How much of a near-clean outside image the shipped upsampler's x0 prediction keeps (issue 16, item 6).

    PYTHONPATH=src python benchmarks/upsampler_x0_at_low_noise.py

Prints the PSNR of bicubic, then per timestep t the noise sigma and the PSNR of the stage's
x0 prediction against the 128 px input: 22.0 dB at t=0 (sigma 0.006) on the committed
outside images, so DDIM's last step cannot return their detail.
"""

import sys
from pathlib import Path

import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from unclip.manipulate.invert import _stage_fn, as_image_tensor
from unclip.pipeline import UnCLIP
from upsampler_quality import psnr

torch.set_num_threads(2)
pipe = UnCLIP.load("shapes")
paths = sorted((Path(__file__).resolve().parent / "outside_images").glob("*.png"))
x128 = as_image_tensor([Image.open(p).convert("RGB") for p in paths], 128)
x32 = as_image_tensor(x128, 32)
stage = pipe.stage_chain(128)[0]
fn = _stage_fn(stage, x32)
d = stage.settings.make()
g = torch.Generator().manual_seed(0)
import torch.nn.functional as F

bic = F.interpolate(x32, size=128, mode="bicubic", align_corners=False).clamp(-1, 1)
print("bicubic", psnr(bic, x128).mean().item())
with torch.no_grad():
    for t in [0, 5, 20, 50, 100, 200, 400]:
        ab = float(d.alphas_cumprod[t])
        e = torch.randn(x128.shape, generator=g)
        xt = ab**0.5 * x128 + (1 - ab) ** 0.5 * e
        x0 = fn(xt, torch.full((8,), t))
        print(t, "sigma %.4f" % ((1 - ab) ** 0.5), "psnr x0hat %.2f" % psnr(x0.clamp(-1, 1), x128).mean().item())
