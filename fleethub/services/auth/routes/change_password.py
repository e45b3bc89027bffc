"""`/hub/change-password`: a logged-in user of the `password` authenticator changes their own password.

The form is guarded by the session-bound `_xsrf` cookie (`fleethub.shared.identity.new_xsrf`) and, like the
anonymous forms, must come from one of our pages. The current password is required and its guesses are
throttled as logins are. A change ends the user's other login sessions; this one stays.
"""

from __future__ import annotations

import logging
from urllib.parse import quote

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy.ext.asyncio import AsyncSession

from fleethub.services.auth.deps import AuthenticatorDep, DbSession, Runtime
from fleethub.services.auth.pages import EXPIRED_FORM, change_password_page, nav_for, templates
from fleethub.services.auth.xsrf import foreign_post
from fleethub.shared.accounts import password_is, set_password_of
from fleethub.shared.authenticators import Authenticator
from fleethub.shared.errors import BadRequest, NotFound
from fleethub.shared.http import client_address
from fleethub.shared.identity import (
    LOGIN_COOKIE,
    XSRF_COOKIE,
    Identity,
    identity_from_cookie,
    new_xsrf,
    secure_cookies,
    set_xsrf_cookie,
    xsrf_valid,
)
from fleethub.shared.logins import end_logins
from fleethub.shared.throttle import Attempt, admit, failed, retry_message, succeeded

log = logging.getLogger(__name__)
router = APIRouter()
PATH = "/hub/change-password"


def _check_enabled(authenticator: Authenticator) -> None:
    if authenticator.name != "password":
        raise NotFound("Passwords are not managed by this hub.")


async def _page(request: Request, runtime: Runtime, session: AsyncSession, ident: Identity, status: int = 200,
                error: str = "", done: bool = False) -> Response:
    """The page, with the browser's `_xsrf` cookie if it belongs to this session, else a new one (set)."""
    cookie = request.cookies.get(XSRF_COOKIE)
    fresh = not xsrf_valid(runtime.secret_key, cookie, cookie, ident.session_id)
    token = new_xsrf(runtime.secret_key, ident.session_id) if fresh or cookie is None else cookie
    nav = await nav_for(session, runtime.settings, ident)
    page = change_password_page(templates(request), token, nav, error=error, done=done)
    response = HTMLResponse(page, status_code=status, headers={"Cache-Control": "no-store"})
    if fresh:
        set_xsrf_cookie(response, token, secure_cookies(runtime.settings.hub_public_url))
    return response


@router.get(PATH)
async def change_password_form(request: Request, runtime: Runtime, session: DbSession,
                               authenticator: AuthenticatorDep) -> Response:
    _check_enabled(authenticator)
    ident = await identity_from_cookie(session, request.cookies.get(LOGIN_COOKIE))
    if ident is None:
        return RedirectResponse(f"/hub/login?next={quote(PATH)}", status_code=302)
    return await _page(request, runtime, session, ident)


@router.post(PATH)
async def change_password(
    request: Request,
    runtime: Runtime,
    session: DbSession,
    authenticator: AuthenticatorDep,
    old_password: str = Form("", max_length=1000),
    password: str = Form("", max_length=1000),
    password_again: str = Form("", max_length=1000),
    xsrf: str = Form("", alias="_xsrf", max_length=500),
) -> Response:
    _check_enabled(authenticator)
    async with session.begin():
        ident = await identity_from_cookie(session, request.cookies.get(LOGIN_COOKIE))
    if ident is None:
        return RedirectResponse(f"/hub/login?next={quote(PATH)}", status_code=303)
    foreign = foreign_post(request, runtime.settings.hub_public_url)
    if foreign is not None or not xsrf_valid(runtime.secret_key, request.cookies.get(XSRF_COOKIE), xsrf,
                                             ident.session_id):
        log.warning("change-password form of %s refused: %s", ident.name, foreign or "XSRF token missing or wrong")
        return await _page(request, runtime, session, ident, 403, EXPIRED_FORM)
    if password != password_again:
        return await _page(request, runtime, session, ident, 400, "The new passwords do not match.")
    auth = runtime.settings.auth
    attempt = Attempt(ident.name, client_address(request))
    if auth.login_throttle:
        async with session.begin():
            wait = await admit(session, auth, attempt)
        if wait:
            return await _page(request, runtime, session, ident, 429, retry_message(wait)[0])
    try:
        async with session.begin():
            if not await password_is(session, ident.user_id, old_password):
                if auth.login_throttle:
                    await failed(session, auth, attempt)
                return await _page(request, runtime, session, ident, 403, "The current password is not right.")
            await set_password_of(session, ident.user_id, ident.name, password, auth.password)
            ended = await end_logins(session, runtime.settings.nats_namespace, ident.user_id, ident.name,
                                     keep=ident.session_id)
            await succeeded(session, attempt)
    except BadRequest as exc:
        return await _page(request, runtime, session, ident, 400, exc.message)
    log.info("user %s changed their password (%d other sessions ended)", ident.name, ended)
    return await _page(request, runtime, session, ident, done=True)
