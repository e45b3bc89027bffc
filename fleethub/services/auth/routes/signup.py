"""`/hub/signup`: anyone may create a password account when `auth.open_signup` is on (else 404)."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Form, Request
from fastapi.responses import Response

from fleethub.services.auth.deps import DbSession, Runtime
from fleethub.services.auth.pages import signup_page
from fleethub.services.auth.routes.login import EXPIRED_FORM
from fleethub.services.auth.xsrf import anonymous_form, check_anonymous_form
from fleethub.shared.accounts import create_account
from fleethub.shared.errors import FleethubError, NotFound

log = logging.getLogger(__name__)
router = APIRouter()


def _check_enabled(runtime: Runtime) -> None:
    auth = runtime.settings.auth
    if not auth.open_signup or auth.authenticator != "password":
        raise NotFound("Sign-up is not enabled.")


def _page(request: Request, runtime: Runtime, status: int = 200, error: str = "", username: str = "",
          done: str = "") -> Response:
    return anonymous_form(request, runtime, lambda xsrf: signup_page(xsrf, error=error, username=username, done=done),
                          status)


@router.get("/hub/signup")
async def signup_form(request: Request, runtime: Runtime) -> Response:
    _check_enabled(runtime)
    return _page(request, runtime)


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
    try:
        async with session.begin():
            name = await create_account(session, username, password)
            auth = runtime.settings.auth
            if name in auth.blocked_users or name in auth.admin_users:  # raising rolls the account back
                raise FleethubError("This user name may not sign up.", status=403)
    except FleethubError as exc:
        return _page(request, runtime, exc.status, exc.message, username[:255])
    log.info("account %s created by sign-up", name)
    return _page(request, runtime, 201, done=name)
