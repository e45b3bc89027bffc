"""FastAPI glue shared by the HTTP services: JupyterHub's JSON error shape and common headers.

Every error leaves through `install_error_handlers` as `{"status": N, "message": "..."}` (API paths)
or a small HTML page (browser pages); bad input is a 400, never a 422 or a traceback.
"""

from __future__ import annotations

import html
import logging
from typing import Any

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sqlalchemy.ext.asyncio import AsyncSession

from shared.errors import FleethubError, TooManyRequests
from shared.service import Runtime

log = logging.getLogger(__name__)

# The version we answer as: JupyterHub 5.x clients (singleuser, idle culler) check it.
JUPYTERHUB_COMPAT_VERSION = "5.4.0"
_COMMON_HEADERS = [
    (b"x-jupyterhub-version", JUPYTERHUB_COMPAT_VERSION.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
]
_API_CSP = (b"content-security-policy", b"default-src 'none'")
_PAGE_CSP = (b"content-security-policy", b"default-src 'self'; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'")


class CommonHeaders:
    """ASGI middleware adding the version and security headers to every response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        csp = _API_CSP if scope["path"].startswith("/hub/api") else _PAGE_CSP

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                names = {name.lower() for name, _ in headers}
                headers.extend(h for h in (*_COMMON_HEADERS, csp) if h[0] not in names)
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)


def wants_json(request: Request) -> bool:
    """API paths and clients that ask for JSON get JSON errors; browsers get a page."""
    if request.url.path.startswith("/hub/api"):
        return True
    accept = request.headers.get("accept", "")
    return "application/json" in accept and "text/html" not in accept


def error_response(request: Request, status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    """The one place errors are rendered."""
    if wants_json(request):
        return JSONResponse({"status": status, "message": message}, status_code=status, headers=headers)
    body = (
        f"<!doctype html><html><head><title>{status}</title></head><body>"
        f"<h1>{status}</h1><p>{html.escape(message)}</p><p><a href=\"/hub/home\">Home</a></p></body></html>"
    )
    return HTMLResponse(body, status_code=status, headers=headers)


def _validation_message(exc: RequestValidationError) -> str:
    errors = exc.errors()
    if not errors:
        return "Invalid request"
    first = errors[0]
    loc = ".".join(str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path"))
    msg = str(first.get("msg", "invalid"))
    if first.get("type") == "json_invalid":
        return "Invalid JSON in request body"
    return f"{loc}: {msg}" if loc else msg


def install_error_handlers(app: FastAPI) -> None:
    """Render every error in JupyterHub's shape."""

    @app.exception_handler(FleethubError)
    async def fleethub_error(request: Request, exc: FleethubError) -> Response:
        headers = {"Retry-After": str(exc.retry_after)} if isinstance(exc, TooManyRequests) else None
        return error_response(request, exc.status, exc.message, headers)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        message = exc.detail if isinstance(exc.detail, str) else "Error"
        if exc.status_code == 404 and message == "Not Found":
            message = "Not Found"
        return error_response(request, exc.status_code, message, getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> Response:
        return error_response(request, 400, _validation_message(exc))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(request, 500, "Unhandled error")


def iso(dt: Any) -> str | None:
    """JupyterHub's timestamp form: ISO-8601 UTC with `Z` (microseconds only when non-zero)."""
    if dt is None:
        return None
    from datetime import UTC

    value = dt.astimezone(UTC).replace(tzinfo=None)
    return value.isoformat() + "Z"


def _runtime(request: Request) -> Runtime:
    return request.state.runtime  # type: ignore[no-any-return]


async def _session(runtime: Annotated[Runtime, Depends(_runtime)]) -> AsyncIterator[AsyncSession]:
    async with runtime.sessions() as session:
        yield session


RuntimeDep = Annotated[Runtime, Depends(_runtime)]
"""The service's runtime (lifespan state `runtime`)."""
DbSession = Annotated[AsyncSession, Depends(_session)]
"""A database session for one request."""
