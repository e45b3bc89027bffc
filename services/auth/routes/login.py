"""/hub/login and /hub/logout."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from shared.events import UserLoggedIn, UserLoggedOut
from shared.identity import (
    LOGIN_COOKIE,
    XSRF_COOKIE,
    clear_login_cookies,
    create_login_session,
    end_login_session,
    identity_from_cookie,
    new_xsrf,
    set_login_cookies,
    set_xsrf_cookie,
    validate_next,
    xsrf_valid,
)
from shared.outbox import enqueue

from services.auth.accounts import ensure_user
from services.auth.authenticators import allowed
from services.auth.deps import AuthenticatorDep, DbSession, RuntimeDep
from services.auth.pages import login_page

log = logging.getLogger(__name__)
router = APIRouter()


def _secure(runtime: RuntimeDep) -> bool:
    return runtime.settings.hub_public_url.startswith("https://")


def _form_page(runtime: RuntimeDep, next_url: str, status: int = 200, error: str = "", username: str = "") -> Response:
    xsrf = new_xsrf(runtime.secret_key)
    response = HTMLResponse(login_page(xsrf, next_url, error, username), status_code=status)
    set_xsrf_cookie(response, xsrf, _secure(runtime))
    response.headers["Cache-Control"] = "no-store"
    return response


@router.get("/hub/login")
async def login_form(request: Request, runtime: RuntimeDep, session: DbSession, next: str = "") -> Response:
    next_url = validate_next(next, runtime.settings.hub_public_url)
    if await identity_from_cookie(session, request.cookies.get(LOGIN_COOKIE)) is not None:
        return RedirectResponse(next_url, status_code=302)
    return _form_page(runtime, next_url)


@router.post("/hub/login")
async def login(
    request: Request,
    runtime: RuntimeDep,
    session: DbSession,
    authenticator: AuthenticatorDep,
    username: str = Form("", max_length=1000),
    password: str = Form("", max_length=1000),
    xsrf: str = Form("", alias="_xsrf", max_length=500),
    next: str = "",
) -> Response:
    next_url = validate_next(next, runtime.settings.hub_public_url)
    if not xsrf_valid(runtime.secret_key, request.cookies.get(XSRF_COOKIE), xsrf):
        return _form_page(runtime, next_url, 403, "Your session expired or the form was not sent from this site; try again.")
    async with session.begin():
        name = await authenticator.authenticate(session, username, password)
    if name is None or not allowed(runtime.settings, name):
        log.info("failed login for %r", username[:64])
        return _form_page(runtime, next_url, 403, "Invalid username or password", username[:255])
    settings = runtime.settings
    admin = True if name in {u.lower() for u in settings.auth.admin_users} else None
    async with session.begin():
        user_id = await ensure_user(session, name, admin)
        cookie, sid = await create_login_session(
            session, user_id, settings.auth.cookie_max_age_days, request.cookies.get("jupyterhub-session-id")
        )
        enqueue(session, UserLoggedIn(name=name, authenticator=authenticator.name), settings.nats_namespace)
    runtime.relay.kick()
    response = RedirectResponse(next_url, status_code=302)
    set_login_cookies(response, cookie, sid, settings.auth.cookie_max_age_days, _secure(runtime))
    # a new XSRF token for the new session
    set_xsrf_cookie(response, new_xsrf(runtime.secret_key), _secure(runtime))
    log.info("user %s logged in", name)
    return response


@router.get("/hub/logout")
async def logout(request: Request, runtime: RuntimeDep, session: DbSession) -> Response:
    async with session.begin():
        ident = await identity_from_cookie(session, request.cookies.get(LOGIN_COOKIE))
        await end_login_session(session, request.cookies.get(LOGIN_COOKIE))
        if ident is not None:
            enqueue(session, UserLoggedOut(name=ident.name), runtime.settings.nats_namespace)
    runtime.relay.kick()
    response = RedirectResponse("/hub/login", status_code=302)
    clear_login_cookies(response)
    return response


@router.get("/hub/health")
async def health() -> Response:
    return Response(status_code=200)
