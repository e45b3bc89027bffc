"""Refreshing a user's authentication (`Authenticator.refresh_user`) and applying the answer: kept, updated
(auth_state, groups, admin recorded as at a login), or expired (the user's login sessions end, and the tokens
issued to them, as a logout does).

Shared because two services refresh: the api before a spawn (`auth.refresh_pre_spawn`) and the auth
service in the background (`auth.auth_refresh_age`). Every refresh, whatever its answer, sets
`users.auth_refreshed`.
"""

from __future__ import annotations

import asyncio
import logging

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from fleethub.shared.authenticators import Authenticator, AuthUser, decide
from fleethub.shared.crypt import AuthStateCrypt
from fleethub.shared.db.models import User
from fleethub.shared.logins import end_logins, record_user
from fleethub.shared.settings import ServiceSettings

log = logging.getLogger(__name__)

REFRESH_TIMEOUT = 30.0
"""Seconds one `refresh_user` call may take (a provider that hangs holds up no other user)."""


class RefreshFailed(Exception):
    """`refresh_user` raised or did not answer in time: nothing was decided (tried again later)."""


async def ask(authenticator: Authenticator, user: AuthUser) -> AuthUser | bool:
    """`authenticator.refresh_user(user)`, bounded by `REFRESH_TIMEOUT`.

    Raises:
        RefreshFailed: it raised, took too long, or answered neither a bool nor an `AuthUser`.
    """
    try:
        answer = await asyncio.wait_for(authenticator.refresh_user(user), REFRESH_TIMEOUT)
    except TimeoutError:
        raise RefreshFailed(f"refresh_user did not answer within {REFRESH_TIMEOUT:g}s") from None
    except Exception as exc:
        # the exception's type only: its message or traceback could hold the user's tokens
        raise RefreshFailed(f"refresh_user raised {type(exc).__name__}") from exc
    if isinstance(answer, bool | AuthUser):
        return answer
    raise RefreshFailed(f"refresh_user answered a {type(answer).__name__}, not a bool or an AuthUser")


async def apply(session: AsyncSession, settings: ServiceSettings, crypt: AuthStateCrypt, authenticator: Authenticator,
                user: AuthUser, answer: AuthUser | bool) -> bool:
    """Record `refresh_user`'s `answer` for `user` (as stored) in `session`'s transaction; whether the user's
    login still holds. An updated user is recorded as at a login (auth_state, groups, the rules' admin flag;
    the allow rules are not asked again, as in JupyterHub), unless now in `auth.blocked_users`: that is an
    expired login."""
    user_id = (await session.execute(select(User.id).where(User.name == user.name).with_for_update())).scalar()
    if user_id is None:
        return False  # deleted meanwhile: nothing left to refresh
    await session.execute(update(User).where(User.id == user_id).values(auth_refreshed=func.now()))
    if answer is True:
        return True
    if isinstance(answer, AuthUser):
        if answer.name != user.name:
            log.warning("the %s authenticator's refresh_user renamed %r to %r: a refresh keeps the name",
                        authenticator.name, user.name, answer.name[:64])
            answer = answer.with_(name=user.name)
        if answer.name not in settings.auth.blocked_users:
            await record_user(session, settings, crypt, answer, decide(authenticator, answer, exists=True).admin)
            return True
        log.info("user %s is in auth.blocked_users: a refresh does not keep their login", user.name)
    ended = await end_logins(session, settings.nats_namespace, user_id, user.name)
    log.info("the authentication of user %s expired: %d login session(s) ended", user.name, ended)
    return False
