"""Every PostgreSQL advisory lock fleethub takes: one key per lock, in one numbering scheme, and how to take it.

Keys are `0x6668_00NN` ("fh" then a number), so they cannot collide with each other and are easy to spot in
`pg_locks`. A transaction-scoped lock (`xact_lock`) ends with its transaction; a session-scoped one
(`try_lock` / `lock` then `unlock`) is held by a connection until released or until the connection closes,
which is what a lock held by a process that may die needs.
"""

from __future__ import annotations

import enum

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession


class AdvisoryLock(enum.IntEnum):
    """The advisory-lock keys, one per thing serialised across processes."""

    MIGRATE = 0x6668_0000  # `fleethub migrate`: concurrent runs (compose may start several) one at a time
    CONFIG_SYNC = 0x6668_0001  # the api's sync of configured roles, services and admins
    SPAWN_LIMITS = 0x6668_0002  # hub-wide limit checks: one start at a time
    ROUTE_RECONCILE = 0x6668_0003  # one reconciliation of the route table at a time, across workers and api replicas
    MANAGED_SERVICES = 0x6668_0004  # the one spawner worker that runs the managed services


async def xact_lock(session: AsyncSession | AsyncConnection, key: AdvisoryLock) -> None:
    """Wait for `key` and hold it until the caller's transaction ends."""
    await session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": int(key)})


async def try_lock(conn: AsyncConnection, key: AdvisoryLock) -> bool:
    """Take `key` for this connection's session if nobody holds it; True if taken."""
    return bool((await conn.execute(text("SELECT pg_try_advisory_lock(:key)"), {"key": int(key)})).scalar())


async def lock(conn: AsyncConnection, key: AdvisoryLock) -> None:
    """Wait for `key` and hold it for this connection's session (release with `unlock`)."""
    await conn.execute(text("SELECT pg_advisory_lock(:key)"), {"key": int(key)})


async def unlock(conn: AsyncConnection, key: AdvisoryLock) -> None:
    """Release a session-scoped `key` this connection holds."""
    await conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": int(key)})
