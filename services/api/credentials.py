"""How api requests are authenticated: token header or hub cookie, with JupyterHub's XSRF rules."""

from __future__ import annotations

from fastapi import Request
from sqlalchemy.ext.asyncio import AsyncSession

from shared.identity import (
    LOGIN_COOKIE,
    XSRF_COOKIE,
    Identity,
    TokenCache,
    identity_from_cookie,
    identity_from_token,
    token_from_header,
    xsrf_valid,
)
from shared.service import Runtime

_SAFE_NAVIGATION = (None, "navigate")


def _submitted_xsrf(request: Request) -> str | None:
    return (
        request.headers.get("x-xsrftoken")
        or request.headers.get("x-csrftoken")
        or request.query_params.get("_xsrf")
    )


async def api_identity(request: Request, runtime: Runtime, session: AsyncSession) -> Identity | None:
    """The identity of an API request, or None (answered 403 by the caller).

    Token requests skip XSRF. Cookie requests need a valid XSRF token unless they are HEAD/OPTIONS
    or a GET that is a navigation (or sent by a client without Sec-Fetch-Mode); a cookie POST with a
    non-JSON body counts as unauthenticated (cross-site form protection).
    """
    cache: TokenCache = request.state.token_cache
    token = token_from_header(request.headers.get("authorization"))
    if token is not None:
        return await identity_from_token(session, token, cache)
    cookie = request.cookies.get(LOGIN_COOKIE)
    if not cookie:
        return None
    ident = await identity_from_cookie(session, cookie)
    if ident is None:
        return None
    method = request.method
    content_type = request.headers.get("content-type")
    if method == "POST" and content_type and not content_type.startswith("application/json"):
        return None
    if method in ("HEAD", "OPTIONS"):
        return ident
    mode = request.headers.get("sec-fetch-mode")
    if method == "GET" and mode in _SAFE_NAVIGATION:
        return ident
    if mode == "websocket":
        return ident
    if xsrf_valid(runtime.secret_key, request.cookies.get(XSRF_COOKIE), _submitted_xsrf(request)):
        return ident
    return None


async def page_identity(request: Request, session: AsyncSession) -> Identity | None:
    """The user of a hub page: the login cookie, or (for scripts) a token header."""
    token = token_from_header(request.headers.get("authorization"))
    if token is not None:
        return await identity_from_token(session, token, request.state.token_cache)
    return await identity_from_cookie(session, request.cookies.get(LOGIN_COOKIE))
