"""The `server_states` table: reads, leases and adoption, each one SQL statement.

Status changes go through `fleethub.shared.lifecycle.transition`. Every write by a worker is conditioned
on that worker holding the lease (or on the lease having expired), so two workers never act on one
server at once (invariant 2). Whether a lease is live is decided by PostgreSQL's clock (`now()`), never by
a worker's: a worker whose clock is wrong neither adopts live leases nor keeps expired ones.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, func, or_, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncSession

from fleethub.shared.db.models import Server, ServerState, User
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
    backend: str = ""

    @property
    def key(self) -> ServerKey:
        """Which server the row is about."""
        return ServerKey(self.user, self.server_name)


def _live() -> ColumnElement[bool]:
    """Whether a row's lease is live, by PostgreSQL's clock."""
    return func.coalesce(ServerState.lease_expires > func.now(), False).label("lease_live")


def row_of(r: ServerState, *, live: bool) -> Row:
    """The snapshot of an ORM row, `live` telling whether its lease is (as PostgreSQL judged it)."""
    return Row(r.user_name, r.server_name, r.spawn_id, ServerStatus(r.status), dict(r.state or {}), r.worker_id,
               bool(live), r.url, r.target, r.backend)


def _key(key: ServerKey) -> Any:
    return and_(ServerState.user_name == key.user, ServerState.server_name == key.server_name)


def _lease(ttl: float) -> Any:
    return func.now() + timedelta(seconds=ttl)


async def get(session: AsyncSession, key: ServerKey) -> Row | None:
    """The current row, if any."""
    found = (await session.execute(select(ServerState, _live()).where(_key(key)))).first()
    return row_of(found[0], live=found[1]) if found is not None else None


async def is_desired(session: AsyncSession, key: ServerKey, spawn_id: str) -> bool:
    """Whether `spawn_id` is the spawn the api wants running for this server (the `servers` row).

    A spawn command can outlive its request: the server was stopped, removed and recreated, renamed,
    or its user deleted, before a worker took the command. Such a spawn must not start an orphan.
    """
    stmt = (select(Server.id).join(User, User.id == Server.user_id)
            .where(User.name == key.user, Server.name == key.server_name, Server.spawn_id == spawn_id,
                   Server.desired == DesiredState.RUNNING))
    return (await session.execute(stmt)).first() is not None


async def requested_options(session: AsyncSession, key: ServerKey, spawn_id: str) -> dict[str, Any] | None:
    """The user options of `spawn_id` if it is still the spawn the api wants running (else None): what a
    worker that finishes another's spawn starts it with."""
    stmt = (select(Server.user_options).join(User, User.id == Server.user_id)
            .where(User.name == key.user, Server.name == key.server_name, Server.spawn_id == spawn_id,
                   Server.desired == DesiredState.RUNNING))
    found = (await session.execute(stmt)).first()
    return dict(found[0] or {}) if found is not None else None


async def hold(session: AsyncSession, key: ServerKey, spawn_id: str, *, me: str, ttl: float) -> bool:
    """Whether I still hold the live lease of `spawn_id` (by PostgreSQL's clock), renewing it if so.

    The fence before every action outside the database (start, stop, route): a worker whose lease may
    have been adopted by another must not act on the server any more.
    """
    stmt = (
        update(ServerState)
        .where(_key(key), ServerState.spawn_id == spawn_id, ServerState.worker_id == me,
               ServerState.status.in_(ACTIVE), ServerState.lease_expires > func.now())
        .values(lease_expires=_lease(ttl))
        .returning(ServerState.spawn_id)
    )
    return (await session.execute(stmt)).first() is not None


async def save_state(session: AsyncSession, key: ServerKey, spawn_id: str, *, me: str, ttl: float,
                     state: dict[str, Any]) -> bool:
    """Record the backend state (the planned identity before the server is created, then what start
    returned), so another worker can find the server; only under my live lease, which it renews.
    Returns whether it was recorded."""
    stmt = (
        update(ServerState)
        .where(_key(key), ServerState.spawn_id == spawn_id, ServerState.worker_id == me,
               ServerState.status == ServerStatus.PENDING, ServerState.lease_expires > func.now())
        .values(state=state, lease_expires=_lease(ttl), updated=func.now())
        .returning(ServerState.spawn_id)
    )
    return (await session.execute(stmt)).first() is not None


async def take_pending(session: AsyncSession, key: ServerKey, spawn_id: str, *, me: str, ttl: float) -> Row | None:
    """Take the lease of `spawn_id` while it is pending and its lease expired or is mine (the caller makes sure
    no task of its own is on it): the row as it now is, or None if a live worker holds it or it moved on."""
    stmt = (
        update(ServerState)
        .where(_key(key), ServerState.spawn_id == spawn_id, ServerState.status == ServerStatus.PENDING,
               or_(ServerState.worker_id == me, ServerState.lease_expires < func.now()))
        .values(worker_id=me, lease_expires=_lease(ttl), updated=func.now())
        .returning(ServerState)
    )
    r = (await session.execute(stmt)).scalar()
    return row_of(r, live=True) if r is not None else None


async def release(session: AsyncSession, key: ServerKey, spawn_id: str, *, me: str) -> None:
    """Let my lease of `spawn_id` expire now (a worker that cannot finish it hands it to an adopter)."""
    await session.execute(
        update(ServerState)
        .where(_key(key), ServerState.spawn_id == spawn_id, ServerState.worker_id == me)
        .values(lease_expires=func.now() - timedelta(seconds=1))
    )


async def renew(session: AsyncSession, me: str, ttl: float, working: Collection[ServerKey]) -> int:
    """Extend the live leases I hold: of the running servers I watch, and of the spawns and stops I am
    `working` on. Never an expired lease (another worker may be adopting it), and never a pending or
    stopping row nobody here works on any more (abandoned: it must expire, so that another worker finishes
    it). Returns how many."""
    mine = ServerState.status == ServerStatus.RUNNING
    if working:
        keys = [(k.user, k.server_name) for k in working]
        mine = or_(mine, tuple_(ServerState.user_name, ServerState.server_name).in_(keys))
    r = await session.execute(
        update(ServerState)
        .where(ServerState.worker_id == me, ServerState.status.in_(ACTIVE), ServerState.lease_expires > func.now(),
               mine)
        .values(lease_expires=_lease(ttl))
    )
    return int(r.rowcount or 0)  # type: ignore[attr-defined]


def _not_in(skip: Collection[ServerKey]) -> Any:
    return tuple_(ServerState.user_name, ServerState.server_name).not_in([(k.user, k.server_name) for k in skip])


async def next_expiry(session: AsyncSession, backends: Collection[str],
                      skip: Collection[ServerKey] = ()) -> float | None:
    """Seconds until the first lease of an active row of `backends` expires (by PostgreSQL's clock; ≤ 0: one
    has), leaving out the rows of `skip`; None when no such row holds a lease."""
    conditions = [ServerState.status.in_(ACTIVE), ServerState.lease_expires.is_not(None),
                  ServerState.backend.in_(list(backends))]
    if skip:
        conditions.append(_not_in(skip))
    left = func.extract("epoch", func.min(ServerState.lease_expires) - func.now())
    value = (await session.execute(select(left).where(*conditions))).scalar()
    return None if value is None else float(value)


async def adopt_expired(session: AsyncSession, me: str, ttl: float, backends: Collection[str], limit: int = 50,
                        skip: Collection[ServerKey] = ()) -> list[Row]:
    """Take over rows of `backends` whose lease expired (their worker died); never the same row as another
    worker, nor the rows of `skip` (spawns this worker handed over: it can not finish them itself)."""
    conditions = [ServerState.status.in_(ACTIVE), ServerState.lease_expires < func.now(),
                  ServerState.backend.in_(list(backends))]
    if skip:
        conditions.append(_not_in(skip))
    expired = (
        select(ServerState.user_name, ServerState.server_name)
        .where(*conditions)
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
    return [row_of(r, live=True) for r in (await session.execute(stmt)).scalars().all()]


async def owned_running(session: AsyncSession, me: str) -> list[Row]:
    """Running servers whose lease I hold."""
    rows = await session.execute(select(ServerState, _live()).where(ServerState.worker_id == me,
                                                                    ServerState.status == ServerStatus.RUNNING))
    return [row_of(r, live=live) for r, live in rows.all()]
