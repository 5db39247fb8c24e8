"""``unclip train``: one stage or the whole system, on one process or under torchrun."""

from __future__ import annotations

import argparse
import json

from . import args as A
from .common import DATA_HELP
from .common import add_device as _add_device
from .common import add_precision as _add_precision

TRAIN_DATA_HELP = DATA_HELP + ", or WebDataset shards (a .tar, a folder of .tar files, a brace pattern; streamed)"
TRAIN_CLIP_HELP = (
    "prior, decoder, ar-prior, all: the frozen CLIP to train on (default: the model directory's own): 'shapes' or a "
    "model directory, 'open_clip:ARCH:WEIGHTS', or 'hf:DIRECTORY'; recorded in model.json"
)


def _add_distributed(p: argparse.ArgumentParser) -> None:
    """Options of runs on several processes (torchrun -m unclip train ...)."""
    from ...train.distributed import BACKENDS, DEFAULT_TIMEOUT_S

    p.add_argument(
        "--dist-backend",
        default=None,
        choices=BACKENDS,
        help="torch.distributed backend under torchrun (default: nccl on cuda, gloo on cpu)",
    )
    p.add_argument(
        "--dist-timeout",
        type=float,
        default=DEFAULT_TIMEOUT_S,
        metavar="SECONDS",
        help="under torchrun: fail the run when a rank does not answer a collective within this time, "
        f"e.g. because it died (default: {DEFAULT_TIMEOUT_S:.0f})",
    )
    p.add_argument(
        "--fsdp",
        action="store_true",
        help="decoder and upsampler under torchrun: shard parameters, gradients and optimizer state over the "
        "processes (FSDP2) instead of replicating them (DDP); checkpoints stay whole",
    )
    p.add_argument(
        "--grad-checkpointing", action="store_true",
        help="decoder and upsampler: recompute the UNet blocks' activations in backward (less memory, more compute)",
    )  # fmt: skip


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``train`` command."""
    p = sub.add_parser(
        "train",
        help="train a stage (clip, prior, decoder, ar-prior, upsampler) or all of them",
        description=(
            "Train one stage or the whole system. `all` trains CLIP, then the prior and decoder on cached CLIP "
            "embeddings, and writes a complete model directory to --out. `ar-prior` and `upsampler` add a component "
            "to an existing model directory. Re-run with --resume to continue an interrupted run exactly."
        ),
    )
    p.add_argument("stage", choices=["clip", "prior", "decoder", "all", "ar-prior", "upsampler"], help="what to train")
    p.add_argument("--data", default="shapes", help=TRAIN_DATA_HELP)
    p.add_argument("--clip", default=None, help=TRAIN_CLIP_HELP)
    p.add_argument(
        "--embeddings",
        default=None,
        metavar="DIR",
        help=(
            "prior, ar-prior: train on this embedding folder (clip-retrieval layout, `unclip embed`); decoder: look "
            "z_i up in it by key"
        ),
    )
    p.add_argument(
        "--stream",
        action="store_true",
        help="decoder: stream --data in epochs instead of rendering it into memory (shards always stream)",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=0,
        help=(
            "worker processes for the data: a streamed decoder's DataLoader, an upsampler's degraded batches "
            "(built ahead; the same batches as without) (default: 0)"
        ),
    )
    p.add_argument(
        "--preset",
        default="small",
        help="size preset: tiny (seconds, tests), small (2 CPU cores), gpu (default: small)",
    )
    p.add_argument("--out", required=True, help="model directory to write")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the earlier run in --out from its checkpoints (its data, seed, preset and options must match)",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help=(
            "start over in an --out that holds an earlier run, deleting that run's checkpoints, caches and the "
            "components this command trains (files unclip did not write are kept)"
        ),
    )
    p.add_argument(
        "--steps",
        type=A.TRAIN_STEPS,
        default=None,
        help="override the preset's number of steps for every stage trained",
    )
    p.add_argument("--seed", type=A.seed, default=0, help="random seed (default: 0)")
    p.add_argument(
        "--text-only",
        action="store_true",
        help=(
            "decoder only: train the GLIDE-style baseline without the CLIP image embedding (component "
            "decoder_text_only)"
        ),
    )
    p.add_argument(
        "--low-res", type=A.SIZE, default=32, help="upsampler only: input side (default: 32, the shipped decoder's)"
    )
    p.add_argument("--high-res", type=A.SIZE, default=128, help="upsampler only: output side (default: 128)")
    p.add_argument(
        "--degradation",
        default="blur",
        choices=["blur", "bsr", "bsr-light", "none"],
        help=(
            "upsampler only: corruption of the low-res training inputs: blur (first stage); bsr (BSRGAN's full "
            "model) or bsr-light (latent diffusion's light variant) for the second stage (default: blur)"
        ),
    )
    p.add_argument(
        "--time-limit",
        type=A.TIME_LIMIT,
        default=None,
        help=(
            "wall-clock budget in seconds for the stage; the step count (at most --steps or the preset's) is fitted "
            "to it after a short probe"
        ),
    )
    p.add_argument(
        "--checkpoint-every",
        type=A.TRAIN_STEPS,
        default=None,
        metavar="STEPS",
        help=(
            "write the training state every this many steps (default: the preset's). Lower it for "
            "slow steps: a stop loses at most this many (SIGTERM, SIGUSR1 and Ctrl-C checkpoint first). May change "
            "on --resume"
        ),
    )
    p.add_argument(
        "--batch-size", type=A.BATCH_SIZE, default=None,
        help="prior, ar-prior, decoder, upsampler: override the preset's batch size. It is the global batch: under "
        "torchrun each of the N processes trains on batch-size / N samples per step (batch-size must divide by N)",
    )  # fmt: skip
    p.add_argument(
        "--learned-variance",
        action=argparse.BooleanOptionalAction,
        default=None,
        help=(
            "decoder only: learn the variance with the iDDPM hybrid loss (every preset's default) or, with "
            "--no-learned-variance, keep it fixed"
        ),
    )
    p.add_argument(
        "--init-from",
        default=None,
        metavar="DIR",
        help=(
            "decoder and upsampler: start from the weights (and network) of this component, e.g. MODEL/decoder or "
            "MODEL/upsampler_512; with --text-only the decoder's z_i pathway is left out"
        ),
    )
    _add_device(p)
    _add_precision(p)
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    _add_distributed(p)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Train what ``args`` names; prints the run's summary (rank 0 only under torchrun)."""
    from ...train import distributed
    from ...train.components import train_all, train_component

    options = dict(
        seed=args.seed, device=args.device, steps=args.steps, resume=args.resume, progress=not args.no_progress
    )
    options.update(clip=args.clip, embeddings=args.embeddings, stream=args.stream, num_workers=args.workers)
    options.update(fsdp=args.fsdp, grad_checkpointing=args.grad_checkpointing, checkpoint_every=args.checkpoint_every)
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
                extra.update(init_from=args.init_from)  # a stage to continue, as for the decoder
            summary = train_component(args.stage, args.data, args.preset, args.out, **options, **extra)
        if distributed.is_main():
            print(json.dumps(summary, indent=2))
    finally:
        distributed.shutdown()
    return 0
