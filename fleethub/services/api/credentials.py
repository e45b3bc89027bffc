"""How api requests are authenticated: token header or hub cookie, with JupyterHub's XSRF rules.

Tokens come only from the `Authorization` header (never `?token=`) and skip XSRF. A cookie request
to the API needs the `_xsrf` token (bound to its login session) unless it is HEAD/OPTIONS or a
websocket; a cookie POST with a non-JSON body counts as unauthenticated, so no cross-site form
can reach the API.
"""

from __future__ import annotations

from fastapi import Request
from sqlalchemy.ext.asyncio import AsyncSession

from fleethub.shared.identity import (
    LOGIN_COOKIE,
    XSRF_COOKIE,
    Identity,
    TokenCache,
    identity_from_cookie,
    identity_from_token,
    token_from_header,
    xsrf_valid,
)

_XSRF_EXEMPT_METHODS = ("HEAD", "OPTIONS")


def submitted_xsrf(request: Request) -> str | None:
    """The XSRF token a request carries: header `X-XSRFToken` / `X-CSRFToken`, or `?_xsrf=`."""
    return (
        request.headers.get("x-xsrftoken")
        or request.headers.get("x-csrftoken")
        or request.query_params.get("_xsrf")
    )


def cookie_xsrf_ok(request: Request, secret_key: str, ident: Identity, submitted: str | None) -> bool:
    """Whether a cookie-authenticated request carries the XSRF token of its own login session."""
    return xsrf_valid(secret_key, request.cookies.get(XSRF_COOKIE), submitted, ident.session_id)


async def _token_identity(request: Request, session: AsyncSession, token: str) -> Identity | None:
    cache: TokenCache = request.state.token_cache
    return await identity_from_token(session, token, cache)


async def api_identity(request: Request, secret_key: str, session: AsyncSession) -> Identity | None:
    """The identity of an API request, or None (answered 403 by the caller)."""
    token = token_from_header(request.headers.get("authorization"))
    if token is not None:
        return await _token_identity(request, session, token)
    ident = await identity_from_cookie(session, request.cookies.get(LOGIN_COOKIE))
    if ident is None:
        return None
    content_type = request.headers.get("content-type")
    if request.method == "POST" and content_type and not content_type.lower().startswith("application/json"):
        return None
    # a browser's websocket is a GET it marks itself (Sec-Fetch-Mode is a header pages cannot set); the mark
    # exempts nothing else: a cross-site POST or DELETE claiming to be a websocket still needs the token
    websocket = request.method == "GET" and request.headers.get("sec-fetch-mode") == "websocket"
    if request.method in _XSRF_EXEMPT_METHODS or websocket:
        return ident
    return ident if cookie_xsrf_ok(request, secret_key, ident, submitted_xsrf(request)) else None


async def page_identity(request: Request, session: AsyncSession) -> Identity | None:
    """The user of a hub page: the login cookie, or (for scripts) a user's token header."""
    token = token_from_header(request.headers.get("authorization"))
    if token is not None:
        ident = await _token_identity(request, session, token)
        return ident if ident is not None and ident.kind == "user" else None
    return await identity_from_cookie(session, request.cookies.get(LOGIN_COOKIE))
