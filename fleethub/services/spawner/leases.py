"""The `server_states` table: reads, leases and adoption, each one SQL statement.

Status changes go through `fleethub.shared.lifecycle.transition`. Every write by a worker is conditioned
on that worker holding the lease (or on the lease having expired), so two workers never act on one
server at once (invariant 2).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from fleethub.shared.db.models import Server, ServerState, User
from fleethub.shared.events import utcnow
from fleethub.shared.lifecycle import ACTIVE, DesiredState, ServerKey, ServerStatus


@dataclass(frozen=True)
class Row:
    """A snapshot of one `server_states` row."""

    user: str
    server_name: str
    spawn_id: str
    status: ServerStatus
    state: dict[str, Any]
    worker_id: str | None
    lease_live: bool
    url: str | None
    target: str | None

    @property
    def key(self) -> ServerKey:
        """Which server the row is about."""
        return ServerKey(self.user, self.server_name)


def row_of(r: ServerState) -> Row:
    """The snapshot of an ORM row."""
    live = r.lease_expires is not None and r.lease_expires > utcnow()
    return Row(r.user_name, r.server_name, r.spawn_id, ServerStatus(r.status), dict(r.state or {}), r.worker_id, live,
               r.url, r.target)


def _key(key: ServerKey) -> Any:
    return and_(ServerState.user_name == key.user, ServerState.server_name == key.server_name)


def _lease(ttl: float) -> Any:
    return func.now() + timedelta(seconds=ttl)


async def get(session: AsyncSession, key: ServerKey) -> Row | None:
    """The current row, if any."""
    r = (await session.execute(select(ServerState).where(_key(key)))).scalar()
    return row_of(r) if r is not None else None


async def is_desired(session: AsyncSession, key: ServerKey, spawn_id: str) -> bool:
    """Whether `spawn_id` is the spawn the api wants running for this server (the `servers` row).

    A spawn command can outlive its request: the server was stopped, removed and recreated, renamed,
    or its user deleted, before a worker took the command. Such a spawn must not start an orphan.
    """
    stmt = (select(Server.id).join(User, User.id == Server.user_id)
            .where(User.name == key.user, Server.name == key.server_name, Server.spawn_id == spawn_id,
                   Server.desired == DesiredState.RUNNING))
    return (await session.execute(stmt)).first() is not None


async def take_over(session: AsyncSession, key: ServerKey, spawn_id: str, *, me: str, ttl: float,
                    statuses: Collection[ServerStatus]) -> Row | None:
    """Take the lease of `spawn_id` if it is in `statuses` and its lease expired (or is mine)."""
    stmt = (
        update(ServerState)
        .where(
            _key(key), ServerState.spawn_id == spawn_id, ServerState.status.in_(statuses),
            or_(ServerState.worker_id == me, ServerState.lease_expires < func.now()),
        )
        .values(worker_id=me, lease_expires=_lease(ttl), updated=func.now())
        .returning(ServerState)
    )
    r = (await session.execute(stmt)).scalar()
    return row_of(r) if r is not None else None


async def save_state(session: AsyncSession, key: ServerKey, spawn_id: str, *, me: str, state: dict[str, Any]) -> None:
    """Record the backend state as soon as a process exists, so another worker can find it."""
    await session.execute(
        update(ServerState)
        .where(_key(key), ServerState.spawn_id == spawn_id, ServerState.worker_id == me)
        .values(state=state, updated=func.now())
    )


async def renew(session: AsyncSession, me: str, ttl: float) -> int:
    """Extend every lease I hold; returns how many."""
    r = await session.execute(
        update(ServerState)
        .where(ServerState.worker_id == me, ServerState.status.in_(ACTIVE))
        .values(lease_expires=_lease(ttl))
    )
    return int(r.rowcount or 0)  # type: ignore[attr-defined]


async def adopt_expired(session: AsyncSession, me: str, ttl: float, limit: int = 50) -> list[Row]:
    """Take over rows whose lease expired (their worker died); never the same row as another worker."""
    expired = (
        select(ServerState.user_name, ServerState.server_name)
        .where(ServerState.status.in_(ACTIVE), ServerState.lease_expires < func.now())
        .limit(limit)
        .with_for_update(skip_locked=True)
        .subquery()
    )
    stmt = (
        update(ServerState)
        .where(ServerState.user_name == expired.c.user_name, ServerState.server_name == expired.c.server_name)
        .values(worker_id=me, lease_expires=_lease(ttl), updated=func.now())
        .returning(ServerState)
    )
    return [row_of(r) for r in (await session.execute(stmt)).scalars().all()]


async def owned_running(session: AsyncSession, me: str) -> list[Row]:
    """Running servers whose lease I hold."""
    rows = await session.execute(select(ServerState).where(ServerState.worker_id == me,
                                                           ServerState.status == ServerStatus.RUNNING))
    return [row_of(r) for r in rows.scalars().all()]
