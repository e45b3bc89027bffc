"""The `server_states` table: claims, leases, adoption and terminal transitions, each one SQL statement.

Every write by a worker is conditioned on that worker holding the lease (or on the lease having
expired), so two workers never act on one server at once (invariant 2).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from fleethub.shared.db.models import Server, ServerState, User
from fleethub.shared.events import utcnow

ACTIVE = ("pending", "running", "stopping")
DONE = ("stopped", "failed")


@dataclass(frozen=True)
class Row:
    """A snapshot of one `server_states` row."""

    user: str
    server_name: str
    spawn_id: str
    status: str
    state: dict[str, Any]
    worker_id: str | None
    lease_live: bool
    url: str | None
    target: str | None


def _row(r: ServerState) -> Row:
    live = r.lease_expires is not None and r.lease_expires > utcnow()
    return Row(r.user_name, r.server_name, r.spawn_id, r.status, dict(r.state or {}), r.worker_id, live, r.url, r.target)


def _key(user: str, server_name: str) -> Any:
    return and_(ServerState.user_name == user, ServerState.server_name == server_name)


def _lease(ttl: float) -> Any:
    return func.now() + timedelta(seconds=ttl)


async def get(session: AsyncSession, user: str, server_name: str) -> Row | None:
    """The current row, if any."""
    r = (await session.execute(select(ServerState).where(_key(user, server_name)))).scalar()
    return _row(r) if r is not None else None


async def is_desired(session: AsyncSession, user: str, server_name: str, spawn_id: str) -> bool:
    """Whether `spawn_id` is the spawn the api wants running for this server (the `servers` row).

    A spawn command can outlive its request: the server was stopped, removed and recreated, renamed,
    or its user deleted, before a worker took the command. Such a spawn must not start an orphan.
    """
    stmt = (select(Server.id).join(User, User.id == Server.user_id)
            .where(User.name == user, Server.name == server_name, Server.spawn_id == spawn_id,
                   Server.desired == "running"))
    return (await session.execute(stmt)).first() is not None


async def claim_for_spawn(session: AsyncSession, user: str, server_name: str, spawn_id: str, me: str, ttl: float) -> bool:
    """Take the server for a new spawn if it is absent or done with another spawn."""
    stmt = (
        insert(ServerState)
        .values(
            user_name=user, server_name=server_name, spawn_id=spawn_id, status="pending", worker_id=me,
            lease_expires=_lease(ttl), state={}, message="", updated=func.now(),
        )
        .on_conflict_do_update(
            index_elements=["user_name", "server_name"],
            set_={
                "spawn_id": spawn_id, "status": "pending", "worker_id": me, "lease_expires": _lease(ttl),
                "state": {}, "message": "", "url": None, "target": None, "started": None, "stopped": None,
                "updated": func.now(),
            },
            where=and_(ServerState.status.in_(DONE), ServerState.spawn_id != spawn_id),
        )
        .returning(ServerState.spawn_id)
    )
    return (await session.execute(stmt)).scalar() is not None


async def take_over(session: AsyncSession, user: str, server_name: str, spawn_id: str, me: str, ttl: float,
                    statuses: tuple[str, ...]) -> Row | None:
    """Take the lease of `spawn_id` if it is in `statuses` and its lease expired (or is mine)."""
    stmt = (
        update(ServerState)
        .where(
            _key(user, server_name), ServerState.spawn_id == spawn_id, ServerState.status.in_(statuses),
            or_(ServerState.worker_id == me, ServerState.lease_expires < func.now()),
        )
        .values(worker_id=me, lease_expires=_lease(ttl), updated=func.now())
        .returning(ServerState)
    )
    r = (await session.execute(stmt)).scalar()
    return _row(r) if r is not None else None


async def begin_stop(session: AsyncSession, user: str, server_name: str, spawn_id: str, me: str, ttl: float) -> Row | None:
    """Mark the server `stopping` under my lease: allowed if running, or if the lease is mine or expired."""
    stmt = (
        update(ServerState)
        .where(
            _key(user, server_name), ServerState.spawn_id == spawn_id, ServerState.status.in_(ACTIVE),
            or_(ServerState.status == "running", ServerState.worker_id == me, ServerState.lease_expires < func.now()),
        )
        .values(status="stopping", worker_id=me, lease_expires=_lease(ttl), updated=func.now())
        .returning(ServerState)
    )
    r = (await session.execute(stmt)).scalar()
    return _row(r) if r is not None else None


async def tombstone(session: AsyncSession, user: str, server_name: str, spawn_id: str) -> None:
    """Record that `spawn_id` is stopped before it ever started, so its late spawn command is refused."""
    stmt = (
        insert(ServerState)
        .values(user_name=user, server_name=server_name, spawn_id=spawn_id, status="stopped", state={},
                message="stopped before start", stopped=func.now(), updated=func.now())
        .on_conflict_do_update(
            index_elements=["user_name", "server_name"],
            set_={"spawn_id": spawn_id, "status": "stopped", "worker_id": None, "lease_expires": None,
                  "message": "stopped before start", "stopped": func.now(), "updated": func.now()},
            where=ServerState.status.in_(DONE),
        )
    )
    await session.execute(stmt)


async def save_state(session: AsyncSession, user: str, server_name: str, spawn_id: str, me: str,
                     state: dict[str, Any]) -> None:
    """Record the backend state as soon as a process exists, so another worker can find it."""
    await session.execute(
        update(ServerState)
        .where(_key(user, server_name), ServerState.spawn_id == spawn_id, ServerState.worker_id == me)
        .values(state=state, updated=func.now())
    )


async def mark_running(session: AsyncSession, user: str, server_name: str, spawn_id: str, me: str,
                       url: str, target: str, state: dict[str, Any]) -> bool:
    """pending → running (only while I hold the lease)."""
    r = await session.execute(
        update(ServerState)
        .where(_key(user, server_name), ServerState.spawn_id == spawn_id, ServerState.worker_id == me,
               ServerState.status == "pending")
        .values(status="running", url=url, target=target, state=state, started=func.now(), updated=func.now())
        .returning(ServerState.spawn_id)
    )
    return r.scalar() is not None


async def mark_done(session: AsyncSession, user: str, server_name: str, spawn_id: str, me: str, status: str,
                    message: str, from_statuses: tuple[str, ...] = ACTIVE) -> bool:
    """→ stopped or failed (only while I hold the lease); releases the lease."""
    r = await session.execute(
        update(ServerState)
        .where(_key(user, server_name), ServerState.spawn_id == spawn_id, ServerState.worker_id == me,
               ServerState.status.in_(from_statuses))
        .values(status=status, message=message[:2000], stopped=func.now(), worker_id=None, lease_expires=None,
                url=None, target=None, updated=func.now())
        .returning(ServerState.spawn_id)
    )
    return r.scalar() is not None


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
    return [_row(r) for r in (await session.execute(stmt)).scalars().all()]


async def owned_running(session: AsyncSession, me: str) -> list[Row]:
    """Running servers whose lease I hold."""
    rows = await session.execute(select(ServerState).where(ServerState.worker_id == me, ServerState.status == "running"))
    return [_row(r) for r in rows.scalars().all()]


async def all_running(session: AsyncSession) -> list[Row]:
    """Every running server (for route reconciliation)."""
    rows = await session.execute(select(ServerState).where(ServerState.status == "running"))
    return [_row(r) for r in rows.scalars().all()]
