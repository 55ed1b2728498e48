"""The ASGI app of the live demo (Starlette) and ``serve()``, which runs it with uvicorn on loopback.

Endpoints (all answers are JSON; every error is ``{"error": "..."}`` with a 4xx/5xx status):

========================  ===================================================================
``GET /``                 the page (``static/index.html``; plain HTML/JS/CSS, nothing from a CDN)
``GET /static/...``       the page's script and style sheet
``GET /api/models``       the models and whether each is available
``GET /api/attacks``      the attacks, class names and parameter limits
``GET /api/gallery``      held-out test images with labels (PNG data URLs)
``POST /api/upload``      a PNG/JPEG (raw body or multipart field ``file``) -> the converted 28x28 input
``POST /api/attack``      JSON parameters (see :func:`bastion.web.handlers.parse_attack`) -> the result
========================  ===================================================================

Uploads and attacks run on a bounded worker pool (:class:`~bastion.web.context.Limiter`), so the event
loop keeps serving while they compute; when all workers are busy and the queue is full the answer is 503.
Requests with a ``Host`` other than the loopback names are refused (DNS-rebinding guard).
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers, UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bastion.errors import ConfigError, DataError
from bastion.web import handlers
from bastion.web.context import DemoContext
from bastion.web.errors import PayloadTooLargeError, UnsupportedMediaError, status_of

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")
#: slack for the multipart envelope around an upload of at most ``max_upload_bytes``
MULTIPART_OVERHEAD = 16 * 1024

_CSP = ("default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; "
        "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'")


def _bounded_int(text: str) -> int:
    """JSON integers of up to 18 digits (no request field needs more); longer ones are refused here, before
    Python converts them (huge ones overflow float checks, over 4,300 digits ``int`` itself refuses)."""
    if len(text.lstrip("-")) > 18:
        raise ConfigError(f"the request holds an integer of {len(text.lstrip('-'))} digits; numbers that large are "
                          "out of range for every field")
    return int(text)

def error_response(exc: BaseException) -> JSONResponse:
    """``{"error": message}`` with the status :func:`~bastion.web.errors.status_of` gives."""
    status = status_of(exc)
    if status >= 500 and status != 503:
        log.exception("internal error", exc_info=exc)
        message = f"internal error ({type(exc).__name__}); see the server log"
    else:
        message = str(exc)
    headers = {"Retry-After": "1"} if status == 503 else None
    return JSONResponse({"error": message}, status_code=status, headers=headers)


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refusing more than ``limit`` bytes: at once if ``Content-Length`` says so,
    otherwise as soon as the stream goes past the limit (so a lying or absent length cannot make the server
    read more)."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            n = int(declared)
        except ValueError:
            raise DataError(f"bad Content-Length header {declared!r}") from None
        if n > limit:
            raise PayloadTooLargeError(f"the request body is {n:,} bytes; the limit is {limit:,} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLargeError(f"the request body is larger than the limit of {limit:,} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def _multipart_file(headers: Headers, body: bytes, limit: int) -> tuple[bytes, str | None]:
    async def stream() -> AsyncGenerator[bytes, None]:
        yield body

    try:
        form = await MultiPartParser(headers, stream(), max_files=1, max_fields=8, max_part_size=64 * 1024).parse()
    except MultiPartException as e:
        raise DataError(f"bad multipart upload: {e.message}") from None
    try:
        part = form.get("file")
        if not isinstance(part, UploadFile):
            raise DataError('a multipart upload must carry the image in a file field named "file"')
        data = await part.read(limit + 1)
        if len(data) > limit:
            raise PayloadTooLargeError(f"the upload is larger than the limit of {limit:,} bytes")
        return data, part.content_type
    finally:
        await form.close()


def _endpoint(fn: Callable[[Request], Awaitable[Any]]) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        try:
            return JSONResponse(await fn(request))
        except Exception as e:  # every failure becomes JSON; the server keeps serving
            return error_response(e)

    endpoint.__name__ = fn.__name__
    return endpoint


class SecurityHeaders:
    """Adds a strict Content-Security-Policy (same-origin only: the page must work offline, with no CDN),
    ``nosniff`` and no-referrer to every response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers += [(b"content-security-policy", _CSP.encode()), (b"x-content-type-options", b"nosniff"),
                            (b"referrer-policy", b"no-referrer"), (b"cache-control", b"no-store")]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def create_app(ctx: DemoContext | None = None, *, allowed_hosts: Sequence[str] | None = None) -> Starlette:
    """The demo's Starlette app.

    Args:
        ctx: the demo context (models, gallery, limits, workers); default ``DemoContext()`` on CPU.
        allowed_hosts: accepted ``Host`` header names (default the loopback names); ``["*"]`` accepts any.
    """
    ctx = ctx or DemoContext()

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            ctx.close()

    async def index(_request: Request) -> Response:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    async def models(_request: Request) -> Any:
        return await run_in_threadpool(handlers.list_models, ctx)

    async def attacks(_request: Request) -> Any:
        return await run_in_threadpool(handlers.list_attacks, ctx)

    async def gallery(_request: Request) -> Any:
        return await run_in_threadpool(handlers.gallery, ctx)

    async def upload(request: Request) -> Any:
        limit = ctx.limits.max_upload_bytes
        ctype = request.headers.get("content-type", "")
        if ctype.lower().startswith("multipart/form-data"):
            body = await read_body(request, limit + MULTIPART_OVERHEAD)
            data, part_type = await _multipart_file(request.headers, body, limit)
        elif ctype.lower().startswith(("application/x-www-form-urlencoded", "text/", "application/json")):
            raise UnsupportedMediaError(f"send the image as the request body (image/png or image/jpeg) or as a "
                                        f"multipart field named \"file\", not as {ctype.split(';')[0]!r}")
        else:
            data, part_type = await read_body(request, limit), ctype
        return await ctx.limiter.run(handlers.upload, data, part_type, ctx)

    async def attack(request: Request) -> Any:
        body = await read_body(request, ctx.limits.max_json_bytes)
        try:
            params = json.loads(body, parse_int=_bounded_int)
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ConfigError(f"the request body must be a JSON object: {e}") from None
        except RecursionError:
            raise ConfigError("the request body is nested too deeply to be an attack request") from None
        return await ctx.limiter.run(handlers.run_attack, params, ctx)

    async def http_error(_request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return JSONResponse({"error": exc.detail}, status_code=exc.status_code, headers=exc.headers)

    async def unexpected(_request: Request, exc: Exception) -> Response:
        return error_response(exc)

    routes = [
        Route("/", index, methods=["GET"]),
        Route("/api/models", _endpoint(models), methods=["GET"]),
        Route("/api/attacks", _endpoint(attacks), methods=["GET"]),
        Route("/api/gallery", _endpoint(gallery), methods=["GET"]),
        Route("/api/upload", _endpoint(upload), methods=["POST"]),
        Route("/api/attack", _endpoint(attack), methods=["POST"]),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    hosts = list(allowed_hosts) if allowed_hosts is not None else list(LOOPBACK_HOSTS)
    app = Starlette(
        routes=routes,
        middleware=[Middleware(TrustedHostMiddleware, allowed_hosts=hosts, www_redirect=False),
                    Middleware(SecurityHeaders)],
        exception_handlers={HTTPException: http_error, Exception: unexpected},
        lifespan=lifespan,
    )
    app.state.ctx = ctx
    return app


def serve(host: str = "127.0.0.1", port: int = 8000, device: str = "cpu", *, torch_threads: int | None = 1,
          log_level: str = "info") -> None:
    """Run the demo with uvicorn until interrupted.

    Args:
        host: interface to bind (loopback by default; the demo has no authentication).
        port: TCP port.
        device: where the models run.
        torch_threads: torch's intra-op threads for this process (default 1: one 28x28 image gains nothing
            from more, and on a busy machine extra threads only add contention); None leaves torch's default.
        log_level: uvicorn's log level.
    """
    import torch
    import uvicorn

    if torch_threads is not None:
        torch.set_num_threads(torch_threads)
    hosts = list(LOOPBACK_HOSTS) if host in LOOPBACK_HOSTS else (["*"] if host in ("0.0.0.0", "::") else
                                                                 [*LOOPBACK_HOSTS, host])
    ctx = DemoContext(device=device)
    handlers.warm_up(ctx)
    app = create_app(ctx, allowed_hosts=hosts)
    uvicorn.run(app, host=host, port=port, log_level=log_level)


__all__ = ["create_app", "serve", "read_body", "error_response"]
