"""Logging in and out: users, login sessions and their events, in one transaction each."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from fleethub.shared.authenticators import AuthUser
from fleethub.shared.crypt import AuthStateCrypt
from fleethub.shared.db.models import LoginSession, User
from fleethub.shared.events import UserLoggedIn, utcnow
from fleethub.shared.identity import create_login_session, end_login_session
from fleethub.shared.logins import end_logins, record_user
from fleethub.shared.outbox import enqueue
from fleethub.shared.settings import ServiceSettings


@dataclass(frozen=True)
class Login:
    """A new browser login: the cookie value (secret) and the session id."""

    cookie: str
    session_id: str
    name: str


async def log_in(session: AsyncSession, settings: ServiceSettings, crypt: AuthStateCrypt, user: AuthUser,
                 admin: bool | None, authenticator: str) -> Login:
    """Record a successful, allowed login of `user`: its row (`admin`: the rules' flag, None: as it is), its
    auth_state and groups (`fleethub.shared.logins.record_user`), a session and the event."""
    user_id = await record_user(session, settings, crypt, user, admin)
    # expired sessions are never read again; drop this user's while we are here
    await session.execute(
        delete(LoginSession).where(LoginSession.user_id == user_id, LoginSession.expires_at < utcnow())
    )
    cookie, sid = await create_login_session(session, user_id, settings.auth.cookie_max_age_days)
    enqueue(session, UserLoggedIn(name=user.name, authenticator=authenticator), settings.nats_namespace, origin="auth")
    return Login(cookie, sid, user.name)


async def log_out(session: AsyncSession, settings: ServiceSettings, cookie: str | None) -> str | None:
    """End the login session of `cookie` and the tokens issued to it; returns the user name, if any."""
    ended = await end_login_session(session, cookie)
    if ended is None:
        return None
    user_id, sid = ended
    name = (await session.execute(select(User.name).where(User.id == user_id))).scalar()
    if name is None:
        return None
    await end_logins(session, settings.nats_namespace, user_id, name, only=sid)
    return str(name)
