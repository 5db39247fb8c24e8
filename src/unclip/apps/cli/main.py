"""The ``unclip`` command line: argparse subcommands that call the library and print.

Holds no logic of its own (DESIGN.md principle 12): every subcommand parses its
arguments, calls one library function and prints the result.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from ...errors import UnclipError
from .model_options import add_image_encoder_from, load_kwargs

DATA_HELP = "dataset: 'shapes' (built in), 'emoji' (needs fonts), or a folder of images with same-named .txt captions"
TRAIN_DATA_HELP = DATA_HELP + ", or WebDataset shards (a .tar, a folder of .tar files, a brace pattern; streamed)"
TRAIN_CLIP_HELP = (
    "prior, decoder, ar-prior, all: the frozen CLIP to train on (default: the model directory's own): 'shapes' or a "
    "model directory, 'open_clip:ARCH:WEIGHTS', or 'hf:DIRECTORY'; recorded in model.json"
)


def _add_model(p: argparse.ArgumentParser, required: bool = False) -> None:
    p.add_argument("--model", default=None if required else "shapes", required=required, help="a shipped model name ('shapes') or a model directory written by `unclip train all` (default: shapes)")


def _add_device(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda (default: cpu)")


PRIOR_CHOICES = ["diffusion", "ar", "text-embed", "none"]
PRIOR_HELP = "conditioning: diffusion prior z_i (default), the autoregressive prior's z_i, the text embedding as z_i, or caption only (the paper's Figure 8 modes)"


def _add_size(p: argparse.ArgumentParser) -> None:
    p.add_argument("--size", type=int, default=None, help="output side in pixels: the decoder's (default) or a larger one reached by the model's upsampler stages, e.g. 128")


def _add_precision(p: argparse.ArgumentParser) -> None:
    p.add_argument("--precision", default=None, choices=["fp32", "bf16", "auto"], help="network arithmetic: fp32, bf16 autocast (fp32 weights, norms and diffusion maths), or auto: bf16 where the CPU/GPU runs it natively (default: fp32, or the training preset's)")


def _add_sampler(p: argparse.ArgumentParser) -> None:
    p.add_argument("--sampler", default=None, choices=["ddim", "dpmpp2m"], help="sampler of the prior, decoder and upsamplers: DDIM or DPM-Solver++(2M) (default: the model's, ddim)")


def _add_distributed(p: argparse.ArgumentParser) -> None:
    """Options of runs on several processes (torchrun -m unclip train ...)."""
    from ...train.distributed import BACKENDS, DEFAULT_TIMEOUT_S

    p.add_argument(
        "--dist-backend", default=None, choices=BACKENDS,
        help="torch.distributed backend under torchrun (default: nccl on cuda, gloo on cpu)",
    )
    p.add_argument(
        "--dist-timeout", type=float, default=DEFAULT_TIMEOUT_S, metavar="SECONDS",
        help="under torchrun: fail the run when a rank does not answer a collective within this time, "
        f"e.g. because it died (default: {DEFAULT_TIMEOUT_S:.0f})",
    )
    p.add_argument(
        "--fsdp", action="store_true",
        help="decoder and upsampler under torchrun: shard parameters, gradients and optimizer state over the "
        "processes (FSDP2) instead of replicating them (DDP); checkpoints stay whole",
    )
    p.add_argument(
        "--grad-checkpointing", action="store_true",
        help="decoder and upsampler: recompute the UNet blocks' activations in backward (less memory, more compute)",
    )  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="unclip", description="unCLIP (DALL-E 2) text-to-image with CLIP latents: train CLIP, a diffusion prior and a decoder; generate, manipulate and evaluate images.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress messages")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("demo", help="generate a gallery (index.html + PNGs) from the shipped model", description="Load a model and write a gallery of text-to-image samples (seen and held-out colour-shape pairs, two-object captions) as index.html and PNGs.")
    _add_model(p)
    p.add_argument("--out", default="demo_out", help="output folder (default: demo_out)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument("-n", type=int, default=1, help="images per caption (default: 1)")
    p.add_argument("--steps", type=int, default=20, help="decoder DDIM steps (default: 20, to keep the default demo short on 2 CPU cores)")
    p.add_argument("--manipulations", action="store_true", help="add the variations / interpolation / text-diff / PCA-probe sections (several more minutes on CPU)")
    p.add_argument("--size", type=int, default=None, help="side of the images shown (default: the model's default output; e.g. 128 runs the shipped upsampler)")
    _add_device(p)

    p = sub.add_parser("train", help="train a stage (clip, prior, decoder, ar-prior, upsampler) or all of them", description="Train one stage or the whole system. `all` trains CLIP, then the prior and decoder on cached CLIP embeddings, and writes a complete model directory to --out. `ar-prior` and `upsampler` add a component to an existing model directory. Re-run with --resume to continue an interrupted run exactly.")
    p.add_argument("stage", choices=["clip", "prior", "decoder", "all", "ar-prior", "upsampler"], help="what to train")
    p.add_argument("--data", default="shapes", help=TRAIN_DATA_HELP)
    p.add_argument("--clip", default=None, help=TRAIN_CLIP_HELP)
    p.add_argument("--embeddings", default=None, metavar="DIR", help="prior, ar-prior: train on this embedding folder (clip-retrieval layout, `unclip embed`); decoder: look z_i up in it by key")
    p.add_argument("--stream", action="store_true", help="decoder: stream --data in epochs instead of rendering it into memory (shards always stream)")
    p.add_argument("--workers", type=int, default=0, help="decoder, streamed: DataLoader worker processes (default: 0)")
    p.add_argument("--preset", default="small", help="size preset: tiny (seconds, tests), small (2 CPU cores), gpu (default: small)")
    p.add_argument("--out", required=True, help="model directory to write")
    p.add_argument("--resume", action="store_true", help="continue from the checkpoints in --out")
    p.add_argument("--steps", type=int, default=None, help="override the preset's number of steps for every stage trained")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument("--text-only", action="store_true", help="decoder only: train the GLIDE-style baseline without the CLIP image embedding (component decoder_text_only)")
    p.add_argument("--low-res", type=int, default=32, help="upsampler only: input side (default: 32, the shipped decoder's)")
    p.add_argument("--high-res", type=int, default=128, help="upsampler only: output side (default: 128)")
    p.add_argument("--degradation", default="blur", choices=["blur", "bsr", "none"], help="upsampler only: corruption of the low-res training inputs: blur (first stage), bsr (second stage) (default: blur)")
    p.add_argument("--time-limit", type=float, default=None, help="wall-clock budget in seconds for the stage; the step count (at most --steps or the preset's) is fitted to it after a short probe")
    p.add_argument(
        "--batch-size", type=int, default=None,
        help="prior, ar-prior, decoder, upsampler: override the preset's batch size. It is the global batch: under "
        "torchrun each of the N processes trains on batch-size / N samples per step (batch-size must divide by N)",
    )  # fmt: skip
    p.add_argument("--learned-variance", action=argparse.BooleanOptionalAction, default=None, help="decoder only: learn the variance with the iDDPM hybrid loss (every preset's default) or, with --no-learned-variance, keep it fixed")
    p.add_argument("--init-from", default=None, metavar="DIR", help="decoder only: start from the weights (and network) of this decoder component, e.g. MODEL/decoder; with --text-only the z_i pathway is left out")
    _add_device(p)
    _add_precision(p)
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    _add_distributed(p)

    p = sub.add_parser("generate", help="text to image", description="Generate images for one or more prompts and write NNN.png, grid.png and manifest.json to --out.")
    p.add_argument("prompts", nargs="+", metavar="PROMPT", help="captions, e.g. 'a red circle'")
    _add_model(p)
    add_image_encoder_from(p)
    p.add_argument("-n", type=int, default=4, help="images per prompt (default: 4)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument("--prior", default="diffusion", choices=PRIOR_CHOICES, help=PRIOR_HELP)
    p.add_argument("--decoder", default="decoder", choices=["decoder", "decoder_text_only"], help="decoder component: unCLIP's (default) or the GLIDE-style text-only baseline (use with --prior none)")
    _add_size(p)
    p.add_argument("--upsampler-steps", type=int, default=None, help="DDIM steps of every upsampler stage (default: each stage's own)")
    p.add_argument("--prior-guidance", type=float, default=None, help="prior classifier-free guidance scale")
    p.add_argument("--decoder-guidance", type=float, default=None, help="decoder classifier-free guidance scale")
    p.add_argument("--steps", type=int, default=None, help="decoder DDIM steps")
    p.add_argument("--prior-steps", type=int, default=None, help="prior sampling steps (default 64)")
    _add_precision(p)
    _add_sampler(p)
    p.add_argument("--best-of", type=int, default=None, help="prior candidates per caption, best by dot product with z_t (default 2)")
    p.add_argument("--out", required=True, help="output folder")
    _add_device(p)

    p = sub.add_parser("eval", help="score a model's samples against the shapes spec", description="Generate the 32 prompts 'a {color} {shape}' with several seeds and score them exactly against the shapes spec: colour, shape, single-object and both-right rates (held-out pairs separately), centre spread; plus CLIP score and the prior's cosine to the true z_i on the test split.")
    _add_model(p)
    p.add_argument("--data", default="shapes", help="only 'shapes' is scored")
    p.add_argument("--seeds", type=int, default=4, help="images per prompt (default: 4)")
    p.add_argument("--steps", type=int, default=None, help="decoder DDIM steps")
    p.add_argument("--prior", default="diffusion", choices=PRIOR_CHOICES, help=PRIOR_HELP)
    p.add_argument("--decoder", default="decoder", choices=["decoder", "decoder_text_only"], help="decoder component (decoder_text_only: the GLIDE-style baseline, with --prior none)")
    p.add_argument("--guidance", type=float, default=None, help="decoder guidance scale (default: the model's)")
    _add_size(p)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--out", default=None, help="also write the scored images here")
    _add_device(p)
    _add_precision(p)
    _add_sampler(p)

    p = sub.add_parser("report", help="reproduce the paper's comparisons as an HTML report", description="Run the paper's comparisons on a model with both priors and the GLIDE-style baseline decoder (diffusion vs AR prior; Figure 8's conditioning modes; Figures 9-11: Frechet distance, accuracy and diversity against decoder guidance) and write index.html with plots, tables and sample grids to --out.")
    _add_model(p)
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--quick", action="store_true", help="fewer prompts, scales and steps (a few minutes on 2 CPU cores)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    _add_device(p)

    p = sub.add_parser("bench", help="training and sampling speed at fixed sizes", description="Measure prior/decoder training steps/s and sampling throughput at fixed sizes (random weights, fp32, guidance off), with parameter counts and peak memory.")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--threads", type=int, default=2, help="torch threads (default: 2)")
    p.add_argument("--quick", action="store_true", help="fewer repetitions (rougher figures)")
    p.add_argument("--precision", default="both", choices=["fp32", "bf16", "auto", "both"], help="time fp32, bf16 autocast, auto (bf16 where native) or both (default: both)")
    p.add_argument("--compare-peers", action="store_true", help="also run the shared peer harness (dalle2-pytorch, diffusers; about 7 min) and print our figures over theirs")
    _add_device(p)

    p = sub.add_parser("data", help="dump dataset samples as PNGs + manifest.json", description="Write samples of a dataset as NNN.png, grid.png and manifest.json (caption and ground-truth attributes per image).")
    p.add_argument("dataset", help=DATA_HELP)
    p.add_argument("--split", default="train", choices=["train", "val", "test"], help="split (default: train)")
    p.add_argument("-n", type=int, default=16, help="number of samples (default: 16)")
    p.add_argument("--seed", type=int, default=0, help="dataset seed (default: 0)")
    p.add_argument("--size", type=int, default=64, help="image side in pixels (default: 64)")
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
    if args.command == "train":
        from ...train import distributed
        from ...train.components import train_all, train_component

        options = dict(seed=args.seed, device=args.device, steps=args.steps, resume=args.resume, progress=not args.no_progress)
        options.update(clip=args.clip, embeddings=args.embeddings, stream=args.stream, num_workers=args.workers)
        options.update(fsdp=args.fsdp, grad_checkpointing=args.grad_checkpointing)
        options.update(dist_backend=args.dist_backend, dist_timeout_s=args.dist_timeout)
        if args.stage in ("all", "decoder"):
            options["learned_variance"] = args.learned_variance
        try:
            if args.stage == "all":
                summary = train_all(args.data, args.preset, args.out, **options)
            else:
                extra = dict(time_limit_s=args.time_limit, batch_size=args.batch_size)
                if args.stage == "decoder":
                    extra.update(text_only=args.text_only, init_from=args.init_from)
                if args.stage == "upsampler":
                    extra.update(low_res=args.low_res, high_res=args.high_res, degradation=args.degradation)
                summary = train_component(args.stage, args.data, args.preset, args.out, **options, **extra)
            if distributed.is_main():
                print(json.dumps(summary, indent=2))
        finally:
            distributed.shutdown()
        return 0
    if args.command == "generate":
        from ...storage.imageio import write_image_set
        from ...pipeline import UnCLIP

        pipe = UnCLIP.load(args.model, device=args.device, decoder=args.decoder, **load_kwargs(args))
        images = pipe.generate(args.prompts, num_images=args.n, seed=args.seed, prior=args.prior, prior_guidance=args.prior_guidance, decoder_guidance=args.decoder_guidance, steps=args.steps, prior_steps=args.prior_steps, best_of=args.best_of, size=args.size, upsampler_steps=args.upsampler_steps, progress=True, sampler=args.sampler)
        entries = [{"prompt": p, "seed": args.seed, "index": k} for p in args.prompts for k in range(args.n)]
        meta = {"command": "generate", "model": str(args.model), "settings": {k: getattr(args, k) for k in ("prior", "decoder", "prior_guidance", "decoder_guidance", "steps", "prior_steps", "best_of", "size", "upsampler_steps", "n", "seed")}}
        path = write_image_set(args.out, images, entries, meta)
        print(f"wrote {len(images)} images to {path}")
        return 0
    if args.command == "demo":
        from ..demo import run_demo

        path = run_demo(args.model, args.out, seed=args.seed, n=args.n, steps=args.steps, device=args.device, manipulations=args.manipulations, size=args.size)
        print(f"gallery written to {path / 'index.html'}")
        return 0
    if args.command == "eval":
        from ...eval.text_to_image import evaluate_model

        report = evaluate_model(args.model, data=args.data, seeds=args.seeds, steps=args.steps, prior=args.prior, out=args.out, device=args.device, decoder=args.decoder, guidance=args.guidance, size=args.size, sampler=args.sampler)
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
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.command != "bench":  # bench times each precision itself
            from ...nn.precision import set_default_precision

            set_default_precision(getattr(args, "precision", None))
        return _run(args)
    except UnclipError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
