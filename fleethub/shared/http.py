"""FastAPI glue shared by the HTTP services: JupyterHub's JSON error shape, common headers, JSON bodies.

Every error leaves as `{"status": N, "message": "..."}` with `Content-Type: application/json` (API
paths, JSON clients) or a small HTML page (browser pages); bad input is a 400, never a 422 or a
traceback. PostgreSQL or NATS away (however the driver says it: `outage_of`) is a 503 with `Retry-After`
and a message naming the dependency, never a 500.

`CommonHeaders` puts `X-JupyterHub-Version` and the security headers on every response,
including the 500 it renders itself for an unexpected exception.
"""

from __future__ import annotations

import html
import json
import logging
import math
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.telemetry import TelemetryConfig
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fleethub.shared.baseurl import public_path
from fleethub.shared.bus import bus_unavailable
from fleethub.shared.db.outage import database_unavailable
from fleethub.shared.errors import (
    BadRequest,
    BusError,
    DatabaseUnavailable,
    FleethubError,
    TooManyRequests,
    Unavailable,
)
from fleethub.shared.names import storable
from fleethub.shared.service import Runtime
from fleethub.shared.templating import Nav, TemplateFailed, Templates

log = logging.getLogger(__name__)

# The version we answer as: JupyterHub 5.x clients (singleuser, idle culler) check it.
JUPYTERHUB_COMPAT_VERSION = "5.4.0"
MAX_JSON_BODY = 1024 * 1024
API_PREFIX = "/hub/api"
BUS_UNAVAILABLE = "The message bus (NATS) is unavailable; try again in a few seconds"
# FastAPI's own OpenTelemetry hooks, off: asking for the global providers on every request cost ~4 % of
# a request's CPU, and fleethub configures no OpenTelemetry provider
NO_TELEMETRY: TelemetryConfig = {"tracing": False, "metrics": False, "logs": False}
_COMMON_HEADERS = [
    (b"x-jupyterhub-version", JUPYTERHUB_COMPAT_VERSION.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
]
_API_HEADERS = [
    (b"content-security-policy", b"default-src 'none'"),
    (b"access-control-allow-headers", b"accept, content-type, authorization"),
]
# everything an API answer carries (for answers that bypass `CommonHeaders`: fleethub.services.api.fastread)
API_RESPONSE_HEADERS = (*_COMMON_HEADERS, *_API_HEADERS)
_PAGE_HEADERS = [
    (b"content-security-policy", b"default-src 'self'; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'"),
    (b"x-frame-options", b"DENY"),
]

# for a page served under the API's prefix (the OAuth consent page): its stylesheet loads, and no frame holds it
PAGE_RESPONSE_HEADERS = {name.decode(): value.decode() for name, value in _PAGE_HEADERS}


def _is_api(path: str) -> bool:
    # /hub/metrics is read by Prometheus, not a browser: API headers and JSON errors, as JupyterHub's
    return path == API_PREFIX or path.startswith(API_PREFIX + "/") or path == "/hub/metrics"


class CommonHeaders:
    """ASGI middleware: version and security headers on every response; OPTIONS on the API; last-resort
    503 (a dependency is away) or 500.

    It sits inside Starlette's ServerErrorMiddleware, so an unexpected exception is rendered here
    (with the headers) rather than there (without them).
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        api = _is_api(scope["path"])
        extra = [*_COMMON_HEADERS, *(_API_HEADERS if api else _PAGE_HEADERS)]
        started = False

        async def send_with_headers(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = list(message.get("headers", []))
                names = {name.lower() for name, _ in headers}
                headers.extend(h for h in extra if h[0] not in names)
                message["headers"] = headers
            await send(message)

        if api and scope["method"] == "OPTIONS":  # CORS preflight on any API path: 200, empty
            await Response(status_code=200)(scope, receive, send_with_headers)
            return
        try:
            await self.app(scope, receive, send_with_headers)
        except Exception as exc:
            if started:
                log.warning("error after the response started on %s %s: %r", scope.get("method"), scope.get("path"),
                            exc)
                raise  # too late for an error response; the server closes the connection
            unavailable = outage_of(exc)
            if unavailable is not None:
                log.warning("%s on %s %s: %s", type(unavailable).__name__, scope.get("method"), scope.get("path"),
                            exc)
                response = unavailable_response(Request(scope), unavailable)
            else:
                log.exception("unhandled error on %s %s", scope.get("method"), scope.get("path"))
                response = error_response(Request(scope), 500, "Unhandled error")
            await response(scope, receive, send_with_headers)


def outage_of(exc: BaseException) -> Unavailable | None:
    """What `exc` means for the client if a dependency is away (PostgreSQL or NATS), else None."""
    if isinstance(exc, Unavailable):
        return exc
    if database_unavailable(exc):
        return DatabaseUnavailable()
    if bus_unavailable(exc):
        return BusError(BUS_UNAVAILABLE)
    return None


def unavailable_response(request: Request, exc: Unavailable) -> Response:
    """503 with `Retry-After` and a message naming the dependency (not the library's text: a `BusError`
    can name internal subjects)."""
    message = BUS_UNAVAILABLE if isinstance(exc, BusError) else exc.message
    return error_response(request, exc.status, message, headers={"Retry-After": str(exc.retry_after)})


def require_bus(runtime: Runtime) -> None:
    """For a request that needs NATS right now (not through the outbox): 503 at once while it is away,
    rather than after the bus's own timeouts.

    Raises:
        BusError: the bus is disconnected (reconnecting).
    """
    if not runtime.bus.healthy.is_set():
        raise BusError(BUS_UNAVAILABLE)


def wants_json(request: Request) -> bool:
    """API paths and clients that ask for JSON get JSON errors; browsers get a page."""
    if _is_api(request.url.path):
        return True
    accept = request.headers.get("accept", "")
    return "application/json" in accept and "text/html" not in accept


def client_address(request: Request) -> str:
    """The client's address as the proxy reports it: uvicorn believes the X-Forwarded-For of the local
    proxy, which believes a chain only from `proxy.trusted_proxies` (see `services/proxy/headers.py`)."""
    return request.client.host if request.client is not None else "unknown"


def error_response(request: Request, status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    """The one place errors are rendered.

    A message may echo input (a name from a JSON body can hold a lone surrogate, which UTF-8 cannot
    encode): such characters are written as `\\udxxx` escapes rather than failing the response.
    """
    message = message.encode("utf-8", "backslashreplace").decode("utf-8")
    if wants_json(request):
        return JSONResponse({"status": status, "message": message}, status_code=status, headers=headers)
    return HTMLResponse(error_html(request, status, message), status_code=status, headers=headers)


def error_html(request: Request, status: int, message: str, url: str = "", nav: Nav | None = None) -> str:
    """An error page: the service's `error.html` template (`fleethub.shared.templating`) with `url` (the
    address that failed, if any) and `nav` (the user's navigation bar, None: none), or a bare page when
    there are no templates (outside the lifespan) or the template itself fails (logged there)."""
    templates: Templates | None = getattr(request.state, "templates", None)
    if templates is not None:
        try:
            return templates.render("error.html", status=status, message=message, url=url, retry=False, nav=nav)
        except TemplateFailed:
            pass
    home = public_path(templates.base_url if templates is not None else "/", "/hub/home")
    return (
        f"<!doctype html><html><head><meta charset=utf-8><title>{status}</title></head><body>"
        f"<h1>{status}</h1><p>{html.escape(message)}</p><p><a href=\"{home}\">Home</a></p></body></html>"
    )


def _validation_message(exc: RequestValidationError) -> str:
    errors = exc.errors()
    if not errors:
        return "Invalid request"
    first = errors[0]
    if first.get("type") == "json_invalid":
        return "Invalid JSON in request body"
    loc = ".".join(str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path", "header", "cookie"))
    msg = str(first.get("msg", "invalid"))
    return f"{loc}: {msg}" if loc else msg


def install_error_handlers(app: FastAPI) -> None:
    """Render every error in JupyterHub's shape."""

    @app.exception_handler(FleethubError)
    async def fleethub_error(request: Request, exc: FleethubError) -> Response:
        if isinstance(exc, Unavailable):
            log.warning("%s on %s %s: %s", type(exc).__name__, request.method, request.url.path, exc.message)
            return unavailable_response(request, exc)
        headers = {"Retry-After": str(exc.retry_after)} if isinstance(exc, TooManyRequests) else None
        return error_response(request, exc.status, exc.message, headers)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        message = exc.detail if isinstance(exc.detail, str) else "Error"
        return error_response(request, exc.status_code, message, getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> Response:
        return error_response(request, 400, _validation_message(exc))


async def read_json(request: Request, max_bytes: int = MAX_JSON_BODY) -> Any:
    """The JSON body of a request whatever its Content-Type (JupyterHub's clients send it either way).

    Returns None for an empty body.

    Raises:
        BadRequest: not JSON, not UTF-8, nested too deeply, or holding what PostgreSQL cannot store.
        FleethubError: (413) larger than `max_bytes`.
    """
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise FleethubError(f"Request body larger than {max_bytes} bytes", status=413)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise FleethubError(f"Request body larger than {max_bytes} bytes", status=413)
        chunks.append(chunk)
    raw = b"".join(chunks)
    if not raw.strip():
        return None
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        raise BadRequest("Invalid JSON in request body") from None
    problem = _unstorable(data)
    if problem:
        raise BadRequest(f"Invalid JSON in request body: {problem}")
    return data


def _unstorable(data: Any) -> str | None:
    """What in a parsed body PostgreSQL could not hold (every body ends up there or on the bus), or None.

    JSON may carry `\\u0000` and lone surrogates (`\\ud800`), which PostgreSQL text and JSONB refuse; Python's
    parser also takes `NaN` and `Infinity` (not JSON) and reads numbers beyond a double's range as infinity.
    """
    todo: list[Any] = [data]
    while todo:  # iterative: the nesting is as deep as the parser allowed
        item = todo.pop()
        if isinstance(item, dict):
            todo.extend(item)
            todo.extend(item.values())
        elif isinstance(item, list):
            todo.extend(item)
        elif isinstance(item, str) and not storable(item):
            return "strings must not contain NUL characters or lone surrogates"
        elif isinstance(item, float) and not math.isfinite(item):
            return "numbers must be finite"
    return None


def iso(dt: datetime | None) -> str | None:
    """JupyterHub's timestamp form: ISO-8601 UTC with `Z` (microseconds only when non-zero)."""
    if dt is None:
        return None
    if dt.tzinfo is None:
        return dt.isoformat() + "Z"
    if dt.tzinfo is not UTC:  # asyncpg's are UTC already: astimezone and replace cost a page of users ~8 %
        dt = dt.astimezone(UTC)
    return dt.isoformat()[:-6] + "Z"  # "+00:00"


async def _runtime_of(request: Request) -> Runtime:  # async: a plain def would run in a worker thread
    runtime: Runtime = request.state.runtime
    return runtime


async def _session_of(runtime: Annotated[Runtime, Depends(_runtime_of)]) -> AsyncIterator[AsyncSession]:
    async with runtime.sessions() as session:
        yield session


async def _read_session_of(runtime: Annotated[Runtime, Depends(_runtime_of)]) -> AsyncIterator[AsyncSession]:
    async with (runtime.read_sessions or runtime.sessions)() as session:
        yield session


RuntimeDep = Annotated[Runtime, Depends(_runtime_of)]
"""The service's runtime (lifespan state `runtime`), for route signatures."""
DbSession = Annotated[AsyncSession, Depends(_session_of)]
"""A database session for one request."""
ReadSession = Annotated[AsyncSession, Depends(_read_session_of)]
"""An autocommit session for a handler that only reads, in one statement (no transaction to begin)."""
