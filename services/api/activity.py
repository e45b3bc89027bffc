"""Last activity of users and servers: from single-user servers' reports and from proxies' batches.

Values only ever move forward, so reports arriving late or twice change nothing.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from shared.db.models import Server, User
from shared.errors import BadRequest
from shared.events import ActivityReported
from shared.names import parse_route_key

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
                update(Server).where(Server.id == ids[name], Server.last_activity.is_(None) | (Server.last_activity < ts))
                .values(last_activity=ts)
            )
        newest = max(servers.values())
        user_time = max(user_time, newest) if user_time else newest
    if user_time is not None:
        await session.execute(
            update(User).where(User.id == user.id, User.last_activity.is_(None) | (User.last_activity < user_time))
            .values(last_activity=user_time)
        )
