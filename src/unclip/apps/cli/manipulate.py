"""Command-line front end of the manipulations: ``unclip invert | vary | interpolate | textdiff | probe-pca``.

``unclip.apps.cli.main`` calls :func:`add_parsers` to register the commands and :func:`run` to run
one. Like the rest of the CLI this only parses, calls the library (:mod:`unclip.manipulate`,
:mod:`unclip.manipulate.probe`) and writes the standard outputs (NNN.png, grid.png, manifest.json).
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

from ...errors import InputError
from . import args as A
from .model_options import add_image_encoder_from, load_kwargs

COMMANDS = {"invert", "vary", "interpolate", "textdiff", "probe-pca"}

_LATENT_NOTE = (
    "IMAGE is a picture file (any size; centre-cropped and resized to the decoder's resolution) or a .safetensors "
    "bipartite latent written by `unclip invert`."
)
_EXACT_NOTE = (
    "Inversion is exact only when decoding uses the same steps and guidance as the inversion, so one --steps and "
    "--guidance serve both (guidance 1.0, no classifier-free guidance, inverts best). The decoder's caption is "
    "dropped, since an input image's caption is unknown."
)


def _add_size(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--size",
        type=A.SIZE,
        default=None,
        help=(
            "output side: the decoder's or a larger one reached by the model's upsampler stages (default: the "
            "model's default side, 128 for shapes; interpolate and textdiff upsample every frame with one shared "
            "noise, vary at --eta 0 inverts the stages too so the image comes back at that side)"
        ),
    )


def _common(p: argparse.ArgumentParser, *, steps: bool = True) -> None:
    p.add_argument(
        "--model",
        default="shapes",
        help=(
            "a shipped model name ('shapes'), a model directory written by `unclip train all`, or a diffusers unCLIP "
            "directory (Karlo; docs/karlo.md) (default: shapes)"
        ),
    )
    add_image_encoder_from(p)
    if steps:
        p.add_argument("--steps", type=A.STEPS, default=50, help="DDIM steps for inversion and decoding (default: 50)")
        p.add_argument(
            "--guidance",
            type=A.GUIDANCE,
            default=1.0,
            help="decoder classifier-free guidance scale for inversion and decoding (default: 1.0 = none)",
        )
        p.add_argument(
            "--refine",
            type=A.REFINE,
            default=2,  # manipulate.DEFAULT_REFINE (not imported here: the parser stays free of torch)
            help=(
                "fixed-point refinements per inversion step: more exact, (1 + R) model calls per step (default: 2; "
                "on outside images 22.5 dB at 0, 42.3 dB at 2 at the decoder's side, "
                "benchmarks/results/inversion_defaults.json)"
            ),
        )
    p.add_argument("--device", default="cpu", type=A.device, help="torch device, e.g. cpu or cuda (default: cpu)")


def add_parsers(sub: Any) -> None:
    """Register the manipulation commands on an argparse subparsers object."""
    fmt = argparse.RawDescriptionHelpFormatter
    p = sub.add_parser(
        "invert",
        help="image -> bipartite latent (z_i, x_T) as safetensors",
        formatter_class=fmt,
        description=(
            "Encode an image to its bipartite latent (unCLIP section 3): the CLIP image embedding z_i and the noise "
            "x_T that DDIM inversion of the decoder, conditioned on z_i, gives. Writes one .safetensors file "
            "(image_embed, noise; the steps and guidance in its metadata) that vary, interpolate and textdiff accept "
            "in place of an image.\n\n"
        )
        + _EXACT_NOTE,
    )
    p.add_argument("image", metavar="IMAGE", help="a picture file")
    p.add_argument("--out", required=True, help="the .safetensors file to write")
    p.add_argument(
        "--reconstruct",
        default=None,
        metavar="DIR",
        help=(
            "also decode the latent at eta 0 and write the reconstruction (NNN.png, grid.png, manifest.json with its "
            "PSNR) to DIR"
        ),
    )
    p.add_argument(
        "--size",
        type=A.SIZE,
        default=None,
        help=(
            "invert through the model's upsampler stages up to this side too (e.g. 128): the latent then also holds "
            "each stage's inverted noise, and --reconstruct decodes at this side (default: the decoder's side only)"
        ),
    )
    p.add_argument(
        "--stage-inversion",
        choices=("edict", "ddim"),
        default="edict",
        help=(
            "how the upsampler stages are inverted with --size: edict (default; exact coupled sequences, a noise "
            "pair per stage) or ddim (one noise per stage, exact only where the stage's network can reach the image)"
        ),
    )
    _common(p)

    p = sub.add_parser(
        "vary",
        help="variations of an image (DDIM with eta > 0 from its latent)",
        formatter_class=fmt,
        description=(
            "Decode an image's bipartite latent n times with DDIM at --eta (unCLIP section 3.1). eta 0 reconstructs "
            "the image; larger eta keeps what z_i holds (on shapes: colour and shape) and redraws more of the rest "
            "(position, size). Writes NNN.png, grid.png and manifest.json to --out.\n\n"
        )
        + _LATENT_NOTE
        + " "
        + _EXACT_NOTE,
    )
    p.add_argument("image", metavar="IMAGE", help="a picture file or a .safetensors latent")
    p.add_argument("--eta", type=A.ETA, default=1.0, help="DDIM eta: 0 = reconstruction, 1 = DDPM-like (default: 1.0)")
    p.add_argument("-n", type=A.IMAGES, default=4, help="number of variations (default: 4)")
    p.add_argument("--seed", type=A.seed, default=0, help="seed of the sampler's noise (default: 0)")
    p.add_argument("--out", required=True, help="output folder")
    _add_size(p)
    _common(p)

    p = sub.add_parser(
        "interpolate",
        help="slerp between two images' CLIP embeddings",
        formatter_class=fmt,
        description=(
            "Decode z_theta = slerp(z_a, z_b, theta) for --frames values of theta from 0 to 1 (unCLIP section 3.2). "
            "--noise slerp also slerps the two inverted noises x_T, so the end frames reconstruct the inputs; "
            "--noise fixed decodes every frame from one random x_T (from --seed), showing what z_i alone carries. "
            "Writes NNN.png, grid.png and manifest.json (theta per frame) to --out.\n\n"
        )
        + _LATENT_NOTE,
    )
    p.add_argument("image_a", metavar="IMAGE_A", help="first end (theta 0): a picture file or a .safetensors latent")
    p.add_argument("image_b", metavar="IMAGE_B", help="second end (theta 1)")
    p.add_argument("--frames", type=A.FRAMES, default=8, help="number of frames, both ends included (default: 8)")
    p.add_argument(
        "--noise",
        default="slerp",
        choices=["slerp", "fixed"],
        help="noise path: slerp of the inverted x_T (default) or one fixed random x_T",
    )
    p.add_argument("--seed", type=A.seed, default=0, help="seed of the fixed noise (default: 0)")
    p.add_argument("--out", required=True, help="output folder")
    _add_size(p)
    _common(p)

    p = sub.add_parser(
        "textdiff",
        help="edit an image towards a caption (text diff)",
        formatter_class=fmt,
        description=(
            "Move an image's z_i towards the text diff z_d = norm(z_t(--to) - z_t(--from)) (unCLIP section 3.3): "
            "z_theta = slerp(z_i, z_d, theta) for --frames values of theta from 0 to --max-theta, each decoded from "
            "the image's inverted x_T (theta 0 reconstructs the image). --from describes the current image; an empty "
            "string is neutral. Writes NNN.png, grid.png and manifest.json (theta per frame) to --out.\n\n"
        )
        + _LATENT_NOTE,
    )
    p.add_argument("image", metavar="IMAGE", help="a picture file or a .safetensors latent")
    p.add_argument(
        "--from",
        dest="from_text",
        required=True,
        metavar="TEXT",
        help="a caption of the current image, e.g. 'a red circle' ('' for neutral)",
    )
    p.add_argument(
        "--to", dest="to_text", required=True, metavar="TEXT", help="the target caption, e.g. 'a blue circle'"
    )
    p.add_argument(
        "--max-theta",
        type=A.THETA,
        default=None,
        help="largest slerp weight towards z_d (default: the model's text_diff_max_theta, 0.5 unless calibrated)",
    )
    p.add_argument(
        "--frames", type=A.FRAMES, default=5, help="number of frames from theta 0 to --max-theta (default: 5)"
    )
    p.add_argument("--out", required=True, help="output folder")
    _add_size(p)
    _common(p)

    p = sub.add_parser(
        "probe-pca",
        help="decode an image's z_i from its first k principal components",
        formatter_class=fmt,
        description=(
            "Fit PCA on the CLIP image embeddings of a data split, reconstruct the image's z_i from its first k "
            "components for each k in --dims, and decode each (and the full z_i, last) from one fixed random x_T "
            "(unCLIP section 3.4, Figure 7). The manifest also reports how many components keep the mean relative "
            "reconstruction error of the split's embeddings under 1%%. Writes NNN.png, grid.png and manifest.json to "
            "--out."
        ),
    )
    p.add_argument("image", metavar="IMAGE", help="a picture file")
    p.add_argument(
        "--dims", default="2,4,8,16,32,64", help="comma-separated numbers of components (default: 2,4,8,16,32,64)"
    )
    p.add_argument(
        "--data",
        default="shapes",
        help=(
            "data set whose embeddings the PCA is fitted on: 'shapes', 'emoji' or a folder of images (default: shapes)"
        ),
    )
    p.add_argument(
        "--split", default="train", choices=["train", "val", "test"], help="split to fit on (default: train)"
    )
    p.add_argument("--fit-n", type=A.FIT_N, default=1000, help="number of images to fit on (default: 1000)")
    p.add_argument("--seed", type=A.seed, default=0, help="seed of the fixed noise and of the data (default: 0)")
    p.add_argument("--steps", type=A.STEPS, default=50, help="DDIM steps (default: 50)")
    p.add_argument("--guidance", type=A.GUIDANCE, default=None, help="decoder guidance scale (default: the model's)")
    p.add_argument("--out", required=True, help="output folder")
    _common(p, steps=False)


def _open_image(path: str):
    from PIL import Image, UnidentifiedImageError

    p = Path(path)
    if not p.is_file():
        raise InputError(f"image file not found: {path}")
    try:
        with Image.open(p) as im:
            im.load()
            return im.copy()
    except Image.DecompressionBombError as exc:
        limit = Image.MAX_IMAGE_PIXELS
        raise InputError(
            f"{path} is too large to decode safely ({exc}); pass an image of at most {limit} pixels"
        ) from exc
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise InputError(
            f"could not read {path} as an image ({exc}); pass a PNG or JPEG, or a .safetensors latent from `unclip "
            "invert`"
        ) from exc


def _input(path: str, pipe=None):
    """A picture file -> PIL image; a .safetensors file -> BipartiteLatent (checked against ``pipe``'s model)."""
    from ...manipulate import BipartiteLatent
    from ...manipulate.latent_checks import check_latent_fits

    if str(path).endswith(".safetensors"):
        lat = BipartiteLatent.load(path)
        if len(lat) != 1:
            raise InputError(f"{path} holds the latents of {len(lat)} images; pass the latent of one image")
        if pipe is not None:
            check_latent_fits(lat, pipe.clip.embed_dim, pipe.decoder.config.image_size, str(path))
        return lat
    return _open_image(path)


def _settings(args: argparse.Namespace, *names: str) -> dict[str, Any]:
    return {k: getattr(args, k) for k in names if hasattr(args, k)}


def run(args: argparse.Namespace) -> int:
    """Run one manipulation command; returns the exit status."""
    from ... import manipulate as M
    from ...pipeline import UnCLIP
    from ...storage.imageio import tensor_to_pil, write_image_set

    if args.command not in COMMANDS:
        raise InputError(f"unknown manipulation command {args.command!r}")
    pipe = UnCLIP.load(args.model, device=args.device, **load_kwargs(args))
    inv = dict(steps=args.steps, guidance=args.guidance, refine=args.refine) if args.command != "probe-pca" else {}
    meta: dict[str, Any] = {"command": args.command, "model": str(args.model)}
    if args.command == "invert":
        image = _open_image(args.image)
        lat = M.invert(pipe, image, size=args.size, stage_inversion=args.stage_inversion, progress=True, **inv)
        lat.model = str(args.model)
        lat.save(args.out)
        kind = " pair (EDICT)" if lat.stage_partners else ""
        stages = "".join(f", stage {k} noise{kind} {tuple(z.shape)}" for k, z in enumerate(lat.stage_noises))
        print(
            f"wrote the bipartite latent of {args.image} to {args.out} (z_i {tuple(lat.image_embed.shape)}, x_T "
            f"{tuple(lat.noise.shape)}{stages}; {lat.steps} steps, guidance {lat.guidance})"
        )
        if args.reconstruct:
            x = M.as_image_tensor(image, lat.size)
            rec = M.reconstruct(pipe, lat).cpu()
            mse = float(((rec - x) / 2).pow(2).mean())
            psnr = 10.0 * math.log10(1.0 / max(mse, 1e-12))
            meta["settings"] = {
                **_settings(args, "steps", "guidance", "refine", "stage_inversion"),
                "size": int(rec.shape[-1]),
            }
            write_image_set(
                args.reconstruct, tensor_to_pil(rec), [{"source": args.image, "psnr_db": round(psnr, 2)}], meta
            )
            print(f"reconstruction PSNR {psnr:.2f} dB, written to {args.reconstruct}")
        return 0
    if args.command == "vary":
        size = pipe.resolve_size(args.size)
        images = M.vary(
            pipe, _input(args.image, pipe), eta=args.eta, n=args.n, seed=args.seed, size=size, progress=True, **inv
        )
        entries = [
            {"source": args.image, "eta": args.eta, "seed": args.seed, "index": k} for k in range(images.shape[0])
        ]
        meta["settings"] = _settings(args, "eta", "n", "seed", "steps", "guidance", "refine")
    elif args.command == "interpolate":
        images = M.interpolate(
            pipe,
            _input(args.image_a, pipe),
            _input(args.image_b, pipe),
            frames=args.frames,
            noise=args.noise,
            seed=args.seed,
            progress=True,
            **inv,
        )
        thetas = M.theta_schedule(args.frames).tolist()
        entries = [
            {"theta": round(t, 6), "sources": [args.image_a, args.image_b], "noise": args.noise, "seed": args.seed}
            for t in thetas
        ]
        meta["settings"] = _settings(args, "frames", "noise", "seed", "steps", "guidance", "refine")
    elif args.command == "textdiff":
        if args.max_theta is None:
            args.max_theta = pipe.defaults.text_diff_max_theta
        images = M.text_diff(
            pipe,
            _input(args.image, pipe),
            args.from_text,
            args.to_text,
            max_theta=args.max_theta,
            frames=args.frames,
            progress=True,
            **inv,
        )
        thetas = M.theta_schedule(args.frames, args.max_theta).tolist()
        entries = [
            {"theta": round(t, 6), "source": args.image, "prompt": args.to_text, "from": args.from_text} for t in thetas
        ]
        meta["settings"] = _settings(args, "from_text", "to_text", "max_theta", "frames", "steps", "guidance", "refine")
    else:
        try:
            dims = [int(d) for d in str(args.dims).split(",") if d.strip()]
        except ValueError as exc:
            raise InputError(f"--dims must be comma-separated integers like 2,4,8, got {args.dims!r}") from exc
        images, info = M.probe_pca(
            pipe,
            _open_image(args.image),
            dims,
            data=args.data,
            split=args.split,
            fit_n=args.fit_n,
            seed=args.seed,
            steps=args.steps,
            guidance=args.guidance,
            progress=True,
        )
        entries = [
            {"components": k, "relative_error": e, "source": args.image}
            for k, e in zip(info["dims"], info["relative_error"])
        ] + [{"components": "all", "relative_error": 0.0, "source": args.image}]
        meta["settings"] = _settings(args, "dims", "data", "split", "fit_n", "seed", "steps", "guidance")
        meta["settings"]["guidance"] = pipe.defaults.decoder_guidance if args.guidance is None else args.guidance
        meta["components_for_1pct"] = info["components_for_1pct"]
        print(
            f"{info['components_for_1pct']} principal components keep the mean relative error of the {args.split} "
            "embeddings under 1%"
        )
    if args.command in ("interpolate", "textdiff"):  # vary came out at its size already
        seed = getattr(args, "seed", 0)
        images = pipe.upsample_to(images, args.size, seed=seed, shared_noise=True, progress=True)
    if args.command in ("vary", "interpolate", "textdiff"):
        meta.setdefault("settings", {})["size"] = int(images.shape[-1])
    path = write_image_set(args.out, tensor_to_pil(images), entries, meta)
    print(f"wrote {images.shape[0]} images to {path}")
    return 0
