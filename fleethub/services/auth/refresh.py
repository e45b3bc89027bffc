"""The background refresh: every `min(auth.auth_refresh_age, 60)` seconds, the users with auth_state and a
live login session whose last refresh is older than `auth.auth_refresh_age` are refreshed
(`Authenticator.refresh_user`); a user whose authentication expired loses their login sessions.

Safe with several auth replicas: a batch is claimed by setting its users' `auth_refreshed` in the statement
that picks them (`FOR UPDATE SKIP LOCKED`), so no two replicas refresh one user in the same round; a replica
that dies mid-batch leaves those users to the round after `auth_refresh_age`.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

from sqlalchemy import Interval, exists, func, literal, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from fleethub.shared.authenticators import Authenticator
from fleethub.shared.crypt import AuthStateCrypt
from fleethub.shared.db.models import LoginSession, User
from fleethub.shared.logins import stored_user
from fleethub.shared.refresh import RefreshFailed, apply, ask
from fleethub.shared.service import Runtime

log = logging.getLogger(__name__)

BATCH = 100  # users claimed by one statement
CONCURRENCY = 8  # refresh_user calls under way at once (each may be a request to the provider)
MAX_INTERVAL = 60.0


def interval(age: float) -> float | None:
    """Seconds between passes for `auth.auth_refresh_age`; None: no background refresh (an age of 0)."""
    return min(age, MAX_INTERVAL) if age > 0 else None


async def claim(sessions: async_sessionmaker[AsyncSession], age: float, limit: int = BATCH) -> list[str]:
    """Names of up to `limit` users due for a refresh, marked refreshed now (so no other replica takes them)."""
    stale = func.now() - literal(timedelta(seconds=age), Interval())
    due = (
        select(User.id)
        .where(func.jsonb_typeof(User.auth_state) == "object",  # neither SQL NULL nor JSON null
               or_(User.auth_refreshed.is_(None), User.auth_refreshed < stale),
               exists().where(LoginSession.user_id == User.id, LoginSession.expires_at > func.now()))
        .order_by(User.auth_refreshed.asc().nulls_first())
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    async with sessions() as session, session.begin():
        names = (await session.execute(
            update(User).where(User.id.in_(due.scalar_subquery())).values(auth_refreshed=func.now())
            .returning(User.name)
        )).scalars().all()
    return list(names)


class Refresher:
    """One auth replica's background refresh."""

    def __init__(self, runtime: Runtime, authenticator: Authenticator, crypt: AuthStateCrypt) -> None:
        self.rt = runtime
        self.authenticator = authenticator
        self.crypt = crypt
        self.age = runtime.settings.auth.auth_refresh_age
        self._slots = asyncio.Semaphore(CONCURRENCY)

    async def run(self) -> None:
        """Refresh due users every interval, for the life of the replica (not at all for an age of 0)."""
        every = interval(self.age)
        if every is None:
            return
        while True:
            try:
                await self.round()
            except Exception as exc:  # PostgreSQL away: the next round tries again
                log.warning("background refresh of logins failed: %r", exc)
            await asyncio.sleep(every)

    async def round(self) -> int:
        """Refresh every user due now, a batch at a time; returns how many were refreshed."""
        done = 0
        while True:
            names = await claim(self.rt.sessions, self.age)
            if names:
                await asyncio.gather(*(self.one(name) for name in names))
                self.rt.relay.kick()
            done += len(names)
            if len(names) < BATCH:
                return done

    async def one(self, name: str) -> None:
        """Refresh `name` (a failure is logged: their login stays, refreshed again after the age)."""
        async with self._slots:
            async with self.rt.sessions() as session:
                user = await stored_user(session, self.crypt, name)
            if user is None:
                return
            try:
                answer = await ask(self.authenticator, user)
            except RefreshFailed as exc:
                log.warning("refreshing user %s failed: %s", name, exc)
                return
            async with self.rt.sessions() as session, session.begin():
                await apply(session, self.rt.settings, self.crypt, self.authenticator, user, answer)
