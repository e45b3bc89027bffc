"""What the hub's browser pages share: the login redirect and the XSRF token of their forms."""

from __future__ import annotations

from urllib.parse import quote

from fastapi import Request
from fastapi.responses import RedirectResponse, Response

from fleethub.services.api.credentials import cookie_xsrf_ok
from fleethub.shared.errors import Forbidden
from fleethub.shared.identity import XSRF_COOKIE, Identity, new_xsrf, secure_cookies, set_xsrf_cookie, xsrf_valid
from fleethub.shared.paths import quote_path
from fleethub.shared.service import Runtime


def login_redirect(request: Request) -> Response:
    """302 to the login page, coming back here afterwards (the path, decoded once by the server, is encoded
    again whole, so the `next` of `/x/%252e` is `/x/%252e`, not a dot)."""
    here = quote_path(request.url.path) + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(f"/hub/login?next={quote(here, safe='')}", status_code=302)


def form_xsrf(request: Request, runtime: Runtime, ident: Identity) -> str:
    """The XSRF token for this page's forms: the cookie's if it is valid for this session, else a new one."""
    current = request.cookies.get(XSRF_COOKIE)
    if current and xsrf_valid(runtime.secret_key, current, current, ident.session_id):
        return current
    return new_xsrf(runtime.secret_key, ident.session_id)


def with_xsrf(request: Request, runtime: Runtime, response: Response, xsrf: str) -> Response:
    """`response`, setting the XSRF cookie if the page's token is new."""
    if request.cookies.get(XSRF_COOKIE) != xsrf:
        set_xsrf_cookie(response, xsrf, secure_cookies(runtime.settings.hub_public_url))
    return response


def check_form(request: Request, runtime: Runtime, ident: Identity | None, submitted: str) -> Identity:
    """The user posting a hub form; cookie users must send the form's XSRF token.

    Raises:
        Forbidden: not logged in, or the XSRF token is missing or not this session's.
    """
    if ident is None:
        raise Forbidden("Missing or invalid credentials.")
    if ident.via == "cookie" and not cookie_xsrf_ok(request, runtime.secret_key, ident, submitted):
        raise Forbidden("XSRF cookie does not match the form; reload the page and try again.")
    return ident
