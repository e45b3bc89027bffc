"""Last activity of users, servers and tokens: from single-user servers' reports, from proxies' batches
and from the API requests tokens make.

Values only ever move forward, so reports arriving late or twice change nothing.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime

from sqlalchemy import select, text, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from fleethub.shared.db.models import Server, User
from fleethub.shared.errors import BadRequest
from fleethub.shared.events import ActivityReported
from fleethub.shared.identity import Identity
from fleethub.shared.names import parse_route_key

log = logging.getLogger(__name__)

# One statement per batch, only moving last_activity forward (no write per request).
_BATCH_SQL = text(
    """
    WITH v AS (SELECT * FROM unnest(CAST(:users AS text[]), CAST(:servers AS text[]), CAST(:times AS timestamptz[]))
               AS v(uname, sname, t)),
    s AS (
        UPDATE servers SET last_activity = v.t FROM v, users u
        WHERE u.name = v.uname AND servers.user_id = u.id AND servers.name = v.sname
          AND (servers.last_activity IS NULL OR servers.last_activity < v.t)
        RETURNING 1
    )
    UPDATE users SET last_activity = m.t
    FROM (SELECT uname, max(t) AS t FROM v GROUP BY uname) m
    WHERE users.name = m.uname AND (users.last_activity IS NULL OR users.last_activity < m.t)
    """
)


async def record_batch(session: AsyncSession, batch: ActivityReported) -> int:
    """Record a proxy node's activity batch on servers and their users; returns the routes used.

    Routes that are not user servers (or whose key does not decode) are skipped.
    """
    users: list[str] = []
    servers: list[str] = []
    times: list[datetime] = []
    for route in batch.routes:
        try:
            user, server = parse_route_key(route.key)
        except ValueError:
            continue
        users.append(user)
        servers.append(server)
        times.append(route.last_activity)
    if users:
        await session.execute(_BATCH_SQL, {"users": users, "servers": servers, "times": times})
    return len(users)


async def record_report(session: AsyncSession, user: User, user_time: datetime | None,
                        servers: dict[str, datetime]) -> None:
    """Record a single-user server's report (`POST /users/{name}/activity`).

    Raises:
        BadRequest: a server name the user does not have.
    """
    if servers:
        rows = (await session.execute(
            select(Server.name, Server.id).where(Server.user_id == user.id, Server.name.in_(list(servers)))
        )).all()
        ids = {name: sid for name, sid in rows}
        for name, ts in servers.items():
            if name not in ids:
                raise BadRequest(f"No such server {name[:64]!r} for user {user.name}")
            await session.execute(
                update(Server)
                .where(Server.id == ids[name], Server.last_activity.is_(None) | (Server.last_activity < ts))
                .values(last_activity=ts)
            )
        newest = max(servers.values())
        user_time = max(user_time, newest) if user_time else newest
    if user_time is not None:
        await session.execute(
            update(User).where(User.id == user.id, User.last_activity.is_(None) | (User.last_activity < user_time))
            .values(last_activity=user_time)
        )


_TOKENS_SQL = text(
    """
    UPDATE api_tokens SET last_activity = v.t
    FROM unnest(CAST(:ids AS integer[]), CAST(:times AS timestamptz[])) AS v(id, t)
    WHERE api_tokens.id = v.id AND (api_tokens.last_activity IS NULL OR api_tokens.last_activity < v.t)
    """
)
_USERS_SQL = text(
    """
    UPDATE users SET last_activity = v.t
    FROM unnest(CAST(:ids AS integer[]), CAST(:times AS timestamptz[])) AS v(id, t)
    WHERE users.id = v.id AND (users.last_activity IS NULL OR users.last_activity < v.t)
    """
)


class TokenUse:
    """When each token was last used, and so when its owner was last active, as JupyterHub records them.

    `note` costs a dict write per request; `flush` writes what was noted since the last flush in two
    statements (JupyterHub writes each use up to every 30 s instead). A user-owned token's use is its
    owner's activity too, except a server's own token: what a single-user server asks is not its user's
    doing. Uses noted when the process is killed outright are lost (at most `interval` seconds of them).
    """

    def __init__(self, sessions: async_sessionmaker[AsyncSession], interval: float = 10.0) -> None:
        self._sessions = sessions
        self.interval = interval
        self._tokens: dict[int, float] = {}
        self._users: dict[int, float] = {}

    def note(self, ident: Identity) -> None:
        """A request authenticated by `ident` (cookie requests have no token and are not noted)."""
        if ident.token_id is None:
            return
        now = time.time()
        self._tokens[ident.token_id] = now
        if ident.kind == "user" and ident.token_kind != "server":
            self._users[ident.user_id] = now

    async def flush(self) -> None:
        """Write the uses noted so far (a failed write is retried with the next flush)."""
        tokens, users = self._tokens, self._users
        if not tokens and not users:
            return
        self._tokens, self._users = {}, {}
        try:
            async with self._sessions() as session, session.begin():
                for sql, noted in ((_TOKENS_SQL, tokens), (_USERS_SQL, users)):
                    if noted:
                        await session.execute(sql, {"ids": list(noted), "times": [
                            datetime.fromtimestamp(t, UTC) for t in noted.values()]})
        except (SQLAlchemyError, OSError) as exc:
            log.warning("recording token activity failed (retried): %r", exc)
            for mine, failed in ((self._tokens, tokens), (self._users, users)):
                for key, t in failed.items():
                    mine[key] = max(t, mine.get(key, 0.0))

    async def run(self) -> None:
        """Flush every `interval` seconds, for the life of the process (a final `flush` on the way out)."""
        while True:
            await asyncio.sleep(self.interval)
            await self.flush()
