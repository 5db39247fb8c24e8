"""Checks every command runs before any work: outputs, inputs, memory; and the training lock.

:func:`preflight` is called by ``main`` with the parsed arguments and returns a context
manager that the command runs inside (the training folder's lock for ``unclip train``,
nothing otherwise). It raises :class:`~unclip.errors.UnclipError` subclasses, so a bad
``--out`` or an impossible size is a one-line ``error:`` before a model is even loaded.
See :mod:`unclip.storage.outputs` and :mod:`unclip.train.guard` for the rules.
"""

from __future__ import annotations

import argparse
import contextlib
import os
from pathlib import Path
from typing import Any, ContextManager

from ...errors import InputError
from ...storage.outputs import check_output_dir, check_output_file, check_writable_place

# commands whose --out is an image set (NNN.png, grid.png, manifest.json) -> their input arguments
IMAGE_SET_COMMANDS = {
    "generate": (),
    "vary": ("image",),
    "interpolate": ("image_a", "image_b"),
    "textdiff": ("image",),
    "probe-pca": ("image",),
    "eval": (),
}
# commands that fill --out with their own layout -> the names they write there (anything else is a user's)
OWN_FOLDERS = {
    "demo": frozenset({"index.html", "images"}),
    "report": frozenset({"index.html", "results.json", "cache", "samples", "plots"}),
}
# the largest batch (images decoded at once) times pixels we accept before a run: about
# 4 GiB of float32 RGB (the network's activations are several times that)
MAX_BATCH_PIXELS = (4 << 30) // (3 * 4)


def is_latent_file(path: Path) -> bool:
    """Whether ``path`` is a bipartite latent written by ``unclip invert`` (only its header is read)."""
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            return "unclip" in (f.metadata() or {})
    except Exception:  # noqa: BLE001 - anything unreadable is not ours
        return False


def check_batch(images: int, side: int | None, what: str, fix: str) -> None:
    """Refuse a batch whose pixels exceed :data:`MAX_BATCH_PIXELS` or the machine's free memory."""
    side = side or 64
    pixels = int(images) * side * side
    limit = min(MAX_BATCH_PIXELS, _available_bytes() // (3 * 4 * 8))
    if pixels > limit:
        raise InputError(
            f"{what}: {images} images of {side} x {side} px at once is more than this machine can hold "
            f"(limit about {max(limit // (side * side), 1)} images at that size); {fix}"
        )


def _output_side(args: argparse.Namespace) -> int | None:
    """``--size``, else the model's default side from its model.json (None when it cannot be read:
    loading the model reports that properly)."""
    if args.size is not None:
        return args.size
    try:
        from ...model_dir import read_model_json, resolve_model_path

        side = read_model_json(resolve_model_path(getattr(args, "model", "shapes"))).get("defaults", {}).get("size")
    except Exception:  # noqa: BLE001 - a preflight estimate only; the model load raises the real error
        return None
    return side if isinstance(side, int) and side > 0 else None


def _available_bytes() -> int:
    """Free memory (MemAvailable on Linux; total physical memory elsewhere)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 16 << 30


def _inputs(args: argparse.Namespace, names: tuple[str, ...]) -> list[str]:
    return [getattr(args, n) for n in names if getattr(args, n, None)]


def preflight(args: argparse.Namespace) -> ContextManager[Any]:
    """Check ``args`` of a parsed command; return the context to run it in."""
    command = args.command
    out = getattr(args, "out", None)
    for flag in ("out", "reconstruct"):
        value = getattr(args, flag, None)
        if isinstance(value, str) and not value.strip():
            raise InputError(f"--{flag} is empty; name a folder or file (use . for the current folder)")
    if command in IMAGE_SET_COMMANDS and out is not None:
        check_output_dir(out, _inputs(args, IMAGE_SET_COMMANDS[command]))
    if command == "generate":
        check_batch(len(args.prompts) * args.n, _output_side(args), "generate", "use a smaller -n or fewer prompts")
    elif command == "vary":
        check_batch(args.n, _output_side(args), "vary", "use a smaller -n")
    elif command in ("interpolate", "textdiff"):
        check_batch(args.frames, _output_side(args), command, "use fewer --frames")
    elif command == "data" and getattr(args, "src", None) is None and out is not None:
        check_output_dir(out)
        size = args.size or 64
        check_batch(args.n or 16, size, "data", "use a smaller -n or --size")
    elif command == "invert":
        check_output_file(out, [args.image], suffix=".safetensors", is_ours=is_latent_file)
        if args.reconstruct:
            check_output_dir(args.reconstruct, [args.image], flag="--reconstruct")
            if Path(args.reconstruct).absolute() == Path(out).absolute():
                raise InputError("--reconstruct must name a folder other than the --out file")
    elif command in OWN_FOLDERS:
        _check_folder(out, OWN_FOLDERS[command])
    elif command in ("data", "embed") and out is not None:
        _check_folder(out)
    elif command == "train":
        return _train_context(args)
    return contextlib.nullcontext()


def _check_folder(out: str | None, own: frozenset[str] | None = None) -> None:
    """A folder that a command fills with its own files: not a file, writable, and (with ``own``, the
    names the command writes) holding nothing else, so that a user's ``index.html`` is never replaced."""
    if out is None:
        return
    check_writable_place(out)
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise InputError(f"--out {out} is an existing file, not a folder; choose a folder name")
    if own is not None and path.is_dir():
        foreign = sorted(set(os.listdir(path)) - own)
        if foreign:
            shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
            raise InputError(
                f"--out {out} holds files this command did not write ({shown}); unclip never overwrites them: "
                "choose a new or empty folder"
            )


def _train_context(args: argparse.Namespace) -> ContextManager[Any]:
    from ...train.guard import TrainingLock, check_options, check_training_folder, component_of, is_primary_process

    check_writable_place(args.out)
    check_options(args.stage, low_res=getattr(args, "low_res", None), high_res=getattr(args, "high_res", None))
    if not is_primary_process():
        return contextlib.nullcontext()
    component = component_of(args.stage, text_only=args.text_only, high_res=args.high_res)
    overwrite = getattr(args, "overwrite", False)
    if Path(args.out).exists() and not Path(args.out).is_dir():
        raise InputError(f"--out {args.out} is an existing file; training writes a folder: choose a folder name")
    lock = TrainingLock(args.out, f"unclip train {args.stage}")

    @contextlib.contextmanager
    def run():
        with lock:  # check under the lock: another run cannot start between the check and the work
            check_training_folder(
                args.out,
                args.stage,
                resume=args.resume,
                overwrite=overwrite,
                component=component,
                init_from=args.init_from,
            )
            yield

    return run()


def out_of_memory_message(exc: BaseException, command: str) -> str | None:
    """A one-line message when ``exc`` is an out-of-memory error (CPU or CUDA), else None."""
    text = str(exc)
    oom = isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError"
    oom = oom or (
        isinstance(exc, RuntimeError) and ("can't allocate memory" in text or "out of memory" in text.lower())
    )
    if not oom:
        return None
    return (
        f"`unclip {command}` ran out of memory ({text.splitlines()[0][:120] if text else type(exc).__name__}); "
        "use fewer images or frames, a smaller --size or --batch-size, or a machine with more memory"
    )
