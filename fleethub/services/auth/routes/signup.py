"""`/hub/signup`: anyone may create a password account when `auth.open_signup` is on (usable at once) or
`[auth.password] enable_signup` is (it waits for an admin's approval: `/hub/api/signups`); else 404."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Form, Request
from fastapi.responses import Response

from fleethub.services.auth.deps import DbSession, Runtime
from fleethub.services.auth.pages import EXPIRED_FORM, signup_page, templates
from fleethub.services.auth.xsrf import anonymous_form, check_anonymous_form
from fleethub.shared.accounts import create_account
from fleethub.shared.errors import FleethubError, NotFound
from fleethub.shared.http import client_address
from fleethub.shared.settings import AuthSettings
from fleethub.shared.throttle import Attempt, admit

log = logging.getLogger(__name__)
router = APIRouter()


def signup_enabled(auth: AuthSettings) -> bool:
    """Whether `/hub/signup` takes sign-ups (password authenticator, open_signup or enable_signup)."""
    return auth.authenticator == "password" and (auth.open_signup or auth.password.enable_signup)


def _check_enabled(runtime: Runtime) -> None:
    if not signup_enabled(runtime.settings.auth):
        raise NotFound("Sign-up is not enabled.")


def _page(request: Request, runtime: Runtime, status: int = 200, error: str = "", username: str = "",
          done: str = "", pending: bool = False) -> Response:
    t = templates(request)
    return anonymous_form(request, runtime, lambda xsrf: signup_page(t, xsrf, error=error, username=username,
                                                                     done=done, pending=pending), status)


@router.get("/hub/signup")
async def signup_form(request: Request, runtime: Runtime) -> Response:
    _check_enabled(runtime)
    return _page(request, runtime)


async def _throttled(request: Request, runtime: Runtime, session: DbSession, username: str) -> Response | None:
    """The 429 page if this client address made too many sign-ups lately (each one counts), else None."""
    auth = runtime.settings.auth
    if not auth.login_throttle:
        return None
    client = client_address(request)
    async with session.begin():
        wait = await admit(session, auth, Attempt("", client, signup=True))
    if not wait:
        return None
    seconds = max(1, int(wait + 0.999))
    log.info("throttled sign-up from %s", client)
    page = _page(request, runtime, 429, f"Too many sign-ups from your address; try again in {seconds} seconds.",
                 username[:255])
    page.headers["Retry-After"] = str(seconds)
    return page


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
    refused = check_anonymous_form(request, runtime.secret_key, runtime.settings.hub_public_url, xsrf)
    if refused is not None:
        log.warning("sign-up form refused: %s", refused)
        return _page(request, runtime, 403, EXPIRED_FORM)
    throttled = await _throttled(request, runtime, session, username)
    if throttled is not None:
        return throttled
    auth = runtime.settings.auth
    approved = auth.open_signup  # open sign-up: no approval; enable_signup alone: an admin approves
    try:
        async with session.begin():
            name = await create_account(session, username, password, rules=auth.password, approved=approved)
            if name in auth.blocked_users or name in auth.admin_users:  # raising rolls the account back
                raise FleethubError("This user name may not sign up.", status=403)
    except FleethubError as exc:
        return _page(request, runtime, exc.status, exc.message, username[:255])
    log.info("account %s created by sign-up%s", name, "" if approved else ", waiting for approval")
    return _page(request, runtime, 201, done=name, pending=not approved)
