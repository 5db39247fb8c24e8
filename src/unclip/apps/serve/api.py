"""The JSON API: ``GET /api/health``, ``GET /api/models`` and one ``POST /api/<job>`` per job.

Each POST reads at most :attr:`Limits.max_body_bytes` (413 beyond), parses the body
strictly (:mod:`unclip.apps.serve.schemas`), checks it against the limits and the model,
queues the job on the model's pool (503 with ``Retry-After`` at once when the queue is
full) and answers with the images as base64 PNGs and the manifest. Errors are JSON
``{"error": message, "field": name}``: 400 for a bad value, 413 for a size, 415 for a body
that is not ``application/json`` (which also keeps cross-site HTML forms from posting to a
local server without a CORS preflight), 503 when busy or shutting down. Anything
unexpected is logged with its traceback and answered 500 without internals.
"""

from __future__ import annotations

import asyncio
import base64
import io
import logging
from dataclasses import asdict
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from ...errors import UnclipError
from .jobs import JOBS, RUNNERS, JobResult
from .limits import Limits, RequestError
from .registry import Registry
from .schemas import PARAMS, REQUESTS, parse_body
from .workers import PoolClosed, QueueFull

log = logging.getLogger(__name__)


def _error(
    status: int, message: str, field: str | None, headers: dict[str, str] | None = None, **extra: Any
) -> JSONResponse:
    return JSONResponse({"error": message, "field": field, **extra}, status_code=status, headers=headers)


def png_base64(image: Any) -> str:
    """A PIL image as base64 PNG text."""
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def render(kind: str, result: JobResult, with_latent: bool) -> dict[str, Any]:
    """A job's result as the JSON answer: images (entries + ``png_base64``), manifest, and extras."""
    manifest = result.manifest()
    images = [{**entry, "png_base64": png_base64(im)} for entry, im in zip(manifest["images"], result.images)]
    out: dict[str, Any] = {
        "command": kind,
        "model": result.model,
        "settings": result.settings,
        "images": images,
        "manifest": manifest,
    }
    if result.reconstruction is not None:
        out["reconstruction"] = {"eta": 0.0, "png_base64": png_base64(result.reconstruction)}
    if result.info:
        out.update(result.info)
    if with_latent:
        out["latents"] = {label: base64.b64encode(data).decode("ascii") for label, data in result.latents.items()}
    return out


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it passes ``limit`` bytes (declared or streamed)."""
    ctype = request.headers.get("content-type", "")
    if ctype.split(";")[0].strip().lower() != "application/json":
        raise RequestError(
            "content-type", f"the body must be JSON sent as 'application/json', got {ctype or 'nothing'!r}", 415
        )
    declared = request.headers.get("content-length")
    if declared is not None and declared.strip().isdigit() and int(declared) > limit:
        raise RequestError("body", f"the body is {int(declared)} bytes; the limit is {limit}", 413)
    chunks, total = [], 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > limit:
            raise RequestError("body", f"the body is larger than the limit of {limit} bytes", 413)
        chunks.append(chunk)
    return b"".join(chunks)


def add_error_handlers(app: FastAPI) -> None:
    """Map the serve errors to JSON answers (see the module docstring)."""

    @app.exception_handler(RequestError)
    async def _request_error(_: Request, exc: RequestError) -> JSONResponse:
        return _error(exc.status, str(exc), exc.field)

    @app.exception_handler(QueueFull)
    async def _queue_full(_: Request, exc: QueueFull) -> JSONResponse:
        return _error(503, str(exc), None, {"Retry-After": str(exc.retry_after)}, retry_after_s=exc.retry_after)

    @app.exception_handler(PoolClosed)
    async def _closed(_: Request, exc: PoolClosed) -> JSONResponse:
        return _error(503, str(exc), None, {"Retry-After": "10"}, retry_after_s=10)

    @app.exception_handler(UnclipError)
    async def _unclip_error(_: Request, exc: UnclipError) -> JSONResponse:
        # a check the library made that the server's own checks did not anticipate: still the client's input
        return _error(400, str(exc), "body")

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error answering %s %s", request.method, request.url.path)
        return _error(500, "internal error; the server log has the details", None)


def add_routes(app: FastAPI, registry: Registry, limits: Limits) -> None:
    """Register the API's routes on ``app``."""
    add_error_handlers(app)

    @app.get("/api/health")
    async def health() -> dict[str, Any]:
        """Liveness and the served model names (answered from the event loop, never queued)."""
        status = "shutting down" if registry.closed else "ok"
        return {
            "status": status,
            "models": registry.names,
            "queues": {n: m.pool.stats() for n, m in registry.models.items()},
        }

    @app.get("/api/models")
    async def models() -> dict[str, Any]:
        """What each model can do (conditioning modes, output sizes, CLIP context) and the server's limits."""
        return {
            "models": [m.describe() for m in registry.models.values()],
            "default": registry.default,
            "limits": {**asdict(limits), "max_body_bytes": limits.max_body_bytes},
        }

    for kind in JOBS:
        schema = REQUESTS[kind].model_json_schema()
        extra = {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}
        app.add_api_route(
            f"/api/{kind}",
            _job_route(kind, registry, limits),
            methods=["POST"],
            openapi_extra=extra,
            summary=f"run '{kind}' (see docs/serve.md)",
        )


def _job_route(kind: str, registry: Registry, limits: Limits):
    async def route(request: Request) -> JSONResponse:
        req = parse_body(kind, await read_body(request, limits.max_body_bytes))
        served = registry.get(req.model)
        params = await run_in_threadpool(PARAMS[kind], req, served, limits)  # decoding uploads is CPU work
        future = registry.submit(served, RUNNERS[kind], served.pipe, served.name, **params)
        result = await asyncio.wrap_future(future)
        with_latent = kind == "invert" or bool(getattr(req, "return_latent", False))
        return JSONResponse(await run_in_threadpool(render, kind, result, with_latent))

    route.__name__ = f"post_{kind}"
    return route
