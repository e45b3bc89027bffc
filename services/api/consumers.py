"""The api's event consumers: thin adapters, the ack decision in the return value."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import text

from shared.bus import Decision, Delivery
from shared.events import ActivityReported, ServerFailed, ServerStopped
from shared.names import parse_route_key
from shared.service import Runtime

# One statement per batch, only moving last_activity forward (G12: no write per request).
_ACTIVITY_SQL = text(
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
_REVOKE_SQL = text("DELETE FROM api_tokens WHERE kind = 'server' AND spawn_id = :spawn_id")
_DESIRED_SQL = text("UPDATE servers SET desired = 'stopped' WHERE spawn_id = :spawn_id AND desired = 'running'")


async def record_activity(runtime: Runtime, batch: ActivityReported) -> None:
    """Record a proxy node's activity batch on servers and users."""
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
    if not users:
        return
    async with runtime.sessions() as session, session.begin():
        await session.execute(_ACTIVITY_SQL, {"users": users, "servers": servers, "times": times})


def activity_handler(runtime: Runtime):  # type: ignore[no-untyped-def]
    async def handle(delivery: Delivery) -> Decision:
        if not isinstance(delivery.message, ActivityReported):
            return Decision.term()
        await record_activity(runtime, delivery.message)
        return Decision.ack()

    return handle


def server_events_handler(runtime: Runtime):  # type: ignore[no-untyped-def]
    """A stopped or failed server loses its token, and its desired state follows."""

    async def handle(delivery: Delivery) -> Decision:
        msg = delivery.message
        if not isinstance(msg, ServerStopped | ServerFailed):
            return Decision.ack()
        async with runtime.sessions() as session, session.begin():
            await session.execute(_REVOKE_SQL, {"spawn_id": msg.spawn_id})
            await session.execute(_DESIRED_SQL, {"spawn_id": msg.spawn_id})
        return Decision.ack()

    return handle
