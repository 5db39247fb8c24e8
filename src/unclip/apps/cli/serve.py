"""``unclip serve``: the web app and JSON API (see :mod:`unclip.apps.serve` and docs/serve.md)."""

from __future__ import annotations

import argparse
from typing import Any

from ...errors import InputError

DESCRIPTION = (
    "Serve a web app (Gradio, one tab per job: text to image, variations, interpolation, text diff) and a JSON "
    "API (GET /api/health, GET /api/models, POST /api/generate | vary | interpolate | textdiff | invert; see "
    "docs/serve.md) "
    "for the models named with --model. Each model gets --workers worker threads and a queue of --queue-size waiting "
    "requests; a request beyond that is answered 503 with a Retry-After hint at once. Requests over the limits "
    "below are answered 400 (413 for sizes) naming the field. Binds 127.0.0.1 unless --host says otherwise; "
    "clients choose among the served models by name and never pass a path. Stops cleanly on SIGTERM or Ctrl-C."
)


def _positive(kind: type) -> Any:
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a positive {kind.__name__}, got {text!r}") from None
        if not value > 0 or value != value or value == float("inf"):
            raise argparse.ArgumentTypeError(f"expected a positive {kind.__name__}, got {text!r}")
        return value

    parse.__name__ = f"positive {kind.__name__}"
    return parse


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number 0-65535, got {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port number 0-65535, got {text!r}")
    return port


def register(sub: Any) -> None:
    """Add the ``serve`` command to an argparse subparsers object."""
    pos_int, pos_float = _positive(int), _positive(float)
    p = sub.add_parser(
        "serve",
        help="local web app (Gradio) and JSON API for generation and the manipulations",
        description=DESCRIPTION,
    )
    p.add_argument(
        "--model",
        action="append",
        default=None,
        metavar="M",
        help="a shipped model name ('shapes'), a model directory, or NAME=DIR to serve it as NAME; repeat for several "
        "(the first is the default; default: shapes)",
    )
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to bind (default: 127.0.0.1, this machine only; 0.0.0.0 exposes it)",
    )
    p.add_argument("--port", type=_port, default=7860, help="TCP port (default: 7860; 0 picks a free one)")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda (default: cpu)")
    p.add_argument("--workers", type=pos_int, default=1, help="worker threads per model (default: 1)")
    p.add_argument(
        "--queue-size",
        type=pos_int,
        default=8,
        help="requests that may wait per model beyond the running ones (default: 8)",
    )
    p.add_argument("--max-images", type=pos_int, default=8, help="images per request (default: 8)")
    p.add_argument(
        "--max-steps",
        type=pos_int,
        default=100,
        help="sampler steps per request, each of prior, decoder and inversion (default: 100)",
    )
    p.add_argument("--max-frames", type=pos_int, default=16, help="interpolation and text-diff frames (default: 16)")
    p.add_argument(
        "--max-upload-mb", type=pos_float, default=4.0, help="size of one uploaded image in MiB (default: 4)"
    )
    p.add_argument(
        "--max-pixels",
        type=pos_int,
        default=4096 * 4096,
        help="width x height of one uploaded image (default: 16777216)",
    )
    p.add_argument(
        "--shutdown-timeout",
        type=pos_float,
        default=30.0,
        help="seconds running requests get to finish on SIGTERM/SIGINT (default: 30)",
    )
    p.add_argument("--no-ui", action="store_true", help="serve the JSON API only")
    p.set_defaults(handler=run_serve)


def _check_installed(ui: bool) -> None:
    """The web stack is an optional extra: say how to install it rather than fail on an import."""
    import importlib.util

    needed = ["fastapi", "uvicorn", "pydantic"] + (["gradio"] if ui else [])
    missing = [name for name in needed if importlib.util.find_spec(name) is None]
    if missing:
        raise InputError(
            f"unclip serve needs {', '.join(missing)}: pip install 'unclip[serve]' (or --no-ui without gradio)"
        )


def run_serve(args: argparse.Namespace) -> int:
    """Check the arguments, load the models, build the app and serve it until stopped."""
    from ..serve import Limits, create_app
    from ..serve.server import allowed_hosts_for, check_port, load_models, model_specs, serve

    _check_installed(ui=not args.no_ui)
    if args.max_upload_mb * 2**20 < 1:
        raise InputError(f"--max-upload-mb {args.max_upload_mb} is below one byte")
    limits = Limits(
        max_images=args.max_images,
        max_prompts=args.max_images,
        max_steps=args.max_steps,
        max_frames=args.max_frames,
        max_upload_bytes=int(args.max_upload_mb * 2**20),
        max_pixels=args.max_pixels,
    )
    specs = model_specs(args.model or ["shapes"])
    check_port(args.host, args.port)
    models = load_models(specs, device=args.device)
    app = create_app(
        models,
        workers=args.workers,
        queue_size=args.queue_size,
        limits=limits,
        ui=not args.no_ui,
        allowed_hosts=allowed_hosts_for(args.host),
        shutdown_timeout=args.shutdown_timeout,
    )
    return serve(app, args.host, args.port, shutdown_timeout=args.shutdown_timeout)
