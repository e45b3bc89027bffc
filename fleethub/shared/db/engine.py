"""Async engines and sessions, created by a service's lifespan (never at import time)."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

CONNECT_TIMEOUT = 5.0
POOL_TIMEOUT = 10.0
HANDLER_POOL_KEPT = 10  # connections a `handler_pool` keeps open
HANDLER_POOL_MOST = 40  # and at most, as the api's pool (PostgreSQL's default max_connections is 100)
HANDLER_POOL_LOOPS = 6  # a spawner's renew, fence, adopt, poll and reconcile loops and outbox relay


def handler_pool(handlers: int, *, loops: int = HANDLER_POOL_LOOPS) -> tuple[int, int]:
    """`(pool_size, max_overflow)` for a service that runs `handlers` tasks at once, each holding at most one
    connection, and `loops` background loops: a connection for each, up to `HANDLER_POOL_MOST`.

    The spawner's: its lease statements must answer within half a lease; queued behind 64 command handlers
    for 20 connections, renewals failed in a storm and spawns were abandoned to adopters.
    """
    wanted = handlers + loops
    return HANDLER_POOL_KEPT, max(HANDLER_POOL_KEPT, min(wanted, HANDLER_POOL_MOST) - HANDLER_POOL_KEPT)


def make_engine(url: str, *, pool_size: int = 10, max_overflow: int | None = None) -> AsyncEngine:
    """An asyncpg engine for `url` (SQLAlchemy form, postgresql+asyncpg://…).

    No ping on checkout: it cost three round trips (BEGIN, SELECT 1, ROLLBACK) per request. A
    connection found dead on use makes SQLAlchemy invalidate every connection of the pool opened before
    it (PostgreSQL restarted: they are all dead), and that one request gets a 503 asking for a retry
    (`fleethub.shared.http.CommonHeaders`); the next checkout opens a fresh connection, so the pool recovers
    without a restart of the service. Connections are also recycled every 10 minutes.

    Bounded waits, so that a request answers 503 in seconds while PostgreSQL is away rather than hanging:
    opening a connection gives up after `CONNECT_TIMEOUT` (asyncpg's default is 60 s; a refused
    connection fails at once anyway), waiting for a free pooled connection after `POOL_TIMEOUT`.

    `pool_size` connections are kept open once opened, up to `max_overflow` (default: `pool_size`) more are
    opened while they are all in use.
    """
    return create_async_engine(url, pool_size=pool_size,
                               max_overflow=pool_size if max_overflow is None else max_overflow, pool_recycle=600,
                               pool_timeout=POOL_TIMEOUT, connect_args={"timeout": CONNECT_TIMEOUT})


def make_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions that keep loaded objects usable after commit."""
    return async_sessionmaker(engine, expire_on_commit=False)
