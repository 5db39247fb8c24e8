"""The ``unclip`` command line: argparse subcommands that call the library and print.

Holds no logic of its own (DESIGN.md principle 12): every subcommand parses its
arguments, calls one library function and prints the result.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from ...errors import TrainingInterrupted, UnclipError
from . import args as A
from . import train as cli_train
from .common import DATA_HELP, PRIOR_CHOICES, PRIOR_HELP
from .common import add_device as _add_device
from .common import add_model as _add_model
from .common import add_precision as _add_precision
from .common import add_sampler as _add_sampler
from .common import add_size as _add_size
from .model_options import add_image_encoder_from, load_kwargs


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="unclip",
        description=(
            "unCLIP (DALL-E 2) text-to-image with CLIP latents: train CLIP, a diffusion prior and a decoder; "
            "generate, manipulate and evaluate images."
        ),
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress messages")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser(
        "demo",
        help="generate a gallery (index.html + PNGs) from the shipped model",
        description=(
            "Load a model and write a gallery of text-to-image samples (seen and held-out colour-shape pairs, "
            "two-object captions) as index.html and PNGs."
        ),
    )
    _add_model(p)
    p.add_argument("--out", default="demo_out", help="output folder (default: demo_out)")
    p.add_argument("--seed", type=A.seed, default=0, help="random seed (default: 0)")
    p.add_argument("-n", type=A.IMAGES, default=1, help="images per caption (default: 1)")
    p.add_argument(
        "--steps",
        type=A.STEPS,
        default=20,
        help="decoder DDIM steps (default: 20, to keep the default demo short on 2 CPU cores)",
    )
    p.add_argument(
        "--manipulations",
        action="store_true",
        help="add the variations / interpolation / text-diff / PCA-probe sections (several more minutes on CPU)",
    )
    p.add_argument(
        "--size",
        type=A.SIZE,
        default=None,
        help="side of the images shown (default: the model's default output; e.g. 128 runs the shipped upsampler)",
    )
    _add_device(p)

    cli_train.register(sub)

    p = sub.add_parser(
        "generate",
        help="text to image",
        description="Generate images for one or more prompts and write NNN.png, grid.png and manifest.json to --out.",
    )
    p.add_argument("prompts", nargs="+", metavar="PROMPT", help="captions, e.g. 'a red circle'")
    _add_model(p)
    add_image_encoder_from(p)
    p.add_argument("-n", type=A.IMAGES, default=4, help="images per prompt (default: 4)")
    p.add_argument("--seed", type=A.seed, default=0, help="random seed (default: 0)")
    p.add_argument("--prior", default="diffusion", choices=PRIOR_CHOICES, help=PRIOR_HELP)
    p.add_argument(
        "--decoder",
        default="decoder",
        choices=["decoder", "decoder_text_only"],
        help="decoder component: unCLIP's (default) or the GLIDE-style text-only baseline (use with --prior none)",
    )
    _add_size(p)
    p.add_argument(
        "--upsampler-steps",
        type=A.STEPS,
        default=None,
        help="DDIM steps of every upsampler stage (default: each stage's own)",
    )
    p.add_argument(
        "--upsampler-start",
        type=A.upsampler_start,
        default=None,
        help="where every upsampler stage starts: 'noise' (the paper's sampling from pure noise, with its step "
        "counts unless --upsampler-steps) or a timestep t, from the bicubic upsample diffused to t (default: each "
        "stage's own, in its config.json)",
    )
    p.add_argument("--prior-guidance", type=A.GUIDANCE, default=None, help="prior classifier-free guidance scale")
    p.add_argument("--decoder-guidance", type=A.GUIDANCE, default=None, help="decoder classifier-free guidance scale")
    p.add_argument("--steps", type=A.STEPS, default=None, help="decoder DDIM steps")
    p.add_argument("--prior-steps", type=A.STEPS, default=None, help="prior sampling steps (default 64)")
    _add_precision(p)
    _add_sampler(p)
    p.add_argument(
        "--best-of",
        type=A.BEST_OF,
        default=None,
        help="prior candidates per caption, best by dot product with z_t (default 2)",
    )
    p.add_argument("--out", required=True, help="output folder")
    _add_device(p)

    p = sub.add_parser(
        "eval",
        help="score a model's samples against the shapes spec",
        description=(
            "Generate the 32 prompts 'a {color} {shape}' with several seeds and score them exactly against the "
            "shapes spec: colour, shape, single-object and both-right rates (held-out pairs separately), centre "
            "spread; plus CLIP score and the prior's cosine to the true z_i on the test split."
        ),
    )
    _add_model(p)
    p.add_argument("--data", default="shapes", help="only 'shapes' is scored")
    p.add_argument("--seeds", type=A.IMAGES, default=4, help="images per prompt (default: 4)")
    p.add_argument("--steps", type=A.STEPS, default=None, help="decoder DDIM steps")
    p.add_argument("--prior", default="diffusion", choices=PRIOR_CHOICES, help=PRIOR_HELP)
    p.add_argument(
        "--decoder",
        default="decoder",
        choices=["decoder", "decoder_text_only"],
        help="decoder component (decoder_text_only: the GLIDE-style baseline, with --prior none)",
    )
    p.add_argument("--guidance", type=A.GUIDANCE, default=None, help="decoder guidance scale (default: the model's)")
    _add_size(p)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--out", default=None, help="also write the scored images here")
    _add_device(p)
    _add_precision(p)
    _add_sampler(p)

    p = sub.add_parser(
        "report",
        help="reproduce the paper's comparisons as an HTML report",
        description=(
            "Run the paper's comparisons on a model with both priors and the GLIDE-style baseline decoder (diffusion "
            "vs AR prior; Figure 8's conditioning modes; Figures 9-11: Frechet distance, accuracy and diversity "
            "against decoder guidance) and write index.html with plots, tables and sample grids to --out."
        ),
    )
    _add_model(p)
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument(
        "--quick", action="store_true", help="fewer prompts, scales and steps (a few minutes on 2 CPU cores)"
    )
    p.add_argument("--seed", type=A.seed, default=0, help="random seed (default: 0)")
    _add_device(p)

    p = sub.add_parser(
        "bench",
        help="training and sampling speed at fixed sizes",
        description=(
            "Measure prior/decoder training steps/s and sampling throughput at fixed sizes (random weights, fp32, "
            "guidance off), with parameter counts and peak memory."
        ),
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--threads", type=A.THREADS, default=2, help="torch threads (default: 2)")
    p.add_argument("--quick", action="store_true", help="fewer repetitions (rougher figures)")
    p.add_argument(
        "--precision",
        default="both",
        choices=["fp32", "bf16", "auto", "both"],
        help="time fp32, bf16 autocast, auto (bf16 where native) or both (default: both)",
    )
    p.add_argument(
        "--compare-peers",
        action="store_true",
        help=(
            "also run the shared peer harness (dalle2-pytorch, diffusers; about 7 min) and print our figures over "
            "theirs"
        ),
    )
    _add_device(p)

    p = sub.add_parser(
        "data",
        help="dump dataset samples as PNGs + manifest.json",
        description=(
            "Write samples of a dataset as NNN.png, grid.png and manifest.json (caption and ground-truth attributes "
            "per image)."
        ),
    )
    p.add_argument("dataset", help=DATA_HELP)
    p.add_argument("--split", default="train", choices=["train", "val", "test"], help="split (default: train)")
    p.add_argument("-n", type=A.SAMPLES, default=16, help="number of samples (default: 16)")
    p.add_argument("--seed", type=A.seed, default=0, help="dataset seed (default: 0)")
    p.add_argument("--size", type=A.SIZE, default=64, help="image side in pixels (default: 64)")
    p.add_argument("--out", required=True, help="output folder")
    from . import manipulate as cli_manipulate

    cli_manipulate.add_parsers(sub)
    import importlib

    from . import COMMAND_MODULES

    for name in COMMAND_MODULES:
        importlib.import_module(f"unclip.apps.cli.{name}").register(sub)
    return parser


def _run(args: argparse.Namespace) -> int:
    if getattr(args, "handler", None) is not None:
        return args.handler(args)
    if args.command == "data":
        from ...data import get_dataset
        from ...data.dump import dump_samples

        ds = get_dataset(args.dataset, split=args.split, size=args.size, seed=args.seed, length=max(args.n, 1))
        path = dump_samples(ds, args.n, args.out)
        print(f"wrote {args.n} samples to {path}")
        return 0
    if args.command == "generate":
        from ...pipeline import UnCLIP
        from ...storage.imageio import write_image_set
        from .manifest import generate_settings

        pipe = UnCLIP.load(args.model, device=args.device, decoder=args.decoder, **load_kwargs(args))
        images = pipe.generate(
            args.prompts,
            num_images=args.n,
            seed=args.seed,
            prior=args.prior,
            prior_guidance=args.prior_guidance,
            decoder_guidance=args.decoder_guidance,
            steps=args.steps,
            prior_steps=args.prior_steps,
            best_of=args.best_of,
            size=args.size,
            upsampler_steps=args.upsampler_steps,
            upsampler_start=args.upsampler_start,
            progress=True,
            sampler=args.sampler,
        )
        entries = [{"prompt": p, "seed": args.seed, "index": k} for p in args.prompts for k in range(args.n)]
        meta = {"command": "generate", "model": str(args.model), "settings": generate_settings(pipe, args)}
        path = write_image_set(args.out, images, entries, meta)
        print(f"wrote {len(images)} images to {path}")
        return 0
    if args.command == "demo":
        from ..demo import run_demo

        path = run_demo(
            args.model,
            args.out,
            seed=args.seed,
            n=args.n,
            steps=args.steps,
            device=args.device,
            manipulations=args.manipulations,
            size=args.size,
        )
        print(f"gallery written to {path / 'index.html'}")
        return 0
    if args.command == "eval":
        from ...eval.text_to_image import evaluate_model

        report = evaluate_model(
            args.model,
            data=args.data,
            seeds=args.seeds,
            steps=args.steps,
            prior=args.prior,
            out=args.out,
            device=args.device,
            decoder=args.decoder,
            guidance=args.guidance,
            size=args.size,
            sampler=args.sampler,
        )
        print(json.dumps(report, indent=2) if args.json else "\n".join(f"{k}: {v}" for k, v in report.items()))
        return 0
    if args.command == "report":
        from ..report import run_report

        path = run_report(args.model, args.out, quick=args.quick, seed=args.seed, device=args.device)
        print(f"report written to {path}")
        return 0
    if args.command == "bench":
        from ..bench_efficiency import run_bench_command

        return run_bench_command(args)
    from . import manipulate as cli_manipulate

    if args.command in cli_manipulate.COMMANDS:
        return cli_manipulate.run(args)
    raise AssertionError(args.command)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``unclip`` script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    from .safety import out_of_memory_message, preflight

    try:
        if args.command != "bench":  # bench times each precision itself
            from ...nn.precision import set_default_precision

            set_default_precision(getattr(args, "precision", None))
        with preflight(args):
            return _run(args)
    except TrainingInterrupted as exc:
        print(f"stopped: {exc}", file=sys.stderr)
        return exc.exit_code
    except UnclipError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except (MemoryError, RuntimeError) as exc:
        message = out_of_memory_message(exc, args.command)
        if message is None:
            raise
        print(f"error: {message}", file=sys.stderr)
        return 1
    except OSError as exc:  # the file system refused (disk full, read-only, permissions): say where
        where = f" {exc.filename}" if exc.filename else ""
        reason = exc.strerror or exc
        print(f"error: could not access{where}: {reason}; check the path, permissions and free space", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
