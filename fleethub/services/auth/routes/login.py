"""`/hub/login`, `/hub/logout` and the auth replica's health probe."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response

from fleethub.services.auth.deps import AuthenticatorDep, DbSession, Runtime
from fleethub.services.auth.pages import login_page
from fleethub.services.auth.sessions import log_in, log_out
from fleethub.services.auth.xsrf import anonymous_form, check_anonymous_form, clear_presession_cookie
from fleethub.shared.authenticators import allowed
from fleethub.shared.errors import BadRequest
from fleethub.shared.identity import (
    LOGIN_COOKIE,
    clear_login_cookies,
    identity_from_cookie,
    new_xsrf,
    secure_cookies,
    set_login_cookies,
    set_xsrf_cookie,
    validate_next,
)
from fleethub.shared.names import normalize_username

log = logging.getLogger(__name__)
router = APIRouter()
EXPIRED_FORM = "Your session expired or the form was not sent from this site; please try again."


def _form_page(request: Request, runtime: Runtime, next_url: str, status: int = 200, error: str = "",
               username: str = "") -> Response:
    signup = runtime.settings.auth.open_signup
    return anonymous_form(request, runtime, lambda xsrf: login_page(xsrf, next_url, error=error, username=username,
                                                                    signup=signup), status)


@router.get("/hub/login")
async def login_form(request: Request, runtime: Runtime, session: DbSession, next: str = "") -> Response:
    next_url = validate_next(next, runtime.settings.hub_public_url)
    if await identity_from_cookie(session, request.cookies.get(LOGIN_COOKIE)) is not None:
        return RedirectResponse(next_url, status_code=302)
    return _form_page(request, runtime, next_url)


@router.post("/hub/login")
async def login(
    request: Request,
    runtime: Runtime,
    session: DbSession,
    authenticator: AuthenticatorDep,
    username: str = Form("", max_length=1000),
    password: str = Form("", max_length=1000),
    xsrf: str = Form("", alias="_xsrf", max_length=500),
    next: str = "",
) -> Response:
    settings = runtime.settings
    next_url = validate_next(next, settings.hub_public_url)
    refused = check_anonymous_form(request, runtime.secret_key, settings.hub_public_url, xsrf)
    if refused is not None:
        log.warning("login form refused: %s", refused)
        return _form_page(request, runtime, next_url, 403, EXPIRED_FORM)
    try:
        normalize_username(username)
    except BadRequest as exc:
        return _form_page(request, runtime, next_url, 400, exc.message)
    async with session.begin():
        name = await authenticator.authenticate(session, username, password)
    if name is None or not allowed(settings, name):
        log.info("failed login for %r", username[:64])
        return _form_page(request, runtime, next_url, 403, "Invalid username or password", username[:255])
    async with session.begin():
        done = await log_in(session, settings, name, authenticator.name)
    runtime.relay.kick()
    secure = secure_cookies(settings.hub_public_url)
    response = RedirectResponse(next_url, status_code=302)
    set_login_cookies(response, done.cookie, done.session_id, settings.auth.cookie_max_age_days, secure)
    set_xsrf_cookie(response, new_xsrf(runtime.secret_key, done.session_id), secure)  # bound to the new session
    clear_presession_cookie(response)
    log.info("user %s logged in", name)
    return response


@router.get("/hub/logout")
async def logout(request: Request, runtime: Runtime, session: DbSession) -> Response:
    async with session.begin():
        name = await log_out(session, runtime.settings, request.cookies.get(LOGIN_COOKIE))
    if name is not None:
        runtime.relay.kick()
        log.info("user %s logged out", name)
    response = RedirectResponse("/hub/login", status_code=302)
    clear_login_cookies(response, secure_cookies(runtime.settings.hub_public_url))
    return response


@router.get("/hub/health")
async def health() -> Response:
    return Response(status_code=200)
