"""`/hub/login`, `/hub/logout` and the auth replica's health probe."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy.ext.asyncio import AsyncSession

from fleethub.services.auth.deps import AuthenticatorDep, CryptDep, DbSession, PostAuthDep, Runtime
from fleethub.services.auth.pages import EXPIRED_FORM, login_page, templates
from fleethub.services.auth.routes.signup import signup_enabled
from fleethub.services.auth.sessions import Login, log_in, log_out
from fleethub.services.auth.xsrf import anonymous_form, check_anonymous_form, clear_presession_cookie
from fleethub.shared.authenticators import Authenticator, AuthUser, LoginRefused, as_user, decide
from fleethub.shared.crypt import AuthStateCrypt
from fleethub.shared.errors import BadRequest
from fleethub.shared.health import health_report
from fleethub.shared.http import client_address
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
from fleethub.shared.logins import PostAuthHook, user_exists
from fleethub.shared.names import normalize_username
from fleethub.shared.throttle import Attempt, admit, failed, retry_message, succeeded

log = logging.getLogger(__name__)
router = APIRouter()


def _form_page(request: Request, runtime: Runtime, authenticator: Authenticator, next_url: str, status: int = 200,
               error: str = "", username: str = "") -> Response:
    signup = signup_enabled(runtime.settings.auth)
    service = login_service(authenticator)
    t = templates(request)
    return anonymous_form(request, runtime, lambda xsrf: login_page(t, xsrf, next_url, error=error, username=username,
                                                                    signup=signup, login_service=service), status)


def login_service(authenticator: Authenticator) -> str:
    """The name on the "Sign in with …" button of a redirect login ('' for a form login)."""
    return authenticator.login_service if authenticator.redirects else ""


def oauth_login_url(next_url: str) -> str:
    """Where the login button of a redirect login leads."""
    return f"/hub/oauth_login?next={quote(next_url, safe='/')}"


@router.get("/hub/login")
async def login_form(request: Request, runtime: Runtime, session: DbSession, authenticator: AuthenticatorDep,
                     next: str = "") -> Response:
    next_url = validate_next(next, runtime.settings.hub_public_url)
    if await identity_from_cookie(session, request.cookies.get(LOGIN_COOKIE)) is not None:
        return RedirectResponse(next_url, status_code=302)
    if authenticator.redirects and runtime.settings.auth.auto_login:
        return RedirectResponse(oauth_login_url(next_url), status_code=302)
    return _form_page(request, runtime, authenticator, next_url)


@router.post("/hub/login")
async def login(
    request: Request,
    runtime: Runtime,
    session: DbSession,
    authenticator: AuthenticatorDep,
    crypt: CryptDep,
    post_auth: PostAuthDep,
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
        return _form_page(request, runtime, authenticator, next_url, 403, EXPIRED_FORM)
    try:
        attempt = Attempt(normalize_username(username), client_address(request))
    except BadRequest as exc:
        return _form_page(request, runtime, authenticator, next_url, 400, exc.message)
    throttled = await _throttled(request, runtime, session, authenticator, attempt, next_url, username)
    if throttled is not None:
        return throttled
    if authenticator.redirects:
        return RedirectResponse(oauth_login_url(next_url), status_code=303)
    started = time.monotonic()
    try:
        async with session.begin():
            # one transaction: the password's user row stays locked (no rename or delete) until the session exists
            answer = await authenticator.authenticate(session, username, password)
            outcome = await complete_login(request, runtime, session, authenticator, crypt, post_auth,
                                           as_user(authenticator, answer))
            if isinstance(outcome, Login):
                await succeeded(session, attempt)
    except LoginRefused as exc:
        runtime.metrics.login_duration.labels(status="failure").observe(time.monotonic() - started)
        await _failed(runtime, session, attempt)
        log.info("login of %r refused by the authenticator: %s", username[:64], exc.message)
        return _form_page(request, runtime, authenticator, next_url, exc.status, exc.message, username[:255])
    status = "success" if isinstance(outcome, Login) else "failure"
    runtime.metrics.login_duration.labels(status=status).observe(time.monotonic() - started)
    if not isinstance(outcome, Login):
        await _failed(runtime, session, attempt)
        log.info("failed login for %r: %s", username[:64], outcome)
        return _form_page(request, runtime, authenticator, next_url, 403, "Invalid username or password",
                          username[:255])
    await tell_authenticator(authenticator.logged_in, outcome.name)
    return logged_in(runtime, outcome, next_url)


async def complete_login(request: Request, runtime: Runtime, session: AsyncSession, authenticator: Authenticator,
                         crypt: AuthStateCrypt, post_auth: PostAuthHook, user: AuthUser | None) -> Login | str:
    """After the authenticator accepted `user` (None: it refused): the post-auth hook, the allow rules, and
    the login recorded in `session`'s transaction. The new login, or why it was refused (for the log)."""
    if user is None:
        return "wrong credentials"
    hooked = await post_auth(authenticator, user)
    if hooked is None:
        return f"{user.name}: refused by auth.post_auth_hook"
    user = as_user(authenticator, hooked)
    if user is None:
        return "auth.post_auth_hook returned an invalid user name"
    verdict = decide(authenticator, user, exists=await user_exists(session, user.name))
    if not verdict.allowed:
        return f"{user.name}: {verdict.reason}"
    return await log_in(session, runtime.settings, crypt, user, verdict.admin, authenticator.name)


async def tell_authenticator(hook: Callable[[str], Awaitable[None]], name: str) -> None:
    """Run the authenticator's `logged_in` / `logged_out` for `name` once the login or logout is committed; its
    errors are logged, the login or logout stands."""
    try:
        await hook(name)
    except Exception:
        log.exception("the authenticator's %s failed for %s", hook.__name__, name)


def logged_in(runtime: Runtime, done: Login, next_url: str) -> Response:
    """The answer to a successful login: the cookies, and on to `next_url`."""
    runtime.relay.kick()
    secure = secure_cookies(runtime.settings.hub_public_url)
    response = RedirectResponse(next_url, status_code=302)
    set_login_cookies(response, done.cookie, done.session_id, runtime.settings.auth.cookie_max_age_days, secure)
    set_xsrf_cookie(response, new_xsrf(runtime.secret_key, done.session_id), secure)  # bound to the new session
    clear_presession_cookie(response)
    log.info("user %s logged in", done.name)
    return response


async def _throttled(request: Request, runtime: Runtime, session: DbSession, authenticator: Authenticator,
                     attempt: Attempt, next_url: str, username: str) -> Response | None:
    """The 429 page if this name or address must wait (the password is then not checked), else None."""
    if not runtime.settings.auth.login_throttle:
        return None
    async with session.begin():
        wait = await admit(session, runtime.settings.auth, attempt)
    if not wait:
        return None
    message, seconds = retry_message(wait)
    log.info("throttled login for %r from %s", username[:64], attempt.client)
    page = _form_page(request, runtime, authenticator, next_url, 429, message, username[:255])
    page.headers["Retry-After"] = str(seconds)
    return page


async def _failed(runtime: Runtime, session: DbSession, attempt: Attempt) -> None:
    if runtime.settings.auth.login_throttle:
        async with session.begin():
            await failed(session, runtime.settings.auth, attempt)


@router.get("/hub/logout")
async def logout(request: Request, runtime: Runtime, session: DbSession, authenticator: AuthenticatorDep) -> Response:
    async with session.begin():
        name = await log_out(session, runtime.settings, request.cookies.get(LOGIN_COOKIE))
    if name is not None:
        runtime.relay.kick()
        log.info("user %s logged out", name)
        await tell_authenticator(authenticator.logged_out, name)
    response = RedirectResponse("/hub/login", status_code=302)
    clear_login_cookies(response, secure_cookies(runtime.settings.hub_public_url))
    return response


@router.get("/hub/health")
async def health(runtime: Runtime) -> dict[str, Any]:
    """200 while this replica serves; the body says which dependency is away (`fleethub.shared.health`)."""
    return await health_report(runtime)
