"""`PUT /hub/api/users/{name}/password`: set or change a `password` account's password (a fleethub extension
of JupyterHub's API).

- With `admin:users` on the user (only a real admin for an admin), the password is set without the old one,
  the account created if the user has none, and every login session of the user ends (a reset is what one
  does when an account may be in the wrong hands). API tokens the user made stay: revoke them separately.
  A sign-up waiting for approval stays waiting (`/hub/api/signups` approves it).
- A user changing their own needs `tokens` on themselves (a credential that could mint the user a full token
  anyway: the login cookie or a token of the user's own, not a server's) and `old_password`; their other
  login sessions end, the one asking keeps going. Guesses of the old password are throttled as logins are.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from fleethub.services.api.access import Requester
from fleethub.services.api.deps import CurrentUser, DbSession, Runtime
from fleethub.services.api.queries import get_user
from fleethub.services.api.schemas import PasswordSet, parse_body
from fleethub.shared.accounts import password_is, set_password_of
from fleethub.shared.errors import Forbidden, NotFound, TooManyRequests
from fleethub.shared.http import client_address
from fleethub.shared.logins import end_logins
from fleethub.shared.throttle import Attempt, admit, failed, retry_message, succeeded

router = APIRouter(prefix="/hub/api")


def _admin_reset(req: Requester, name: str, body: PasswordSet) -> bool:
    """Whether this is a reset (admin:users on the user), or else the user's own change (checked here)."""
    if req.can("admin:users", name):
        return True
    if not req.is_user(name):
        req.require("admin:users", user=name)  # the 403 (or 404) JupyterHub would answer
    req.require("tokens", user=name)
    if body.old_password is None:
        raise Forbidden("Changing your own password needs old_password, your current password")
    return False


@router.put("/users/{name}/password")
async def put_password(name: str, request: Request, req: CurrentUser, runtime: Runtime,
                       session: DbSession) -> dict[str, Any]:
    auth = runtime.settings.auth
    if auth.authenticator != "password":
        raise NotFound(f"Passwords are not managed by this hub (auth.authenticator is {auth.authenticator!r})")
    body = await parse_body(request, PasswordSet, required=True)
    reset = _admin_reset(req, name, body)
    attempt = Attempt(name, client_address(request))
    throttle = not reset and auth.login_throttle
    if throttle:
        async with session.begin():
            wait = await admit(session, auth, attempt)
        if wait:
            message, seconds = retry_message(wait)
            raise TooManyRequests(message, retry_after=seconds)
    async with session.begin():
        user = await get_user(session, name)
        if reset and user.admin and not req.ident.admin and not req.is_user(name):
            raise Forbidden("Only admins may set an admin's password")
        if not reset and not await password_is(session, user.id, body.old_password or ""):
            wrong = True
        else:
            wrong = False
            await set_password_of(session, user.id, user.name, body.password, auth.password)
            keep = req.ident.session_id if req.is_user(name) else None  # one's own change keeps one's session
            ended = await end_logins(session, runtime.settings.nats_namespace, user.id, user.name, keep=keep)
            if throttle:
                await succeeded(session, attempt)
    if wrong:
        if throttle:
            async with session.begin():
                await failed(session, auth, attempt)
        raise Forbidden("old_password is not the current password")
    request.state.token_cache.drop_user_named(user.name)  # tokens of the ended sessions: gone here at once
    return {"name": user.name, "sessions_ended": ended}
