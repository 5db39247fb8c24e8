"""Quality figures of the bipartite-latent manipulations (issue 4); prints one JSON object.

    PYTHONPATH=src python benchmarks/manipulations.py [--model shapes] [--steps 50] [--n 20] [--refine R]
        [--size 128] [--compare-size 64] [--upsampler-steps K] [--emoji-n 10] [--json-out FILE]

* reconstruction: mean PSNR of DDIM inversion + eta-0 decoding over the first ``--n``
  shapes test images at the decoder's resolution;
* variations: for single-object test images, the fraction of variations whose scored
  colour / shape match the input's, and the mean shift of centre and extent, per eta;
* text diff: "a red circle" -> "a blue circle" on red-circle test images, the fraction of
  frames scored blue (and still a circle) per theta;
* cascade reconstruction (needs upsampler stages up to ``--size``): inversion through the
  decoder and the upsamplers (:func:`unclip.manipulate.invert` with ``size``), PSNR per source at the
  decoder's side, at ``--size`` and at ``--compare-size`` (both the reconstruction at
  ``--size`` and the original downsampled with antialiased bilinear resizing), beside two
  baselines that keep the decoder's reconstruction but not the stages' inverted noise: the
  model's ordinary upsampling (``UnCLIP.upsample_to``, seed 0) and plain bicubic resizing.
  Sources: the first ``--n`` shapes test images (rendered at ``--size``); the photos and
  pictures in matplotlib's sample data (MPL_SAMPLE_IMAGES: every .jpg/.png there); and, if
  the emoji extra is installed, the first ``--emoji-n`` emoji test images. Outside images
  are centre-cropped and resized to ``--size`` and from that to every lower side.

The lead's full run on the shipped model (CPU, slow):

    PYTHONPATH=src python benchmarks/manipulations.py --model shapes --n 20 --steps 50 --size 128 \\
        --json-out benchmarks/results/manipulations.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch
import torch.nn.functional as F

from unclip.data.shapes import render_batch
from unclip.errors import DataError
from unclip.eval.shapes_scorer import score_images
from unclip.manipulate import as_image_tensor, invert, reconstruct, text_diff, theta_schedule, vary
from unclip.pipeline import UnCLIP
from unclip.storage.checkpoint import atomic_write_json

# matplotlib's sample pictures (mpl-data/sample_data); the benchmark uses every one present
MPL_SAMPLE_IMAGES = ("grace_hopper.jpg", "Minduka_Present_Blue_Pack.png", "logo2.png")


def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """PSNR in dB of images in [-1, 1] (peak-to-peak 2): (B,)."""
    mse = ((a.float().cpu() - b.float().cpu()) / 2).pow(2).flatten(1).mean(1).clamp_min(1e-12)
    return 10 * torch.log10(1 / mse)


def single_objects(size: int, count: int, want=None, limit: int = 4000) -> tuple[torch.Tensor, list[dict]]:
    images, attrs = [], []
    for start in range(0, limit, 200):
        x, _, at = render_batch("test", start, 200, size=size)
        for i, a in enumerate(at):
            objs = a["objects"]
            if len(objs) == 1 and (want is None or (objs[0]["color"], objs[0]["shape"]) == want):
                images.append(x[i])
                attrs.append(objs[0])
                if len(images) == count:
                    return torch.stack(images), attrs
    return torch.stack(images), attrs


def matplotlib_images(size: int) -> tuple[torch.Tensor | None, list[str], str]:
    """The sample pictures shipped with matplotlib, centre-cropped and resized to ``size``:
    ((B, 3, size, size), names, note)."""
    try:
        from matplotlib import cbook
    except ImportError:
        return None, [], "matplotlib is not installed"
    from PIL import Image

    pics, names = [], []
    for name in MPL_SAMPLE_IMAGES:
        try:
            path = cbook.get_sample_data(name, asfileobj=False)
            with Image.open(path) as im:
                im.load()
                pics.append(im.copy())  # transparent pictures are composited onto white by as_image_tensor
            names.append(name)
        except (OSError, ValueError):
            continue
    if not pics:
        return None, [], "no sample pictures found in matplotlib's sample data"
    return as_image_tensor(pics, size), names, ""


def emoji_images(size: int, count: int) -> tuple[torch.Tensor | None, list[str], str]:
    """The first ``count`` emoji test images at ``size`` px, if the emoji extra is installed."""
    if count < 1:
        return None, [], "skipped (--emoji-n 0)"
    try:
        from unclip.data import get_dataset

        ds = get_dataset("emoji", split="test", size=size, length=count)
        items = [ds[i] for i in range(len(ds))]
    except (DataError, ImportError) as exc:
        return None, [], f"emoji extra not available ({exc})"
    return torch.stack([it["image"] for it in items]).clamp(-1, 1), [it["caption"] for it in items], ""


def _stats(p: torch.Tensor) -> dict:
    return {"mean": round(float(p.mean()), 2), "min": round(float(p.min()), 2)}


def cascade_figures(pipe: UnCLIP, x: torch.Tensor, args: argparse.Namespace, names: list[str] | None = None) -> dict:
    """Invert ``x`` (B, 3, size, size) through the cascade and compare reconstructions and baselines."""
    t = time.perf_counter()
    dec_side, size, cmp = pipe.decoder.config.image_size, args.size, args.compare_size
    down = lambda im, side: as_image_tensor(im, side)  # noqa: E731 - antialiased bilinear
    rows: dict[str, list[torch.Tensor]] = {}
    for start in range(0, x.shape[0], args.batch):
        xb = x[start : start + args.batch]
        lat = invert(
            pipe,
            xb,
            size=size,
            steps=args.steps,
            upsampler_steps=args.upsampler_steps,
            refine=args.refine,
            condition=args.condition,
            stage_inversion=args.stage_inversion,
        )
        levels = reconstruct(pipe, lat, return_levels=True)
        rec, dec = levels[-1].cpu(), levels[0]
        fresh = pipe.upsample_to(dec, size, seed=0).cpu()
        bicubic = F.interpolate(dec.cpu(), size=(size, size), mode="bicubic", align_corners=False).clamp(-1, 1)
        got = {
            f"decoder_{dec_side}px": psnr(dec, down(xb, dec_side)),
            f"cascade_{size}px": psnr(rec, xb),
            f"upsample_to_fresh_noise_{size}px": psnr(fresh, xb),
            f"bicubic_{size}px": psnr(bicubic, xb),
        }
        if cmp and cmp < size:
            ref = down(xb, cmp)
            got.update(
                {
                    f"cascade_at_{cmp}px": psnr(down(rec, cmp), ref),
                    f"upsample_to_fresh_noise_at_{cmp}px": psnr(down(fresh, cmp), ref),
                    f"bicubic_at_{cmp}px": psnr(down(bicubic, cmp), ref),
                }
            )
        for k, v in got.items():
            rows.setdefault(k, []).append(v)
    cat = {k: torch.cat(v) for k, v in rows.items()}
    out = {
        "images": int(x.shape[0]),
        "psnr_db": {k: _stats(v) for k, v in cat.items()},
        "seconds": round(time.perf_counter() - t, 1),
    }
    if names is not None:
        out["per_image_psnr_db"] = {
            f"{i:02d} {n}": {k: round(float(v[i]), 2) for k, v in cat.items()} for i, n in enumerate(names)
        }
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="shapes")
    ap.add_argument("--steps", type=int, default=50, help="DDIM steps for inversion and decoding")
    ap.add_argument("--refine", type=int, default=0)
    ap.add_argument("--n", type=int, default=20, help="images for the reconstruction PSNR")
    ap.add_argument("--vary-images", type=int, default=6)
    ap.add_argument("--vary-n", type=int, default=4)
    ap.add_argument("--textdiff-images", type=int, default=4)
    ap.add_argument(
        "--size",
        type=int,
        default=None,
        help="top side of the cascade reconstruction (default: the model's largest output side)",
    )
    ap.add_argument(
        "--compare-size",
        type=int,
        default=64,
        help="also compare cascade reconstructions downsampled to this side (default: 64)",
    )
    ap.add_argument(
        "--upsampler-steps", type=int, default=None, help="DDIM steps per upsampler stage (default: each stage's own)"
    )
    ap.add_argument(
        "--condition",
        default="decoded",
        choices=["decoded", "input"],
        help=(
            "what conditions each upsampler stage's inversion: the reconstruction one level down (default) or the "
            "resized input"
        ),
    )
    ap.add_argument(
        "--stage-inversion",
        default="edict",
        choices=["edict", "ddim"],
        help="how the upsampler stages are inverted in the cascade part (default: edict, as `unclip invert`)",
    )
    ap.add_argument("--emoji-n", type=int, default=10, help="emoji test images among the outside images (0: none)")
    ap.add_argument("--batch", type=int, default=10, help="images per inversion batch in the cascade part")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--skip", default="", help="comma-separated parts to skip: recon,vary,textdiff,cascade,outside")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json-out", default=None, metavar="FILE", help="also write the JSON object to FILE")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    skip = set(filter(None, args.skip.split(",")))
    pipe = UnCLIP.load(args.model, device=args.device)
    size = pipe.decoder.config.image_size
    args.size = args.size or max(pipe.output_sizes)
    out: dict = {
        "model": args.model,
        "decoder_size_px": size,
        "steps": args.steps,
        "refine": args.refine,
        "guidance": 1.0,
    }
    if "recon" not in skip:
        t = time.perf_counter()
        x, _, _ = render_batch("test", 0, args.n, size=size)
        lat = invert(pipe, x, steps=args.steps, refine=args.refine)
        p = psnr(reconstruct(pipe, lat), x)
        out["reconstruction"] = {
            "images": args.n,
            "mean_psnr_db": round(float(p.mean()), 2),
            "min_psnr_db": round(float(p.min()), 2),
            "seconds": round(time.perf_counter() - t, 1),
        }
        print(json.dumps(out["reconstruction"]), file=sys.stderr, flush=True)
    if "vary" not in skip:
        x, truth = single_objects(size, args.vary_images)
        lat = invert(pipe, x, steps=args.steps, refine=args.refine)
        rows = {}
        for eta in (0.0, 0.25, 0.5, 0.75, 1.0):
            imgs = vary(pipe, lat, eta=eta, n=args.vary_n, seed=0)
            scores = score_images(imgs)
            col = shp = 0
            dc, de = [], []
            for k, s in enumerate(scores):
                o, m = truth[k // args.vary_n], s.main
                if m is None:
                    continue
                col += m.color == o["color"]
                shp += m.shape == o["shape"]
                dc.append(((m.center[0] - o["center"][0]) ** 2 + (m.center[1] - o["center"][1]) ** 2) ** 0.5)
                de.append(abs(m.extent - o["extent"]))
            total = len(scores)
            rows[str(eta)] = {
                "colour_kept": round(col / total, 3),
                "shape_kept": round(shp / total, 3),
                "mean_centre_shift": round(sum(dc) / max(len(dc), 1), 4),
                "mean_extent_change": round(sum(de) / max(len(de), 1), 4),
                "images": total,
            }
            print(eta, json.dumps(rows[str(eta)]), file=sys.stderr, flush=True)
        out["variations"] = rows
    if "textdiff" not in skip:
        x, _ = single_objects(size, args.textdiff_images, want=("red", "circle"))
        thetas = theta_schedule(5, 0.5).tolist()
        blue = [0] * len(thetas)
        circle = [0] * len(thetas)
        for i in range(x.shape[0]):
            frames = text_diff(
                pipe,
                x[i],
                "a red circle",
                "a blue circle",
                max_theta=0.5,
                frames=5,
                steps=args.steps,
                refine=args.refine,
            )
            for j, s in enumerate(score_images(frames)):
                blue[j] += bool(s.main and s.main.color == "blue")
                circle[j] += bool(s.main and s.main.shape == "circle")
        out["text_diff"] = {
            "from": "a red circle",
            "to": "a blue circle",
            "images": int(x.shape[0]),
            "per_theta": {
                f"{t:.3f}": {"fraction_blue": round(b / x.shape[0], 3), "fraction_circle": round(c / x.shape[0], 3)}
                for t, b, c in zip(thetas, blue, circle)
            },
        }
    if args.size > size and not {"cascade", "outside"} <= skip:
        chain = pipe.stage_chain(args.size)
        info: dict = {
            "size_px": args.size,
            "compare_size_px": args.compare_size,
            "condition": args.condition,
            "stage_inversion": args.stage_inversion,
            "upsampler_steps": args.upsampler_steps or [st.steps for st in chain],
            "sources": {},
        }
        if "cascade" not in skip:
            x, _, _ = render_batch("test", 0, args.n, size=args.size)
            info["sources"]["shapes_test"] = cascade_figures(pipe, x, args)
            print("shapes_test", json.dumps(info["sources"]["shapes_test"]["psnr_db"]), file=sys.stderr, flush=True)
        if "outside" not in skip:
            for source, (x, names, note) in (
                ("matplotlib_sample_data", matplotlib_images(args.size)),
                ("emoji_test", emoji_images(args.size, args.emoji_n)),
            ):
                info["sources"][source] = cascade_figures(pipe, x, args, names) if x is not None else {"skipped": note}
                print(source, json.dumps(info["sources"][source].get("psnr_db", note)), file=sys.stderr, flush=True)
        out["cascade_reconstruction"] = info
    elif args.size <= size:
        out["cascade_reconstruction"] = {
            "skipped": f"--size {args.size} is the decoder's side; the model's sizes are {pipe.output_sizes}"
        }
    print(json.dumps(out, indent=2))
    if args.json_out:
        atomic_write_json(args.json_out, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
