"""Running the app: loading the named models, and uvicorn with a clean shutdown on SIGTERM/SIGINT.

uvicorn stops accepting connections on either signal, lets in-flight requests finish (up to
the graceful-shutdown timeout), then runs the app's shutdown, which closes the worker
pools: jobs still queued get an error answer, running ones finish. uvicorn re-raises the
captured signal after it stops; :func:`serve` installs quiet handlers first so that the
command then exits 0 instead of dying of the signal or printing a KeyboardInterrupt.
"""

from __future__ import annotations

import ipaddress
import logging
import signal
import socket
from pathlib import Path
from typing import Any

from ...errors import InputError
from .registry import NAME_RE

log = logging.getLogger(__name__)

LOOPBACK_NAMES = ["127.0.0.1", "localhost", "::1", "[::1]"]


def model_specs(specs: list[str]) -> dict[str, str]:
    """``--model`` values -> {served name: name or path to load}.

    ``NAME=PATH`` serves the model at PATH as NAME; a bare shipped name (``shapes``) serves
    under itself; a bare directory under its folder's name. Names must be unique.
    """
    out: dict[str, str] = {}
    for spec in specs:
        name, sep, target = spec.partition("=")
        if not sep:
            target = spec
            name = Path(spec.rstrip("/\\")).name or spec
        if not target or not NAME_RE.match(name):
            raise InputError(
                f"--model {spec!r}: give a shipped name, a model directory, or NAME=DIR "
                "with NAME of letters, digits, '.', '_', '-'"
            )
        if name in out:
            raise InputError(f"--model {spec!r}: the name '{name}' is served twice; use NAME=DIR to tell them apart")
        out[name] = target
    return out


def load_models(specs: dict[str, str], device: str = "cpu") -> dict[str, Any]:
    """Load each model once (errors name the ``--model`` value at fault)."""
    from ...pipeline import UnCLIP

    models = {}
    for name, target in specs.items():
        log.info("loading model %s from %s", name, target)
        models[name] = UnCLIP.load(target, device=device)
    return models


def allowed_hosts_for(host: str) -> list[str] | None:
    """Host headers to accept: the loopback names (plus ``host``) when bound to loopback or one
    address; any (None) when bound to every interface (0.0.0.0 or ::)."""
    try:
        if ipaddress.ip_address(host).is_unspecified:
            return None
    except ValueError:
        pass
    return sorted(set(LOOPBACK_NAMES + [host]))


def check_port(host: str, port: int) -> None:
    """Refuse at once (before loading models) a port that cannot be bound, naming it."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise InputError(
                f"cannot listen on --host {host} --port {port} ({exc.strerror or exc}); pick another port or host"
            ) from None


def serve(
    app: Any, host: str = "127.0.0.1", port: int = 7860, *, shutdown_timeout: float = 30.0, log_level: str = "info"
) -> int:
    """Run ``app`` under uvicorn until SIGTERM or SIGINT; returns the exit status (0 after a clean stop)."""
    import uvicorn

    caught: list[int] = []

    def note(sig: int, _frame: Any) -> None:  # uvicorn re-raises the signal it handled: absorb it
        caught.append(sig)

    previous = {sig: signal.signal(sig, note) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        config = uvicorn.Config(
            app,
            host=host,
            port=port,
            log_level=log_level,
            timeout_graceful_shutdown=shutdown_timeout,
            lifespan="on",
            server_header=False,
        )
        server = uvicorn.Server(config)
        server.run()
        if not server.started:
            raise InputError(f"could not start the server on {host}:{port} (is the port in use? see the log above)")
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if caught:
        log.info("stopped on signal %s", signal.Signals(caught[0]).name)
    return 0
