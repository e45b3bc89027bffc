"""Redirect logins (`oauth`, `github`, third-party ones): `/hub/oauth_login` sends the browser to the
provider, `/hub/oauth_callback` takes it back and logs the user in.

The `state` of the authorization request is a fresh random value; it, the validated `next` URL and what the
authenticator keeps for its callback (PKCE verifier, nonce) travel in a signed, HttpOnly, SameSite=Lax cookie
that lives 10 minutes, never in a URL. The callback refuses a request whose `state` does not match that
cookie (a forged or replayed callback, or a login started in another browser), and the cookie is cleared
whatever the outcome.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import logging
import secrets
import time
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from fleethub.services.auth.deps import AuthenticatorDep, CryptDep, DbSession, PostAuthDep, Runtime
from fleethub.services.auth.pages import error_page, templates
from fleethub.services.auth.routes.login import complete_login, logged_in, tell_authenticator
from fleethub.services.auth.sessions import Login
from fleethub.shared.authenticators import Authenticator, LoginRefused, as_user
from fleethub.shared.identity import secure_cookies, validate_next
from fleethub.shared.security import sign, verify_signature
from fleethub.shared.transient import transient

log = logging.getLogger(__name__)
router = APIRouter()

STATE_COOKIE = "fleethub-oauth-state"
STATE_MAX_AGE = 600
_PURPOSE = "oauth-login-state"


def callback_url(runtime: Runtime, authenticator: Authenticator) -> str:
    """The redirect URI registered at the provider: the authenticator's `oauth_callback_url`, default
    <public_url><base_url>hub/oauth_callback."""
    configured = str(getattr(authenticator, "oauth_callback_url", "") or "")
    return configured or f"{runtime.settings.hub_public_url}{runtime.settings.base_url}hub/oauth_callback"


def _encode(key: str, data: dict[str, Any]) -> str:
    payload = base64.urlsafe_b64encode(json.dumps(data, separators=(",", ":")).encode()).rstrip(b"=").decode()
    return f"{payload}.{sign(key, _PURPOSE, payload)}"


def _decode(key: str, cookie: str | None) -> dict[str, Any] | None:
    if not cookie or cookie.count(".") != 1 or len(cookie) > 8000:
        return None
    payload, tag = cookie.split(".")
    if not verify_signature(key, _PURPOSE, payload, tag):
        return None
    try:
        data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (binascii.Error, ValueError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("t"), (int, float)):
        return None
    if time.time() - data["t"] > STATE_MAX_AGE:
        return None
    return data


def _error(request: Request, status: int, message: str, *, retry: bool = True) -> Response:
    response = HTMLResponse(error_page(templates(request), status, message, retry=retry), status_code=status)
    response.delete_cookie(STATE_COOKIE, path="/hub/")
    return response


@router.get("/hub/oauth_login")
async def oauth_login(request: Request, runtime: Runtime, authenticator: AuthenticatorDep, next: str = "") -> Response:
    if not authenticator.redirects:
        return RedirectResponse("/hub/login", status_code=302)
    next_url = validate_next(next, runtime.settings.hub_public_url)
    state = secrets.token_urlsafe(32)
    try:
        redirect = await authenticator.authorize_url(callback_url(runtime, authenticator), state)
    except LoginRefused as exc:
        log.warning("%s login could not start: %s", authenticator.name, exc.message)
        return _error(request, exc.status, exc.message, retry=False)
    except Exception as exc:  # the provider is away (discovery failed): a page that says so, not a 500
        log.warning("%s login could not start: %r", authenticator.name, exc)
        return _error(request, 503,
                      f"{authenticator.login_service} cannot be reached right now; please try again later.")
    cookie = _encode(runtime.secret_key, {"s": state, "n": next_url, "k": redirect.keep, "t": time.time()})
    response = RedirectResponse(redirect.url, status_code=302)
    response.set_cookie(STATE_COOKIE, cookie, max_age=STATE_MAX_AGE, path="/hub/", httponly=True, samesite="lax",
                        secure=secure_cookies(runtime.settings.hub_public_url))
    return response


@router.get("/hub/oauth_callback")
async def oauth_callback(request: Request, runtime: Runtime, session: DbSession, authenticator: AuthenticatorDep,
                         crypt: CryptDep, post_auth: PostAuthDep) -> Response:
    if not authenticator.redirects:
        return _error(request, 404, "This hub does not log in through another site.", retry=False)
    params = {k: v for k, v in request.query_params.items() if len(v) <= 4096}
    kept = _decode(runtime.secret_key, request.cookies.get(STATE_COOKIE))
    if kept is None:
        return _error(request, 400,
                      "This sign-in took too long or was not started in this browser; please sign in again.")
    if not hmac.compare_digest(str(kept.get("s", "")).encode(), params.get("state", "").encode()):
        log.warning("%s callback with a state that does not match this browser's", authenticator.name)
        return _error(request, 400, "The sign-in could not be verified (state mismatch); please sign in again.")
    if "error" in params:
        detail = params.get("error_description") or params["error"]
        log.info("%s refused the sign-in: %s", authenticator.name, detail[:200])
        return _error(request, 403, f"{authenticator.login_service} did not sign you in: {detail[:200]}")
    raw = kept.get("k")
    keep = {str(k): str(v) for k, v in raw.items()} if isinstance(raw, dict) else {}
    try:
        user = as_user(authenticator, await authenticator.callback(params, keep, callback_url(runtime, authenticator)))
    except LoginRefused as exc:
        log.info("%s sign-in refused: %s", authenticator.name, exc.message)
        return _error(request, exc.status, exc.message)
    except Exception as exc:
        if not transient(exc):
            log.exception("%s sign-in failed", authenticator.name)
        else:
            log.warning("%s sign-in failed: %r", authenticator.name, exc)
        return _error(request, 503, f"Signing in with {authenticator.login_service} failed; please try again.")
    if user is None:
        return _error(request, 403, f"{authenticator.login_service} did not name a user this hub can have.")
    async with session.begin():
        outcome = await complete_login(request, runtime, session, authenticator, crypt, post_auth, user)
    if not isinstance(outcome, Login):
        log.info("login refused: %s", outcome)
        return _error(request, 403, f"User {user.name} is not allowed to use this hub. Ask its administrators "
                                    "for access, or sign in as someone else.")
    await tell_authenticator(authenticator.logged_in, outcome.name)
    response = logged_in(runtime, outcome, validate_next(str(kept.get("n") or ""), runtime.settings.hub_public_url))
    response.delete_cookie(STATE_COOKIE, path="/hub/")
    return response
