"""`/hub/signup`: anyone may create a password account when `auth.open_signup` is on (else 404)."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, Response

from fleethub.services.auth.deps import DbSession, Runtime
from fleethub.services.auth.pages import signup_page
from fleethub.services.auth.routes.login import EXPIRED_FORM
from fleethub.shared.accounts import create_account
from fleethub.shared.authenticators import allowed
from fleethub.shared.errors import FleethubError, NotFound
from fleethub.shared.identity import XSRF_COOKIE, new_xsrf, secure_cookies, set_xsrf_cookie, xsrf_valid

log = logging.getLogger(__name__)
router = APIRouter()


def _check_enabled(runtime: Runtime) -> None:
    auth = runtime.settings.auth
    if not auth.open_signup or auth.authenticator != "password":
        raise NotFound("Sign-up is not enabled.")


def _page(runtime: Runtime, status: int = 200, error: str = "", username: str = "", done: str = "") -> Response:
    xsrf = new_xsrf(runtime.secret_key)
    response = HTMLResponse(signup_page(xsrf, error=error, username=username, done=done), status_code=status,
                            headers={"Cache-Control": "no-store"})
    set_xsrf_cookie(response, xsrf, secure_cookies(runtime.settings.hub_public_url))
    return response


@router.get("/hub/signup")
async def signup_form(runtime: Runtime) -> Response:
    _check_enabled(runtime)
    return _page(runtime)


@router.post("/hub/signup")
async def signup(
    request: Request,
    runtime: Runtime,
    session: DbSession,
    username: str = Form("", max_length=1000),
    password: str = Form("", max_length=1000),
    xsrf: str = Form("", alias="_xsrf", max_length=500),
) -> Response:
    _check_enabled(runtime)
    if not xsrf_valid(runtime.secret_key, request.cookies.get(XSRF_COOKIE), xsrf):
        return _page(runtime, 403, EXPIRED_FORM)
    try:
        async with session.begin():
            name = await create_account(session, username, password)
            admins = set(runtime.settings.auth.admin_users)
            if not allowed(runtime.settings, name) or name in admins:  # raising rolls the account back
                raise FleethubError("This user name may not sign up.", status=403)
    except FleethubError as exc:
        return _page(runtime, exc.status, exc.message, username[:255])
    log.info("account %s created by sign-up", name)
    return _page(runtime, 201, done=name)
