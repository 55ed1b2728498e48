"""The ASGI app of the live demo (Starlette) and ``serve()``, which runs it with uvicorn on loopback.

Endpoints (all answers are JSON; every error is ``{"error": "..."}`` with a 4xx/5xx status):

========================  ===================================================================
``GET /``                 the page (``static/index.html``; plain HTML/JS/CSS, nothing from a CDN)
``GET /static/...``       the page's script and style sheet
``GET /api/models``       the models and whether each is available
``GET /api/attacks``      the attacks, class names and parameter limits
``GET /api/gallery``      held-out test images with labels (PNG data URLs)
``POST /api/upload``      a PNG/JPEG (raw body or multipart field ``file``) -> the converted input (28x28 for MNIST)
``POST /api/attack``      JSON parameters (see :func:`bastion.web.handlers.parse_attack`) -> the result
``POST /api/curve``       ``{"model", "seed"}`` -> accuracy vs eps on the gallery (:func:`~bastion.web.handlers.accuracy_curve`)
========================  ===================================================================

Uploads and attacks run on a bounded worker pool (:class:`~bastion.web.context.Limiter`), so the event
loop keeps serving while they compute; when all workers are busy and the queue is full the answer is 503.
Requests with a ``Host`` other than the loopback names are refused (DNS-rebinding guard).

Flood guards (limits in :class:`~bastion.web.context.Limits`): at most ``max_requests`` POSTs are admitted at
once, *before* their body is read (one more gets 503 at once); a body is read as a stream and refused with 413 as
soon as it passes its size limit (or at once when ``Content-Length`` says so), and with 408 when it has not
fully arrived after ``body_seconds``; a response sent before the request's body was fully read closes the
connection, so a refused client cannot keep it open by trickling the rest. A client that goes away mid-request
is an INFO line in the log. ``serve()`` sets uvicorn's ``limit_concurrency`` and ``timeout_keep_alive``.

Cross-site requests: every POST must come from the demo's own page (see :func:`cross_site_reason`); a page on
another site gets 403.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers, UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bastion.errors import ConfigError, DataError
from bastion.web import handlers
from bastion.web.context import Admission, DemoContext
from bastion.web.errors import (
    CrossSiteError,
    PayloadTooLargeError,
    RequestTimeoutError,
    UnsupportedMediaError,
    status_of,
)

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")
#: slack for the multipart envelope around an upload of at most ``max_upload_bytes``
MULTIPART_OVERHEAD = 16 * 1024

_CSP = ("default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; "
        "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'")
#: on every response: a strict Content-Security-Policy (same-origin only: the page must work offline, with no CDN),
#: ``nosniff``, no referrer and no caching
_SECURITY_HEADERS = [(b"content-security-policy", _CSP.encode()), (b"x-content-type-options", b"nosniff"),
                     (b"referrer-policy", b"no-referrer"), (b"cache-control", b"no-store")]


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


async def _chunks(request: Request, limit: int) -> AsyncGenerator[bytes, None]:
    """The request body as it arrives, refusing more than ``limit`` bytes: at once if ``Content-Length`` says
    so, otherwise as soon as the stream goes past the limit (so a lying or absent length cannot make the server
    read more)."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            n = int(declared)
        except ValueError:
            raise DataError(f"bad Content-Length header {declared!r}") from None
        if n > limit:
            raise PayloadTooLargeError(f"the request body is {n:,} bytes; the limit is {limit:,} bytes")
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLargeError(f"the request body is larger than the limit of {limit:,} bytes")
        yield chunk


@asynccontextmanager
async def _body_deadline(seconds: float | None) -> AsyncIterator[None]:
    """Runs the body's reading under a deadline: :class:`RequestTimeoutError` (408) when it has not finished
    after ``seconds`` (None: no deadline)."""
    try:
        async with asyncio.timeout(seconds):
            yield
    except TimeoutError:
        raise RequestTimeoutError(f"the request body did not arrive within {seconds:g} s") from None


async def read_body(request: Request, limit: int, *, seconds: float | None = None) -> bytes:
    """The request body, refusing more than ``limit`` bytes (413) while reading it, and a body that has not
    fully arrived after ``seconds`` (408)."""
    buf = io.BytesIO()
    async with _body_deadline(seconds):
        async for chunk in _chunks(request, limit):
            buf.write(chunk)
    return buf.getvalue()  # shares the buffer: no second copy of the body


async def _multipart_file(request: Request, limit: int, seconds: float | None) -> tuple[bytes, str | None]:
    """The ``file`` field of a multipart body, parsed as the body streams in (the parser spools a file part
    to disk past 1 MiB), with the same size limit and deadline as :func:`read_body`."""
    async with _body_deadline(seconds):
        try:
            form = await MultiPartParser(request.headers, _chunks(request, limit + MULTIPART_OVERHEAD),
                                         max_files=1, max_fields=8, max_part_size=64 * 1024).parse()
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
        except ClientDisconnect:  # not a server problem: one INFO line, no traceback
            client = request.client
            log.info("%s %s: the client went away before sending the whole request%s", request.method,
                     request.url.path, f" ({client.host}:{client.port})" if client else "")
            return Response(status_code=400)  # never sent: the connection is gone
        except Exception as e:  # every failure becomes JSON; the server keeps serving
            return error_response(e)

    endpoint.__name__ = fn.__name__
    return endpoint


_SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
_DEFAULT_PORTS = {"http": 80, "https": 443}


def _origin_parts(scheme: str, netloc: str) -> tuple[str, str, int] | None:
    try:
        parts = urlsplit(f"{scheme}://{netloc}")
        port = parts.port
    except ValueError:
        return None
    if not parts.hostname:
        return None
    return scheme.lower(), parts.hostname.lower(), port if port is not None else _DEFAULT_PORTS.get(scheme, -1)


def cross_site_reason(headers: Headers, scheme: str = "http") -> str | None:
    """Why a state-changing request (POST) looks sent by a page of another site, or None when it does not.

    * ``Sec-Fetch-Site`` (set by the browser, which a page cannot forge) must be ``same-origin`` or ``none``
      (typed by the user); ``same-site`` and ``cross-site`` are refused. ``same-site`` too: another port of
      127.0.0.1 is another program's page.
    * ``Origin``, when it is not ``null``, must be this server's own origin: the scheme of the connection and
      the ``Host`` the request was sent to (which the trusted-host guard has checked against the names the
      server answers to), port included. ``Origin: null`` (a sandboxed frame, a ``file:`` page, or a
      same-origin request under ``Referrer-Policy: no-referrer``) passes only with
      ``Sec-Fetch-Site: same-origin``.
    * A request with neither header is allowed. Browsers send ``Origin`` with every cross-origin POST (fetch,
      XHR and HTML forms alike), and ``Sec-Fetch-Site`` with every request (Chromium since 2019, Firefox 90,
      Safari 16.4), so a cross-site request from a browser cannot lack both; a request that does comes from a
      local program (curl, a script), which could set either header to anything anyway, so refusing it would
      protect nothing and break local tools.
    """
    site = headers.get("sec-fetch-site")
    origin = headers.get("origin")
    if site is not None and site.strip().lower() not in ("same-origin", "none"):
        return (f"cross-site request refused: the browser says it came from another site (Sec-Fetch-Site: "
                f"{site}); use the demo's own page")
    if origin is None:
        return None
    origin = origin.strip()
    if origin in ("", "null"):
        if site is not None:  # the browser vouched for it above
            return None
        return "cross-site request refused: it was sent by a page without an origin (a sandboxed frame or a file)"
    host = headers.get("host", "")
    scheme_theirs, sep, netloc = origin.partition("://")
    theirs = _origin_parts(scheme_theirs, netloc) if sep else None
    if theirs is None or theirs != _origin_parts(scheme, host):
        return (f"cross-site request refused: it was sent by a page of {origin!r}, not by the demo's own page "
                f"({scheme}://{host})")
    return None


class RequestGuard:
    """Before the app sees a request, refuses cross-site POSTs (:func:`cross_site_reason`, 403 JSON); adds the
    security headers (``_SECURITY_HEADERS``) to every response.

    And a response that starts before the request's body was fully received (a 503, 413, 408 or 403 sent
    early) closes the connection afterwards (``Connection: close``), so that the client cannot keep it open by
    trickling the rest. Before closing, up to ``drain_bytes`` more of the body are read and dropped, for at
    most ``drain_seconds``: closing a socket with unread data resets the connection, and a client still
    sending could see the reset instead of the answer. The bound is small on purpose: reading whole refused
    bodies would let a flood make the server read everything it refuses, which slows the page for everyone
    (``benchmarks/web_flood.py``); a client sending more than that past the refusal may see a reset.
    """

    def __init__(self, app: ASGIApp, *, drain_seconds: float = 1.0, drain_bytes: int = 1024 * 1024) -> None:
        self.app = app
        self.drain_seconds = drain_seconds
        self.drain_bytes = drain_bytes

    async def _drain(self, receive: Receive) -> None:
        dropped = 0
        try:
            async with asyncio.timeout(self.drain_seconds):
                while dropped <= self.drain_bytes:
                    message = await receive()
                    if message["type"] != "http.request" or not message.get("more_body", False):
                        return
                    dropped += len(message.get("body", b""))
        except TimeoutError:
            return

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        received = headers.get("content-length", "0").strip() == "0" and "transfer-encoding" not in headers
        early = False

        async def tracked_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] != "http.request" or not message.get("more_body", False):
                received = True  # the whole body, or the client is gone
            return message

        async def closing_send(message: Message) -> None:
            nonlocal early
            if message["type"] == "http.response.start":
                early = not received
                message = {**message, "headers": [*message.get("headers", []), *_SECURITY_HEADERS,
                                                  *([(b"connection", b"close")] if early else [])]}
            elif early and message["type"] == "http.response.body" and not message.get("more_body", False):
                await send({**message, "more_body": True})  # the answer now; the close after the drain
                await self._drain(tracked_receive)
                message = {"type": "http.response.body", "body": b"", "more_body": False}
            await send(message)

        if scope["method"] not in _SAFE_METHODS:
            reason = cross_site_reason(headers, scope.get("scheme", "http"))
            if reason is not None:
                log.info("%s %s: %s", scope["method"], scope.get("path", ""), reason)
                await error_response(CrossSiteError(reason))(scope, tracked_receive, closing_send)
                return
        await self.app(scope, tracked_receive, closing_send)


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

    def listing(handler: Callable[[DemoContext], Any]) -> Callable[[Request], Awaitable[Any]]:
        async def get(_request: Request) -> Any:
            return await run_in_threadpool(handler, ctx)

        return get

    admission = Admission(ctx.limits.max_requests)
    seconds = ctx.limits.body_seconds

    async def upload(request: Request) -> Any:
        limit = ctx.limits.max_upload_bytes
        ctype = request.headers.get("content-type", "")
        if ctype.lower().startswith(("application/x-www-form-urlencoded", "text/", "application/json")):
            raise UnsupportedMediaError(f"send the image as the request body (image/png or image/jpeg) or as a "
                                        f"multipart field named \"file\", not as {ctype.split(';')[0]!r}")
        with admission.slot():
            if ctype.lower().startswith("multipart/form-data"):
                data, part_type = await _multipart_file(request, limit, seconds)
            else:
                data, part_type = await read_body(request, limit, seconds=seconds), ctype
            return await ctx.limiter.run(handlers.upload, data, part_type, ctx)

    async def json_body(request: Request) -> Any:
        body = await read_body(request, ctx.limits.max_json_bytes, seconds=seconds)
        try:
            return json.loads(body, parse_int=_bounded_int)
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ConfigError(f"the request body must be a JSON object: {e}") from None
        except RecursionError:
            raise ConfigError("the request body is nested too deeply to be a request of this demo") from None

    def computed(handler: Callable[[Any, DemoContext], Any]) -> Callable[[Request], Awaitable[Any]]:
        async def post(request: Request) -> Any:
            with admission.slot():
                params = await json_body(request)
                return await ctx.limiter.run(handler, params, ctx)

        return post

    async def http_error(_request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return JSONResponse({"error": exc.detail}, status_code=exc.status_code, headers=exc.headers)

    async def unexpected(_request: Request, exc: Exception) -> Response:
        return error_response(exc)

    routes = [
        Route("/", index, methods=["GET"]),
        Route("/api/models", _endpoint(listing(handlers.list_models)), methods=["GET"]),
        Route("/api/attacks", _endpoint(listing(handlers.list_attacks)), methods=["GET"]),
        Route("/api/gallery", _endpoint(listing(handlers.gallery)), methods=["GET"]),
        Route("/api/upload", _endpoint(upload), methods=["POST"]),
        Route("/api/attack", _endpoint(computed(handlers.run_attack)), methods=["POST"]),
        Route("/api/curve", _endpoint(computed(handlers.accuracy_curve)), methods=["POST"]),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    hosts = list(allowed_hosts) if allowed_hosts is not None else list(LOOPBACK_HOSTS)
    app = Starlette(
        routes=routes,
        middleware=[Middleware(TrustedHostMiddleware, allowed_hosts=hosts, www_redirect=False),
                    Middleware(RequestGuard)],
        exception_handlers={HTTPException: http_error, Exception: unexpected},
        lifespan=lifespan,
    )
    app.state.ctx = ctx
    app.state.admission = admission
    return app


def serve(host: str = "127.0.0.1", port: int = 8000, device: str = "cpu", *, torch_threads: int | None = 1,
          log_level: str = "info", ctx: DemoContext | None = None) -> None:
    """Run the demo with uvicorn until interrupted.

    Args:
        host: interface to bind (loopback by default; the demo has no authentication).
        port: TCP port.
        device: where the models run.
        torch_threads: torch's intra-op threads for this process (default 1: one 28x28 image gains nothing
            from more, and on a busy machine extra threads only add contention); None leaves torch's default.
        log_level: uvicorn's log level.
        ctx: the demo to serve (default: the shipped models on ``device``; see
            :func:`~bastion.web.context.own_model_context` for your own model and images).
    """
    import torch
    import uvicorn

    if torch_threads is not None:
        torch.set_num_threads(torch_threads)
    hosts = list(LOOPBACK_HOSTS) if host in LOOPBACK_HOSTS else (["*"] if host in ("0.0.0.0", "::") else
                                                                 [*LOOPBACK_HOSTS, host])
    ctx = ctx or DemoContext(device=device)
    handlers.warm_up(ctx)
    app = create_app(ctx, allowed_hosts=hosts)
    uvicorn.run(app, host=host, port=port, log_level=log_level, limit_concurrency=ctx.limits.max_connections,
                timeout_keep_alive=ctx.limits.keep_alive_seconds)


__all__ = ["create_app", "serve", "read_body", "error_response", "cross_site_reason", "Admission"]
