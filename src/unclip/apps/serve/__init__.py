"""``unclip serve``: a local web app (Gradio) and a JSON API (FastAPI) over loaded models.

:func:`create_app` builds the ASGI app: the API's routes under ``/api`` (:mod:`.api`) and
the Gradio UI mounted at ``/`` (:mod:`.ui`, the convention of the field's unCLIP demos),
sharing one :class:`~.registry.Registry` of models, each with a bounded queue and a fixed
number of worker threads (:mod:`.workers`), and one set of per-request :class:`Limits`
(:mod:`.limits`). :func:`~.server.serve` runs it under uvicorn with a clean shutdown on
SIGTERM/SIGINT. See docs/serve.md for the API.
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import Any, Mapping

from .limits import Limits, RequestError
from .registry import Registry
from .workers import PoolClosed, QueueFull, WorkerPool

__all__ = ["create_app", "Limits", "RequestError", "Registry", "WorkerPool", "QueueFull", "PoolClosed"]


def create_app(
    models: Mapping[str, Any],
    *,
    workers: int = 1,
    queue_size: int = 8,
    limits: Limits | None = None,
    ui: bool = True,
    allowed_hosts: list[str] | None = None,
    shutdown_timeout: float = 30.0,
) -> Any:
    """The FastAPI app serving ``models`` (served name -> loaded :class:`unclip.UnCLIP`; the first is the default).

    Args:
        workers: worker threads per model; queue_size: jobs that may wait per model beyond them.
        limits: per-request limits (default :class:`Limits`()).
        ui: mount the Gradio UI at ``/`` (False: the JSON API only, no gradio import).
        allowed_hosts: accepted ``Host`` headers (None: any). A server on 127.0.0.1 should list
            its own names so that a web page cannot reach it through DNS rebinding.
        shutdown_timeout: seconds running jobs get to finish at shutdown.
    """
    from fastapi import FastAPI
    from starlette.concurrency import run_in_threadpool

    from .api import add_routes

    limits = limits or Limits()
    registry = Registry(models, workers, queue_size)
    cleanups: list[Any] = []

    @asynccontextmanager
    async def lifespan(_app: Any):
        yield
        await run_in_threadpool(registry.close, shutdown_timeout)
        for cleanup in cleanups:
            cleanup()

    app = FastAPI(
        title="unclip serve", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url="/api/openapi.json"
    )
    app.state.registry = registry
    app.state.limits = limits
    add_routes(app, registry, limits)
    if allowed_hosts is not None:
        from starlette.middleware.trustedhost import TrustedHostMiddleware

        app.add_middleware(TrustedHostMiddleware, allowed_hosts=allowed_hosts)
    if ui:
        from .ui import mount_ui

        app, jobs = mount_ui(app, registry, limits, workers, queue_size)
        cleanups.append(jobs.close)
    return app
